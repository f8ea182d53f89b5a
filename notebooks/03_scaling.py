# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Scaling: why divide by $\sqrt{d_k}$
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}}\right) V$$
#
# **You will be able to**
# 1. show numerically that the score $q \cdot k$ of random vectors has a variance that grows in
#    proportion to their width $d_k$;
# 2. see and measure the softmax **saturating** (all weight on one key) when scores are large;
# 3. measure how the softmax's **gradient vanishes** when it saturates, which stalls learning;
# 4. compute scaled scores and check them against PyTorch's attention.
#
# **Builds on:** [lesson 02](02_queries_keys_values.ipynb) (scores $S = Q K^\top$) and the
# softmax of [lesson 01](01_intuition.ipynb).

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from attention_course import attention_scores, scaled_attention_scores, scaled_dot_product_attention, softmax
from attention_course.softmax import entropy
from attention_course.teaching.widgets import scaling_explorer

_ = torch.manual_seed(0)  # every random number below is the same on every run

# %% [markdown]
# ## 1. Intuition: a dot product is a sum of $d_k$ terms
#
# $q \cdot k = q_1 k_1 + q_2 k_2 + \dots + q_{d_k} k_{d_k}$. Before training, the entries of
# queries and keys are roughly independent, with mean 0 and some variance $\sigma^2$. We take
# $\sigma^2 = 1$ to keep the arithmetic simple (section 5 measures what PyTorch's layers really
# give: about 1/3; nothing below changes but a constant factor). Each term $q_c k_c$ is
# then a small random number, and adding up more of them gives a wider spread, just like the total
# of many coin flips spreads wider than one. Wider vectors give bigger scores, whether or not the
# query and key actually match.
#
# Four queries and keys of width 4 and of width 1024:

# %%
for d_k in (4, 1024):
    q, k = torch.randn(4, d_k), torch.randn(4, d_k)
    print(f"d_k = {d_k:>4}: scores of 4 random pairs {[round(s, 1) for s in (q * k).sum(-1).tolist()]}")

# %% [markdown]
# ## 2. The variance grows like $d_k$
#
# For independent $q_c, k_c$ with mean 0 and variance 1, $\mathbb{E}[q_c k_c] = 0$ and
# $\mathrm{Var}(q_c k_c) = \mathbb{E}[q_c^2]\,\mathbb{E}[k_c^2] = 1$. Variances of independent terms add, so
#
# $$\mathrm{Var}(q \cdot k) = \sum_{c=1}^{d_k} \mathrm{Var}(q_c k_c) = d_k,
#   \qquad \mathrm{Var}\!\left(\frac{q \cdot k}{\sqrt{d_k}}\right) = \frac{d_k}{d_k} = 1.$$
#
# Measured on 20 000 random pairs per width:

# %%
widths = [1, 4, 16, 64, 256, 1024]
n_pairs = 20_000
variances = {}
for d_k in widths:
    q, k = torch.randn(n_pairs, d_k), torch.randn(n_pairs, d_k)
    dots = (q * k).sum(dim=-1)  # (n_pairs,): one score per pair
    variances[d_k] = (float(dots.var()), float((dots / math.sqrt(d_k)).var()))
print(f"{'d_k':>6} {'Var(q·k)':>10} {'Var / d_k':>10} {'Var(q·k / √d_k)':>16}")
for d_k, (raw, scaled) in variances.items():
    print(f"{d_k:>6} {raw:>10.1f} {raw / d_k:>10.2f} {scaled:>16.2f}")

# %%
figure, ax = plt.subplots(figsize=(6, 4))
ax.loglog(widths, [variances[d][0] for d in widths], "o-", label="Var(q·k), measured")
ax.loglog(widths, widths, "k:", label="d_k (the formula)")
ax.loglog(widths, [variances[d][1] for d in widths], "s-", label="Var(q·k / √d_k), measured")
ax.set_xlabel("d_k (width of queries and keys)")
ax.set_ylabel("variance of the score")
ax.set_title("Raw scores spread in proportion to d_k; scaled ones do not")
ax.legend()
plt.show()

# %% [markdown]
# The ratio Var / $d_k$ stays at 1 (within sampling noise) from $d_k = 1$ to $1024$: the variance
# is linear in $d_k$. Real models use $d_k$ of 64 or 128 per head, so raw scores would have a
# standard deviation of 8 to 11.

