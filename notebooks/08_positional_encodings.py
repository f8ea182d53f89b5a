# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Positional encodings
#
# **You will be able to**
# 1. show that attention without positions and without a causal mask is permutation-equivariant:
#    shuffle the tokens and the outputs are shuffled the same way; and show why a causal mask
#    breaks that symmetry;
# 2. build the sinusoidal position table and read it: one clock per pair of columns, and dot
#    products that depend only on the distance between positions;
# 3. say what learned position embeddings are and where they stop working;
# 4. apply RoPE to queries and keys and check numerically that the scores depend only on $i - j$;
# 5. say what ALiBi does instead.
#
# **Builds on:** [lesson 06](06_multi_head_attention.ipynb) (multi-head attention) and
# [lesson 07](07_cross_attention.ipynb), whose toy model needed position embeddings to reverse.

# %%
import matplotlib.pyplot as plt
import torch
from torch import nn

from attention_course import (
    MultiHeadAttention,
    apply_rope,
    causal_mask,
    scaled_dot_product_attention,
    sinusoidal_table,
)
from attention_course.teaching.plotting import plot_attention
from attention_course.teaching.widgets import rope_dial, save_figure

_ = torch.manual_seed(0)  # every random number below is the same on every run

# %% [markdown]
# ## 1. Attention cannot tell "dog bites man" from "man bites dog"
#
# Give three words an embedding each and run self-attention on both sentences:

# %%
d_model = 16
embedding = {word: torch.randn(d_model) for word in ["dog", "bites", "man"]}
attention = MultiHeadAttention(d_model, n_heads=4)


