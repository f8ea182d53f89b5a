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
# # 04 · Softmax: from scores to weights, without overflow
#
# $$\mathrm{softmax}(s)_j = \frac{e^{s_j}}{\sum_{j'} e^{s_{j'}}}$$
#
# **You will be able to**
# 1. list the softmax's properties (positive, sums to 1, keeps the order, ignores a shift of all
#    scores) and check them in code;
# 2. sharpen or flatten the weights with a **temperature**;
# 3. say at which score the textbook formula overflows in float32 (about 88.7) and float16 (about
#    11.1), and fix it by subtracting the maximum;
# 4. compute the **log-sum-exp** without overflow and use it to write the softmax.
#
# **Builds on:** the softmax as "scores to percentages" of [lesson 01](01_intuition.ipynb), and
# the size of scores from [lesson 03](03_scaling.ipynb).

# %%
import math

import matplotlib.pyplot as plt
import torch

from attention_course import attention_scores, logsumexp, naive_softmax, scaled_attention_scores, softmax
from attention_course.teaching.sentences import tiger_sentence
from attention_course.teaching.plotting import plot_weights_bar
from attention_course.softmax import entropy
from attention_course.teaching.widgets import temperature_explorer

_ = torch.manual_seed(0)  # every random number below is the same on every run

# %% [markdown]
# ## 1. Scores in, weights out
#
# Our running example: lesson 01's "it" (knowing that it was thirsty), scored against five words
# of the tiger sentence.

# %%
sentence = tiger_sentence()
it_thirsty = sentence.vector("it") + sentence.vector("thirsty")  # (6,)
tokens = ["tiger", "drink", "thirsty", "tree", "because"]
scores = torch.stack([sentence.vector(t) @ it_thirsty for t in tokens])  # (5,)
weights = softmax(scores)  # (5,)
for token, score, weight in zip(tokens, scores.tolist(), weights.tolist()):
    print(f"{token:>8}: score {score:4.1f} → weight {weight:.3f}")

# %% [markdown]
# Two steps: $e^{s_j}$ makes every score positive (and stretches the gaps: a score 1 higher is
# $e \approx 2.7$ times heavier); dividing by the sum makes the weights add up to 1. What follows
# from that, checked:

# %%
print("all positive:       ", bool((weights > 0).all()))
print("sum to 1:           ", round(float(weights.sum()), 6))
print("same order:         ", torch.equal(scores.argsort(), weights.argsort()))
print("shift by +100 same: ", torch.allclose(softmax(scores + 100.0), weights))
print("doubling same:      ", torch.allclose(softmax(2 * scores), weights))

# %% [markdown]
# Adding the same number $c$ to every score changes nothing, because the factor $e^{c}$ appears in
# numerator and denominator and cancels:
#
# $$\frac{e^{s_j + c}}{\sum_{j'} e^{s_{j'} + c}} = \frac{e^{c}\, e^{s_j}}{e^{c} \sum_{j'} e^{s_{j'}}}
#   = \mathrm{softmax}(s)_j .$$
#
# Multiplying the scores, however, *does* change the weights. That is the temperature.

# %% [markdown]
# ## 2. Temperature
#
# Dividing the scores by a temperature $T > 0$ before the softmax,
# $\mathrm{softmax}(s / T)$, sharpens the weights when $T < 1$ and flattens them when $T > 1$. In
# the limits: $T \to 0$ puts all the weight on the top score (a hard arg-max), $T \to \infty$
# spreads it evenly.

# %%
print(f"{'T':>6} {'largest weight':>15} {'entropy (nats)':>15}")
for temperature in (0.1, 0.5, 1.0, 2.0, 10.0, 100.0):
    w = softmax(scores, temperature=temperature)
    print(f"{temperature:>6} {float(w.max()):>15.3f} {float(entropy(w)):>15.3f}")
print(f"{'':>6} {'even: ' + format(1 / len(tokens), '.3f'):>15} {'max: ' + format(math.log(len(tokens)), '.3f'):>15}")