# %% [markdown]
# ## 3. Large scores saturate the softmax
#
# The softmax cares about *differences* between scores: $e^{s_1} / e^{s_2} = e^{s_1 - s_2}$. A gap
# of 10 already means a factor $e^{10} \approx 22\,000$. So when the scores spread widely, the top
# key takes nearly all the weight, however slightly it "won". One query over 16 keys:

# %%
d_k, n_keys = 512, 16
q, k = torch.randn(1, d_k), torch.randn(n_keys, d_k)
raw_weights = softmax(attention_scores(q, k))[0]  # (16,)
scaled_weights = softmax(scaled_attention_scores(q, k))[0]  # (16,)
print("three largest weights, raw:   ", [round(w, 3) for w in raw_weights.sort(descending=True).values[:3].tolist()])
print("three largest weights, scaled:", [round(w, 3) for w in scaled_weights.sort(descending=True).values[:3].tolist()])

# %% [markdown]
# Two numbers measure saturation, averaged over many queries:
# - the **largest weight** (1 = all weight on one key; $1/16$ = spread evenly over 16 keys);
# - the **entropy** $-\sum_j w_j \ln w_j$ of the weights (0 = one key; $\ln 16 \approx 2.77$ = even).

# %%
all_widths = [2**p for p in range(11)]  # 1 … 1024
n_queries = 2_000
saturation = {"raw": ([], []), "scaled": ([], [])}  # name -> (mean largest weight, mean entropy)
for d_k in all_widths:
    q, k = torch.randn(n_queries, d_k), torch.randn(n_keys, d_k)
    for name, scores in (("raw", attention_scores(q, k)), ("scaled", scaled_attention_scores(q, k))):
        weights = softmax(scores, dim=-1)  # (n_queries, n_keys)
        saturation[name][0].append(float(weights.amax(dim=-1).mean()))
        saturation[name][1].append(float(entropy(weights).mean()))
print(f"uniform entropy ln 16 = {math.log(n_keys):.2f}")
for name, (largest, spread) in saturation.items():
    print(f"{name:>6}: largest weight {largest[0]:.2f} at d_k=1 → {largest[-1]:.2f} at d_k=1024; "
          f"entropy {spread[0]:.2f} → {spread[-1]:.2f}")

# %%
figure, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
for name, (largest, spread) in saturation.items():
    left.semilogx(all_widths, largest, "o-", base=2, label=name)
    right.semilogx(all_widths, spread, "o-", base=2, label=name)
left.set_title("Largest weight per query (over 16 keys)")
left.set_ylabel("mean largest weight")
right.axhline(math.log(n_keys), color="k", linestyle=":", label="ln 16 (even spread)")
right.set_title("Entropy of each query's weights")
right.set_ylabel("mean entropy (nats)")
for ax in (left, right):
    ax.set_xlabel("d_k")
    ax.legend()
figure.tight_layout()
plt.show()

# %% [markdown]
# Without scaling, the wider the vectors, the closer attention gets to a hard lookup (one key,
# entropy near 0), at random, before the model has learned anything. With scaling the softmax stays
# far from saturated at every width, but it is not quite the same everywhere: the mean largest
# weight still moves, from 0.15 at $d_k = 1$ to 0.24 at $d_k = 1024$ (against 0.96 without
# scaling). Scaling fixes the **variance** of the scores over all queries, not how widely *one*
# query's scores spread over its keys. That spread is $\lVert q \rVert / \sqrt{d_k}$ times a
# unit-variance number: at $d_k = 1$ it is $|q_1|$, which differs a lot from query to query and is
# often small (a flatter softmax); at large $d_k$ it is close to 1 for every query. Measured:

# %%
for d_k in (1, 4, 64, 1024):
    q, k = torch.randn(n_queries, d_k), torch.randn(n_keys, d_k)
    spread = scaled_attention_scores(q, k).std(dim=-1)  # (n_queries,): spread of each query's 16 scores
    at = all_widths.index(d_k)
    print(f"d_k = {d_k:>4}: spread of one query's scaled scores {float(spread.mean()):.2f} ± {float(spread.std()):.2f} "
          f"(over queries); mean largest weight {saturation['scaled'][0][at]:.2f}")

# %% [markdown]
# The mean spread is about 1 at every width: that is what the scaling fixes. What shrinks with the
# width is how much the spread varies from query to query (± 0.76 at $d_k = 1$, ± 0.2 from
# $d_k = 64$ on, where what remains is mostly the noise of measuring a spread from 16 scores). The
# largest weight moves between $d_k = 1$ and $4$ and then stays near 0.24, including at the widths
# real heads use (64, 128).