def attend(words: list[str], add: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention output (L, d_model) for a list of words, optionally plus a position table."""
    x = torch.stack([embedding[w] for w in words])[None]  # (1, L, d_model)
    if add is not None:
        x = x + add[: len(words)]
    with torch.no_grad():
        return attention(x)[0][0]


first, second = attend(["dog", "bites", "man"]), attend(["man", "bites", "dog"])
print("output for 'dog' , in both sentences:", [round(v, 3) for v in first[0, :4].tolist()], "...",
      [round(v, 3) for v in second[2, :4].tolist()], "...")
print("identical:", torch.allclose(first[0], second[2], atol=1e-6))

# %% [markdown]
# "dog" gets exactly the same output whether it bites or is bitten. The reason, for any
# permutation matrix $P$ (rows of $X$ reordered):
#
# $$\mathrm{softmax}\!\left(\frac{(PQ)(PK)^\top}{\sqrt{d}}\right) PV
#   = P\, \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d}}\right) P^\top P V
#   = P\, \mathrm{Attention}(Q, K, V)$$
#
# (the row-wise softmax does not care in which order the columns come, and $P^\top P = I$).
# Attention treats its input as a **set**: shuffle the tokens, and the outputs shuffle along.

# %%
x = torch.randn(1, 10, d_model)  # (B, L, d_model)
order = torch.randperm(10)
with torch.no_grad():
    shuffled_then_attended = attention(x[:, order])[0]
    attended_then_shuffled = attention(x)[0][:, order]
print("Attention(P X) == P Attention(X):", torch.allclose(shuffled_then_attended, attended_then_shuffled, atol=1e-6))

# %% [markdown]
# ### With a causal mask, order leaks in
#
# The argument needs the **same** mask for every order: $P$ must commute with the mask. A causal
# mask does not: token $i$ sees keys $0..i$, so after shuffling, a token sees a different set of
# keys. The same demo with `causal=True`:

# %%
with torch.no_grad():
    causal_shuffled = attention(x[:, order], causal=True)[0]
    causal_then_shuffled = attention(x, causal=True)[0][:, order]
print("causal: Attention(P X) == P Attention(X):", torch.allclose(causal_shuffled, causal_then_shuffled, atol=1e-6))
print(f"largest difference: {(causal_shuffled - causal_then_shuffled).abs().max():.2f}")

# %% [markdown]
# The mask itself carries position: token $i$ averages over exactly $i + 1$ keys. Even with no
# content at all (every score equal), a token that attends to a marker present only at the first
# position (a beginning-of-sequence token) gets back $1 / (i + 1)$, a number that says where it is:

# %%
length = 8
bos_marker = torch.zeros(length, 1)
bos_marker[0] = 1.0  # value 1 at the first position only
flat = torch.zeros(length, 4)  # identical queries and keys: all scores equal
position_signal = scaled_dot_product_attention(flat, flat, bos_marker, causal_mask(length))
print("output at positions 0..7:", [round(v, 3) for v in position_signal[:, 0].tolist()])
print("equals 1 / (i + 1):", torch.allclose(position_signal[:, 0], 1 / torch.arange(1, length + 1)))

# %% [markdown]
# This is why decoder-only models **without any positional encoding** ("NoPE", Kazemnejad et al.,
# 2023; Haviv et al., 2022) still learn order: the causal mask gives each position a different view
# of the past, and later layers can read a position off it. An encoder (no causal mask) has no
# such signal: for it, positions must be added.
#
# Language is not a set, so every transformer adds information about position. Three families:
# **add** a position vector to each embedding (sinusoidal or learned), **rotate** queries and keys
# by their position (RoPE), or **bias** the scores by distance (ALiBi).

# %% [markdown]
# ## 2. The sinusoidal table
#
# "Attention Is All You Need" adds to the embedding of position $p$ a fixed vector:
#
# $$PE_{p,\,2i} = \sin\!\left(\frac{p}{10000^{2i/d}}\right), \qquad
#   PE_{p,\,2i+1} = \cos\!\left(\frac{p}{10000^{2i/d}}\right), \qquad i = 0, \dots, d/2 - 1$$
#
# Each pair of columns $(2i, 2i+1)$ is a **clock hand** turning at its own speed
# $\omega_i = 10000^{-2i/d}$: the first pair turns by 1 radian per position, the last by about
# $10^{-4}$. Like the digits of a counter, fast columns tell neighbours apart, slow ones tell far
# regions apart.

# %%
table = sinusoidal_table(64, 128)  # (positions, d_model)
figure, (left, right) = plt.subplots(1, 2, figsize=(14, 4.5))
image = left.imshow(table.numpy(), cmap="RdBu", aspect="auto", vmin=-1, vmax=1)
left.set_title("Sinusoidal position table")
left.set_xlabel("embedding dimension")
left.set_ylabel("position")
figure.colorbar(image, ax=left, label="value")
for column in (0, 10, 30, 60):
    right.plot(table[:, column].numpy(), label=f"column {column}")
right.set_title("Some columns, position by position")
right.set_xlabel("position")
right.set_ylabel("value")
right.legend()
figure.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Dot products depend on the distance
#
# With $\sin a \sin b + \cos a \cos b = \cos(a - b)$, each clock contributes
# $\cos(\omega_i (p - q))$:
#
# $$PE_p \cdot PE_q = \sum_{i=0}^{d/2 - 1} \cos\big(\omega_i\,(p - q)\big)$$
#
# which depends only on the offset $p - q$, is largest ($d/2$) at offset 0, and shrinks as the
# fast clocks fall out of step. Since $\cos$ is even, it depends in fact only on the **distance**
# $|p - q|$: the dot product cannot tell whether $q$ is $5$ positions before $p$ or $5$ after.

# %%
similarity = table @ table.T  # (64, 64)
print(f"PE_10·PE_15 = {similarity[10, 15]:.3f}   PE_40·PE_45 = {similarity[40, 45]:.3f}   (same offset 5)")
print(f"PE_10·PE_5  = {similarity[10, 5]:.3f}   (offset -5: the same distance, the same value)")
for offset in (0, 1, 2, 4, 8, 16, 32):
    print(f"offset {offset:>2}: PE_0·PE_{offset} = {similarity[0, offset]:6.2f}")

# %%
figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
image = left.imshow(similarity.numpy(), cmap="viridis")
left.set_title("PE_p · PE_q")
left.set_xlabel("position q")
left.set_ylabel("position p")
figure.colorbar(image, ax=left, label="dot product")
right.plot(similarity[0].numpy())
right.set_title("Dot product with position 0")
right.set_xlabel("distance")
right.set_ylabel("PE_0 · PE_distance")
figure.tight_layout()
plt.show()

# %% [markdown]
# The heatmap is constant along every diagonal (a function of $p - q$ only), symmetric about the
# main diagonal (a function of $|p - q|$), and the curve falls
# quickly over the first few positions, then wiggles at a lower level.
#
# There is more: moving $k$ positions forward turns every clock by a fixed angle $\omega_i k$, a
# rotation that does not depend on $p$. So $PE_{p+k} = PE_p\, M_k$ for one matrix $M_k$, the same
# for every $p$: a layer can learn "look $k$ tokens back" as a linear map.

# %%
k = 3
frequencies = 10000.0 ** (-torch.arange(0, 128, 2) / 128)  # (64,) one per clock
m_k = torch.zeros(128, 128)
for i, angle in enumerate((k * frequencies).tolist()):  # block 2x2 rotations, (sin, cos) rows
    c, s = torch.cos(torch.tensor(angle)), torch.sin(torch.tensor(angle))
    m_k[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]])
print(f"PE[p + {k}] == PE[p] @ M_{k} for every p:", torch.allclose(table[k:], table[:-k] @ m_k, atol=1e-4))

# %% [markdown]
# Added to the embeddings, the table breaks the symmetry of section 1: "dog" now knows where it is.

# %%
first, second = attend(["dog", "bites", "man"], table[:, :d_model]), attend(["man", "bites", "dog"], table[:, :d_model])
print("'dog' gets the same output in both sentences:", torch.allclose(first[0], second[2], atol=1e-6))

# %% [markdown]
# ## 4. Learned position embeddings
#
# BERT and GPT-2 skip the formula: position $p$ gets a vector from a trainable table
# `nn.Embedding(max_len, d_model)`, learned like word embeddings (lesson 07's toy model did this).
# It works well up to `max_len` and not at all beyond: there is simply no row for position
# `max_len`.

# %%
learned = nn.Embedding(512, d_model)  # BERT: 512 positions; GPT-2: 1024
print("position 511:", tuple(learned(torch.tensor([511])).shape))
try:
    learned(torch.tensor([512]))
except IndexError as error:
    print("position 512: IndexError:", str(error).split("\n")[0])

# %% [markdown]
# ## 5. RoPE: rotate the queries and the keys
#
# Rotary position embeddings (Su et al., 2021; used by Llama, Mistral, Qwen, ...) don't touch the
# embeddings. They rotate each **query and key** right before the dot product: every pair of
# coordinates is a 2-D vector, turned by the angle $p\,\theta_i$ at position $p$, with
# $\theta_i = 10000^{-2i/d}$ as in the sinusoids.
#
# $$q'_m = R(m\theta)\, q_m, \qquad k'_n = R(n\theta)\, k_n, \qquad
#   q'_m \cdot k'_n = q_m^\top R\big((n - m)\theta\big)\, k_n$$
#
# since rotations compose ($R(a)^\top R(b) = R(b - a)$). The score sees the two tokens' **content**
# and their **offset** $n - m$, never the absolute positions. Values are not rotated.
#
# Which coordinates form a pair is a convention. The course, like GPT-NeoX and Hugging Face's
# `transformers`, uses the **half-split** layout: coordinate $i$ pairs with $i + d/2$, so
#
# $$\mathrm{RoPE}(x) = x \odot \cos + \mathrm{rotate\_half}(x) \odot \sin, \qquad
#   \mathrm{rotate\_half}([x_1, x_2]) = [-x_2, x_1]$$
#
# Here is the first pair (coordinates 0 and $d/2$) of one vector at positions 0 to 7:

# %%
d_head = 16
vector = torch.zeros(8, d_head)  # the same vector at positions 0..7
vector[:, 0] = 1.0  # first pair: (1, 0)
rotated = apply_rope(vector)  # (8, d_head)
figure, ax = plt.subplots(figsize=(4.5, 4.5))
for position in range(8):
    x0, y0 = rotated[position, 0].item(), rotated[position, d_head // 2].item()
    ax.annotate("", xy=(x0, y0), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": plt.cm.viridis(position / 7)})
    ax.text(1.12 * x0, 1.12 * y0, str(position), ha="center", va="center")
ax.set_xlim(-1.3, 1.3)
ax.set_ylim(-1.3, 1.3)
ax.set_aspect("equal")
ax.set_title("RoPE turns pair 0 by 1 radian per position")
ax.set_xlabel("coordinate 0")
ax.set_ylabel(f"coordinate {d_head // 2}")
plt.show()

# %% [markdown]
# ### Scores depend only on $i - j$
#
# Put one query vector $q$ at every position $m = 0..15$ and one key vector $k$ at every position
# $n = 0..15$, rotate, and compute all $16 \times 16$ scores $q'_m \cdot k'_n$:

# %%
n_positions = 16
q, k = torch.randn(d_head), torch.randn(d_head)
q_rotated = apply_rope(q.expand(n_positions, d_head))  # row m: q at position m
k_rotated = apply_rope(k.expand(n_positions, d_head))  # row n: k at position n
rope_scores = q_rotated @ k_rotated.T  # (16, 16): [m, n] = q'_m · k'_n
figure, ax = plt.subplots(figsize=(6, 5))
image = ax.imshow(rope_scores.numpy(), cmap="viridis")
ax.set_title("RoPE scores q'_m · k'_n")
ax.set_xlabel("key position n")
ax.set_ylabel("query position m")
figure.colorbar(image, ax=ax, label="score")
plt.show()

# %%
offsets = range(-(n_positions - 2), n_positions - 1)  # diagonals with at least two entries
spread = max(rope_scores.diagonal(offset).std().item() for offset in offsets)
print("scores along each diagonal (same i - j) agree within 1e-5:", spread < 1e-5)
print(f"scores vary by {rope_scores.std():.2f} across diagonals")
far = torch.arange(n_positions) + 1000  # the same 16 tokens, 1000 positions later
far_scores = apply_rope(q.expand(n_positions, d_head), far) @ apply_rope(k.expand(n_positions, d_head), far).T
print("shifting every position by 1000 changes no score (within 1e-4):",
      torch.allclose(far_scores, rope_scores, atol=1e-4))
print("rotation keeps lengths:", torch.allclose(q_rotated.norm(dim=-1), q.norm().expand(n_positions)))

# %% [markdown]
# ### The RoPE dial
#
# Turn it yourself. The left picture is one pair of a vector, at a position $m$ you choose: pair 0
# turns by 1 radian per position, pair 7 (the slowest of $d_\text{head} = 16$) by about
# $10^{-3.5}$. The right picture is the score of a fixed query and key as a function of the
# offset between them, once with the query at position $m$ and once at position 0: the two curves
# lie on top of each other whatever $m$ is (for each of three query–key pairs to pick from). The
# dashed curve is the chosen pair's own share of
# the score, a cosine in the offset whose period is $2\pi / \theta_i$.

# %%
# NBVAL_IGNORE_OUTPUT
dial = rope_dial(d_head=16, n_positions=32)
save_figure(dial, "figures/08_rope_dial.png", **{"position m": 5, "pair i": 1})
dial

# %% [markdown]
# ![The RoPE dial at position 5, pair 1: the pair turned by 5 θ_1, and the score against the offset, the same for the query at 5 and at 0](figures/08_rope_dial.png)
#
# *The dial at position 5, pair 1 (a saved picture, for readers without a running kernel).*
# The dial's two curves, computed for every position it offers: the largest gap between them.

# %%
generator = torch.Generator().manual_seed(0)  # the dial's query and key (rope_dial's seed 0)
dial_q, dial_k = torch.randn(d_head, generator=generator), torch.randn(d_head, generator=generator)
q_all = apply_rope(dial_q.expand(64, d_head))  # the query at positions 0..63
k_all = apply_rope(dial_k.expand(64, d_head))
offsets_32 = torch.arange(32)
gap = max((q_all[m] @ k_all[m + offsets_32].T - q_all[0] @ k_all[offsets_32].T).abs().max().item() for m in range(32))
print(f"largest |score(query at m) - score(query at 0)| over m = 0..31 and 32 offsets, below 1e-5: {gap < 1e-5}")

# %% [markdown]
# Every diagonal is constant (up to float32 rounding): the score is a function of $m - n$ alone.
#
# ### Interleaved or half-split?
#
# The RoPE paper, GPT-J and **Meta's own Llama code** pair **neighbours** $(2i, 2i+1)$ instead
# (Llama's reference code treats each pair as one complex number). Both layouts have the
# relative-position property, but they rotate different pairs, so they are not interchangeable: a
# model trained with one gives wrong scores with the other. They differ only by a reordering of
# the coordinates, which is how checkpoints are converted between them: Hugging Face's port of
# Llama uses half-split, and its conversion script permutes the rows of $W_Q$ and $W_K$ so that
# the converted model computes the same scores as Meta's:

# %%
def interleaved_rope(x: torch.Tensor) -> torch.Tensor:
    """RoPE pairing neighbours (2i, 2i+1), as in GPT-J and Meta's Llama code: x (L, d) -> (L, d)."""
    length, width = x.shape
    angles = torch.arange(length)[:, None] * 10000.0 ** (-torch.arange(0, width, 2) / width)  # (L, d/2)
    even, odd = x[:, 0::2], x[:, 1::2]
    return torch.stack([even * angles.cos() - odd * angles.sin(), even * angles.sin() + odd * angles.cos()], -1).flatten(-2)


sample = torch.randn(n_positions, d_head)
to_half_split = torch.cat([torch.arange(0, d_head, 2), torch.arange(1, d_head, 2)])  # [0, 2, 4, ..., 1, 3, 5, ...]
print("interleaved == half-split, as they are:", torch.allclose(interleaved_rope(sample), apply_rope(sample), atol=1e-5))
print("interleaved == half-split after reordering coordinates:",
      torch.allclose(interleaved_rope(sample)[:, to_half_split], apply_rope(sample[:, to_half_split]), atol=1e-5))

# %% [markdown]
# ## 6. ALiBi: no position vectors at all
#
# ALiBi (Press et al., 2022; used by BLOOM and MPT) adds nothing to the embeddings and rotates
# nothing. It **biases the scores** by distance: head $h$ of $H$ subtracts $m_h \cdot (i - j)$
# from the score of query $i$ on an earlier key $j$, with slopes $m_h = 2^{-8h/H}$. Steep heads
# look at the last few tokens, shallow ones far back, and nothing breaks beyond the training
# length. With the course's attention it is just a float mask added to the scores:

# %%
n_heads, length = 8, 10
slopes = 2.0 ** (-8 * torch.arange(1, n_heads + 1) / n_heads)  # (H,)
print("slopes:", [round(s, 4) for s in slopes.tolist()])
distance = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).float()  # (L, L): i - j
alibi = -slopes[:, None, None] * distance  # (H, L, L)
alibi = alibi.masked_fill(~causal_mask(length), float("-inf"))  # causal, as in decoder models
zeros = torch.zeros(n_heads, length, 4)  # equal content everywhere, so only the bias decides
_, alibi_weights = scaled_dot_product_attention(zeros, zeros, zeros, alibi, return_weights=True)
figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
plot_attention(alibi_weights[0], title=f"ALiBi head 1, slope {slopes[0]:.2f}", ax=axes[0], annotate=False)
plot_attention(alibi_weights[-1], title=f"ALiBi head {n_heads}, slope {slopes[-1]:.4f}", ax=axes[1],
               annotate=False)