# %%
figure, axes = plt.subplots(1, 3, figsize=(13, 3.2), sharey=True)
for ax, temperature in zip(axes, (0.25, 1.0, 4.0)):
    plot_weights_bar(softmax(scores, temperature=temperature), tokens, ax=ax, title=f"T = {temperature}")
figure.tight_layout()
plt.show()

# %% [markdown]
# You have met a temperature already: dividing scores by $\sqrt{d_k}$ (lesson 03) *is* a softmax at
# temperature $\sqrt{d_k}$. Language models use the same knob when they sample the next word
# ("temperature 0.7").

# %%
q, k = torch.randn(3, 64), torch.randn(8, 64)
print("softmax(QKᵀ/√d_k) == softmax(QKᵀ, T=√d_k):",
      torch.allclose(softmax(scaled_attention_scores(q, k)), softmax(attention_scores(q, k), temperature=8.0)))

# %% [markdown]
# ## 3. The textbook formula overflows
#
# $e^{s}$ grows fast, and floating-point numbers have a largest value. Once $e^{s}$ passes it, the
# result is `inf`, and `inf / inf` is `NaN`. The largest score whose exponential still fits is
# $\ln(\text{largest float})$:

# %%
for dtype in (torch.float32, torch.float16):
    largest = torch.finfo(dtype).max
    print(f"{str(dtype):>14}: largest value {largest:.6g}, so e^s overflows for s > ln(largest) = {math.log(largest):.2f}")

# %%
for dtype, below, above in ((torch.float32, 88.0, 89.0), (torch.float16, 11.0, 11.2)):
    low, high = (float(torch.exp(torch.tensor(s, dtype=dtype))) for s in (below, above))
    print(f"{str(dtype):>14}: e^{below} = {low:.6g}, e^{above} = {high}")

# %% [markdown]
# `naive_softmax` is the formula exactly as written. Feed it the scores $[s, 0]$ and raise $s$
# until the result stops being numbers:

# %%
def first_nan_score(dtype: torch.dtype, step: float = 0.01) -> float:
    """The smallest s on a grid of ``step`` where naive_softmax([s, 0]) contains NaN."""
    grid = torch.arange(0.0, 100.0, step)  # (n,) candidate scores, built in float32
    rows = torch.stack([grid, torch.zeros_like(grid)], dim=-1).to(dtype)  # (n, 2)
    bad = torch.isnan(naive_softmax(rows, dim=-1)).any(dim=-1)  # (n,)
    return float(rows[bad.nonzero()[0, 0], 0])


for dtype in (torch.float32, torch.float16):
    print(f"{str(dtype):>14}: naive softmax returns NaN from s = {first_nan_score(dtype):.2f}")

# %% [markdown]
# In float16, a score of about 11 is enough, and attention scores reach that easily: lesson 03
# showed that unscaled scores with $d_k = 128$ have a standard deviation of about $\sqrt{128} \approx 11.3$.
# How many rows of a float16 attention matrix (64 queries × 64 keys) break?

# %%
q, k = torch.randn(64, 128), torch.randn(64, 128)  # d_k = 128
for name, s in (("raw", attention_scores(q, k)), ("scaled", scaled_attention_scores(q, k))):
    half = s.to(torch.float16)
    broken = torch.isnan(naive_softmax(half, dim=-1)).any(dim=-1)  # (64,)
    print(f"{name:>6} scores in float16: {int(broken.sum())} of 64 rows are NaN with the naive softmax")

# %% [markdown]
# Very *negative* scores fail too: every $e^{s_j}$ rounds to 0, and $0 / 0$ is NaN.

# %%
print("naive, float32, scores [-110, -120]:", naive_softmax(torch.tensor([-110.0, -120.0])).tolist())

# %% [markdown]
# ## 4. The fix: subtract the maximum
#
# Since a shift changes nothing (section 1), shift by the largest score $m = \max_j s_j$:
#
# $$\mathrm{softmax}(s)_j = \frac{e^{s_j - m}}{\sum_{j'} e^{s_{j'} - m}}$$
#
# Now every exponent is $\le 0$, so every $e^{s_j - m}$ lies in $(0, 1]$: nothing overflows. And
# the top score contributes exactly $e^0 = 1$, so the sum is at least 1: no $0 / 0$ either. This is
# what the course's `softmax` (and every library's) does:

# %%
for row in ([1000.0, 999.0, 0.0], [-110.0, -120.0]):
    x = torch.tensor(row)
    print(f"{str(row):>22}: naive {[round(w, 4) for w in naive_softmax(x).tolist()]}, "
          f"stable {[round(w, 4) for w in softmax(x).tolist()]}")
x16 = torch.tensor([12.0, 11.0, 0.0], dtype=torch.float16)
print(f"{'float16 [12, 11, 0]':>22}: naive {naive_softmax(x16).tolist()}, "
      f"stable {[round(w, 4) for w in softmax(x16).tolist()]}")

# %% [markdown]
# On ordinary scores, the two agree with each other and with PyTorch:

# %%
s = torch.randn(4, 10) * 3
print("stable == naive:", torch.allclose(softmax(s), naive_softmax(s)))
print("stable == torch.softmax:", torch.allclose(softmax(s), torch.softmax(s, dim=-1)))

# %% [markdown]
# ## 5. Log-sum-exp
#
# The denominator's logarithm, $\mathrm{LSE}(s) = \ln \sum_j e^{s_j}$, appears all over machine
# learning (log-probabilities, cross-entropy, and lesson 11's flash attention). The same trick
# computes it safely:
#
# $$\mathrm{LSE}(s) = m + \ln \sum_j e^{s_j - m}, \qquad m = \max_j s_j$$

# %%
big = torch.tensor([1000.0, 1000.0])
print("naive ln(sum(exp)):", float(torch.log(torch.exp(big).sum())))
print("stable logsumexp:  ", round(float(logsumexp(big)), 4), "  (= 1000 + ln 2 =", round(1000 + math.log(2), 4), ")")
print("torch.logsumexp:   ", round(float(torch.logsumexp(big, dim=-1)), 4))

# %% [markdown]
# The LSE is a "soft maximum": it lies between $\max_j s_j$ and $\max_j s_j + \ln n$. And it gives
# the softmax in one line, $\mathrm{softmax}(s)_j = e^{s_j - \mathrm{LSE}(s)}$:

# %%
lse = logsumexp(scores)
print(f"max {float(scores.max()):.3f} ≤ LSE {float(lse):.3f} ≤ max + ln 5 = {float(scores.max()) + math.log(5):.3f}")
print("exp(s - LSE) == softmax:", torch.allclose(torch.exp(scores - lse), weights))

# %% [markdown]
# ## 6. Experiment: the temperature knob
#
# Slide $T$ and watch the weights of "it" over the five words go from a hard choice to an even
# spread. Where does "drink" overtake "thirsty"? (Never: a temperature keeps the order.)

# %%
# NBVAL_IGNORE_OUTPUT
temperature_explorer(scores, tokens)

# %% [markdown]
# ## Your turn
#
# Open [the exercise notebook](../exercises/04_softmax.ipynb) and write a stable `softmax` with a
# `dim` and a `temperature`. Its check feeds your function scores of 1000 and float16 inputs.

# %% [markdown]
# ## Summary
#
# - The softmax turns scores into positive weights that sum to 1, keeps their order and ignores a
#   shift of all scores by the same amount.
# - A temperature $T$ divides the scores first: small $T$ sharpens, large $T$ flattens. The
#   $1/\sqrt{d_k}$ of lesson 03 is a temperature.
# - The textbook formula overflows for scores above $\ln(\text{largest float})$: about 88.7 in
#   float32 and 11.1 in float16 (measured above). Subtracting the row's maximum fixes it at no
#   cost; log-sum-exp uses the same trick.
#
# **Next:** [lesson 05](05_masking.ipynb) hides some keys from some queries (the future, the
# padding) by setting their scores to $-\infty$, and handles a query that has nothing left to see.