# %% [markdown]
# ## 4. A saturated softmax stops learning
#
# Training adjusts $W_Q$ and $W_K$ through the gradient of the loss with respect to the scores.
# For $w = \mathrm{softmax}(s)$, the derivative of weight $i$ with respect to score $j$ is
#
# $$\frac{\partial w_i}{\partial s_j} = w_i(\delta_{ij} - w_j),$$
#
# which is 0 everywhere when $w$ is one-hot ($w_i$ is 0, or $1 - w_j$ is 0). A saturated softmax
# passes back almost no gradient: the scores, and so $W_Q$ and $W_K$, stop changing. We measure
# the gradient's size with autograd, for a random downstream signal `upstream`:

# %%
def score_gradient_norms(scores: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """Per query, the norm of d(sum(softmax(scores) * upstream)) / d scores. Both (n, S) → (n,)."""
    scores = scores.detach().requires_grad_(True)
    (softmax(scores, dim=-1) * upstream).sum().backward()
    return scores.grad.norm(dim=-1)


gradients = {"raw": [], "scaled": []}  # name -> median gradient norm per d_k
stalled = {}  # name -> fraction of queries with gradient norm below 0.01, at d_k = 1024
for d_k in all_widths:
    q, k = torch.randn(n_queries, d_k), torch.randn(n_keys, d_k)
    upstream = torch.randn(n_queries, n_keys)
    for name, scores in (("raw", attention_scores(q, k)), ("scaled", scaled_attention_scores(q, k))):
        norms = score_gradient_norms(scores, upstream)  # (n_queries,)
        gradients[name].append(float(norms.median()))
        stalled[name] = float((norms < 0.01).float().mean())
for name, medians in gradients.items():
    print(f"{name:>6}: median gradient norm {medians[0]:.2g} at d_k=1 → {medians[-1]:.2g} at d_k=1024; "
          f"{stalled[name]:.0%} of queries below 0.01 at d_k=1024")
print(f"at d_k=1024 the typical query gets {gradients['scaled'][-1] / gradients['raw'][-1]:,.0f}× less gradient without scaling")

# %%
figure, ax = plt.subplots(figsize=(6, 4))
for name, medians in gradients.items():
    ax.loglog(all_widths, medians, "o-", base=2, label=name)
ax.set_xlabel("d_k")
ax.set_ylabel("median ‖∂loss/∂scores‖ over queries")
ax.set_title("The gradient through the softmax vanishes without scaling")
ax.legend()
plt.show()

# %% [markdown]
# With scaling, the typical query gets the same gradient at every width. Without it, the typical
# query at $d_k = 1024$ gets a gradient over a thousand times smaller, and most queries almost none.

# %% [markdown]
# ## 5. Why $\sqrt{d_k}$, and not $d_k$?
#
# Dividing by $\sqrt{d_k}$ brings the variance back to exactly 1. Dividing by $d_k$ overshoots:
# the variance becomes $d_k / d_k^2 = 1/d_k$, every score lands near 0, and the softmax spreads
# evenly over all keys, which is no attention at all:

# %%
d_k = 1024
q, k = torch.randn(n_queries, d_k), torch.randn(n_keys, d_k)
for label, divisor in (("√d_k", math.sqrt(d_k)), ("d_k", d_k)):
    weights = softmax(attention_scores(q, k) / divisor, dim=-1)
    print(f"divide by {label:>4}: entropy {float(entropy(weights).mean()):.3f} (even spread: {math.log(n_keys):.3f}), "
          f"largest weight {float(weights.amax(dim=-1).mean()):.3f} (even spread: {1 / n_keys:.3f})")

# %% [markdown]
# ## 5b. What PyTorch's layers really give at initialisation
#
# The analysis assumed queries and keys with unit-variance entries. A default
# `nn.Linear(d_model, d_k)` draws its weights uniformly from $\pm 1/\sqrt{d_\text{model}}$, a
# variance of $1 / (3 d_\text{model})$; a unit-variance input summed over $d_\text{model}$ entries
# then gives entries of variance about $1/3$, and scores of variance about
# $d_k \cdot (1/3)^2 = d_k / 9$. Not 1, but still **in proportion to $d_k$**, and that is all the
# argument needs: dividing by $\sqrt{d_k}$ makes the variance the same at every width (about
# $1/9$ here). Measured, with inputs of unit variance (what layer normalisation hands over):

# %%
d_model, n_tokens = 256, 4_000
inputs = torch.randn(2, n_tokens, d_model)  # two independent sets of tokens: queries from one, keys from the other
print(f"{'d_k':>6} {'Var(q entry)':>13} {'Var(q·k)':>9} {'Var / d_k':>10} {'Var(q·k / √d_k)':>16}")
with torch.no_grad():
    for d_k in (16, 64, 256, 1024):
        to_q, to_k = torch.nn.Linear(d_model, d_k), torch.nn.Linear(d_model, d_k)  # PyTorch's default initialisation
        q, k = to_q(inputs[0]), to_k(inputs[1])  # (n_tokens, d_k) each
        dots = (q * k).sum(dim=-1)  # (n_tokens,)
        print(f"{d_k:>6} {float(q.var()):>13.3f} {float(dots.var()):>9.1f} {float(dots.var()) / d_k:>10.3f} "
              f"{float((dots / math.sqrt(d_k)).var()):>16.3f}")

# %% [markdown]
# Entries of variance about 1/3 (not 1), score variance about $d_k/9$: the ratio Var / $d_k$ is
# the same at every width, so the scores still grow in proportion to $d_k$, and $1/\sqrt{d_k}$
# still makes them width-independent. (Real models also differ in how they initialise, and
# training then moves the scores wherever they need to be; the scaling makes sure training
# *starts* from a softmax whose saturation does not depend on the width.)

# %% [markdown]
# ## 6. In code
#
# `scaled_attention_scores(q, k)` is `attention_scores(q, k) / sqrt(d_k)`, where $d_k$ is the
# **last** axis of `q` and `k`: with batch and head axes in front, `q.shape[-1]`.

# %%
q, k, v = torch.randn(2, 5, 64), torch.randn(2, 7, 64), torch.randn(2, 7, 32)  # (B, L, d_k), (B, S, d_k), (B, S, d_v)
scaled = scaled_attention_scores(q, k)  # (2, 5, 7)
print("shape:", tuple(scaled.shape), " equals raw / 8:", torch.allclose(scaled, attention_scores(q, k) / 8))

# %% [markdown]
# PyTorch's `torch.nn.functional.scaled_dot_product_attention` uses the same default, $1/\sqrt{d_k}$;
# the course's full attention agrees with it:

# %%
ours = scaled_dot_product_attention(q, k, v)  # (2, 5, 32)
theirs = F.scaled_dot_product_attention(q, k, v)
# float32 rounding in a different order of operations: agreement to about 1e-6 is all we can ask.
print("matches PyTorch (to 1e-5):", torch.allclose(ours, theirs, atol=1e-5))

# %% [markdown]
# ## 7. Experiment: slide $d_k$
#
# Move the slider. Left: how the raw and the scaled scores are distributed. Right: how saturated
# each softmax is (largest weight near 1 and entropy near 0 = saturated; largest weight near
# 1/16 and entropy near its maximum = spread out).

# %%
# NBVAL_IGNORE_OUTPUT
scaling_explorer()

# %% [markdown]
# ## Your turn
#
# Open [the exercise notebook](../exercises/03_scaling.ipynb) and write `scaled_attention_scores`.
# Its check cell catches the usual slips: dividing by $d_k$ instead of $\sqrt{d_k}$, taking $d_k$
# from the wrong axis, and mishandling an explicit `scale`.

# %% [markdown]
# ## Summary
#
# - The score of random unit-variance vectors has variance $d_k$ (measured: Var / $d_k \approx 1$
#   from $d_k = 1$ to $1024$).
# - Large scores saturate the softmax: at $d_k = 1024$ over 16 keys, the top key takes almost all
#   the weight, and most queries pass back almost no gradient.
# - Dividing by $\sqrt{d_k}$ makes the score variance the same at every width (1 for unit-variance
#   entries; about 1/9 with PyTorch's default `nn.Linear`, whose outputs have variance about 1/3);
#   dividing by $d_k$ flattens the softmax instead. Scaled, the largest weight still moves a little
#   at tiny widths (0.15 → 0.24 from $d_k = 1$ to 1024), because one query's spread varies there.
#
# **Next:** [lesson 04](04_softmax.ipynb) opens up the softmax itself: temperature, and why the
# textbook formula overflows in float16 and how to fix it.