figure.tight_layout()
plt.show()

# %% [markdown]
# With identical content everywhere, the steep head puts most weight on the last few tokens while
# the shallow one spreads almost evenly over the past.

# %% [markdown]
# ## Your turn
#
# Open [the exercise notebook](../exercises/08_positional_encodings.ipynb) and write
# `sinusoidal_table` and `apply_rope`. The check cells recognise sin and cos swapped, positions
# counted from 1, the interleaved pairing where the course uses half-split, a rotation in the wrong
# direction and one frequency per coordinate instead of per pair.
#
# Before that, try here: in section 5, replace `apply_rope` by `interleaved_rope` when computing
# `rope_scores`. Are the diagonals still constant? Then compute the same scores with the
# sinusoidal table *added* to $q$ and $k$ instead: which property is lost?

# %% [markdown]
# ## Summary
#
# - Attention without a causal mask is permutation-equivariant: without positions, a sentence is a
#   bag of words. A causal mask breaks the symmetry (token $i$ sees $i + 1$ keys), which is why
#   decoders without positional encodings (NoPE) can still learn order.
# - Sinusoidal encodings add one clock per pair of columns; $PE_p \cdot PE_q$ depends on the
#   distance $|p - q|$ only and falls with it, and shifting is a fixed rotation.
# - Learned position embeddings are a trainable table, limited to the positions seen in training.
# - RoPE rotates queries and keys by their positions, so scores depend on content and on $i - j$
#   only (checked numerically above); pairs are half-split here (GPT-NeoX, Hugging Face),
#   interleaved in the RoPE paper, GPT-J and Meta's Llama code.
# - ALiBi biases scores by $-m_h (i - j)$, one slope per head, with no position vectors at all.
#
# **Next:** [lesson 09](09_kv_cache.ipynb) makes decoding fast: the keys and values of the past
# are computed once and cached.
