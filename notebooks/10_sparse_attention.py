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
# # 10 · Sparse attention: look at a few keys, and skip the rest of the work
#
# **You will be able to**
# 1. measure the *quadratic wall*: why dense attention's time and memory grow as $N^2$;
# 2. draw the sparse patterns long-context models use (sliding window, dilated, strided, fixed,
#    Longformer, BigBird) and compute their density and FLOPs;
# 3. explain how information still crosses the whole sequence in a few layers;
# 4. compute attention over a block layout so that the skipped tiles cost **nothing** (once the
#    layout is built, itself without visiting every pair), and check that it equals dense
#    attention under the same mask;
# 5. name what a local pattern loses, and how global tokens give it back;
# 6. show a model overfitting to a spurious local pattern, and what regularisation does about it.
#
# **Builds on:** masks and fully masked rows (lesson 05), multi-head shapes `(batch, heads, N, d)`
# (lesson 06).

# %%

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from attention_course import scaled_dot_product_attention
from attention_course.sparse import (
    attention_flops,
    bigbird_pattern,
    block_sparse_attention,
    dilated_window_pattern,
    fixed_pattern,
    longformer_pattern,
    receptive_field,
    sliding_window_attention,
    sliding_window_mask,
    sliding_window_pattern,
    strided_pattern,
)
from attention_course.measure import best_seconds, growth_exponent, largest_allocation
from attention_course.teaching.widgets import pattern_picker, save_figure

_ = torch.manual_seed(0)  # the same random numbers on every run
torch.set_num_threads(1)  # every timing below runs on one thread: a busy machine's scheduling stays out of the ratios

# %% [markdown]
# ## 1. Intuition: you do not reread the whole book for every word
#
# Reading word 5 000 of a novel, you mostly need the last sentence or two, plus a few landmarks
# (the title, the chapter heading). Dense attention instead compares **every** word with
# **every** other word. A *sparse pattern* writes down which pairs are worth computing: here
# each of 8 tokens looks only at its neighbours, one step to each side.

# %%
tokens = ["The", "cat", "sat", "on", "the", "mat", "and", "slept"]
local = sliding_window_mask(len(tokens), 1)
print(local.int())

# %%
fig, ax = plt.subplots(figsize=(4, 4))
ax.imshow(local, cmap="Blues")
ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right")
ax.set_yticks(range(len(tokens)), tokens)
ax.set_xlabel("key (attended to)")
ax.set_ylabel("query (attending)")
ax.set_title("Sliding window, w = 1: who may look at whom")
plt.show()

# %% [markdown]
# ## 2. The quadratic wall
#
# Dense attention computes the score matrix $S = QK^\top/\sqrt{d}$ of shape $N \times N$ per head.
# Doubling $N$ quadruples it. We measure the largest tensor the course's dense reference allocates
# (the score matrix: $4N^2$ bytes per head in float32) and the time of PyTorch's fused kernel.

# %%
heads, d_head = 4, 32
lengths = [256, 512, 1024, 2048]
score_bytes = []
for n in lengths:
    q, k, v = torch.randn(3, 1, heads, n, d_head).unbind(0)
    _, largest = largest_allocation(scaled_dot_product_attention, q, k, v)
    score_bytes.append(largest)
    print(f"N = {n:>5}: largest tensor {largest / 2**20:7.1f} MiB  (= heads · N² · 4 bytes: {largest == heads * n * n * 4})")

# %%
# NBVAL_IGNORE_OUTPUT
dense_seconds = []
with torch.inference_mode():
    for n in lengths:
        q, k, v = torch.randn(3, 1, heads, n, d_head).unbind(0)
        dense_seconds.append(best_seconds(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v), repeats=2))
print("dense time (ms):", [round(1000 * s, 1) for s in dense_seconds])
print(f"fitted growth: time ~ N^{growth_exponent(lengths, dense_seconds):.2f}, memory ~ N^{growth_exponent(lengths, score_bytes):.2f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].loglog(lengths, dense_seconds, "o-", base=2)
axes[0].set_title("Dense attention time")
axes[0].set_xlabel("sequence length N")
axes[0].set_ylabel("seconds")
axes[1].loglog(lengths, [b / 2**20 for b in score_bytes], "s-", color="tab:red", base=2)
axes[1].set_title("Score matrix size (all heads)")
axes[1].set_xlabel("sequence length N")
axes[1].set_ylabel("MiB")
plt.show()

# %% [markdown]
# At a context of 128k tokens one head's float32 score matrix alone would take
# $4 \cdot (2^{17})^2$ bytes:

# %%
print(f"{4 * (2**17) ** 2 / 2**30:.0f} GiB per head per layer")

# %% [markdown]
# ## 3. The math: attention restricted to a pattern
#
# A pattern is a set $\mathcal{A}$ of allowed pairs, written as a boolean mask $M_{ij}$. Query
# $i$ attends only to $\mathcal{A}(i) = \{ j : M_{ij} \}$:
#
# $$o_i = \sum_{j \in \mathcal{A}(i)} \frac{e^{s_{ij}}}{\sum_{j' \in \mathcal{A}(i)} e^{s_{ij'}}}\, v_j,
# \qquad s_{ij} = \frac{q_i \cdot k_j}{\sqrt{d}} .$$
#
# This is exactly dense attention with $-\infty$ at the masked pairs (lesson 05): the same numbers.
# The difference is the **cost**. Each allowed pair costs $2d$ FLOPs for $q_i \cdot k_j$ and $2d$
# for adding $p_{ij} v_j$, so attention costs $4d\,\lvert\mathcal{A}\rvert$ instead of $4dN^2$, but
# only if the code never touches the pairs outside $\mathcal{A}$. Masking after computing all of
# $QK^\top$ gives the right answer at the full dense price.
#
# | pattern | allowed pairs $M_{ij}$ | keys per query |
# |---|---|---|
# | sliding window | $\lvert i-j\rvert \le w$ | $2w+1$ |
# | dilated window | $\lvert i-j\rvert \le wr$, $r \mid (i-j)$ | $2w+1$, reaching $r$ times further |
# | strided (Sparse Transformer) | $\lvert i-j\rvert < \ell$ or $\ell \mid (i-j)$ | $\approx 2\sqrt N$ for $\ell=\sqrt N$ |
# | fixed (Sparse Transformer) | same block of $\ell$, or $j$ among the last $c$ of its block | $\approx \ell + cN/\ell$ |
# | Longformer | window, or $i \in G$, or $j \in G$ | $2w+1+\lvert G\rvert$ |
# | BigBird | Longformer + $r$ random key blocks per query block | $2w+1+\lvert G\rvert+rB$ |

# %% [markdown]
# ## 4. The patterns, drawn
#
# Each builder returns a `SparsePattern`: `.mask()` is the dense boolean $N \times N$ mask for
# pictures and the dense reference; `.allows(i, j)` is the rule itself, which a sparse kernel
# evaluates only where it needs to.

# %%
n = 64
patterns = [
    sliding_window_pattern(n, 4, causal=True),
    dilated_window_pattern(n, 4, 3),
    strided_pattern(n, 8),
    fixed_pattern(n, 8, 2),
    longformer_pattern(n, 3, [0, 32]),
    bigbird_pattern(n, 3, [0], 2, 8, seed=0),
]
for pattern in patterns:
    print(f"{pattern.name:<28} density {pattern.density():.3f}")

# %%
fig, axes = plt.subplots(2, 3, figsize=(12, 8))
for ax, pattern in zip(axes.flat, patterns, strict=True):
    ax.imshow(pattern.mask(), cmap="Blues")
    ax.set_title(f"{pattern.name}\ndensity {pattern.density():.2f}", fontsize=10)
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
fig.suptitle(f"Sparse attention patterns, N = {n} (blue = computed)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. From a mask to a block layout
#
# Processors are fast on dense tiles, not on scattered pairs. A block-sparse kernel cuts the
# mask into $B \times B$ tiles and visits a tile when **any** pair in it is allowed
# (`pattern.layout(B)`). Tiles crossed by the pattern's edge are *partly* needed: they are
# computed whole and masked inside. The layout has a cost of its own: testing every pair is
# $O(N^2)$ work, the very thing sparse attention avoids. So the window, Longformer and BigBird
# patterns build it from each tile's first and last positions alone ($(N/B)^2$ tiles, no pair
# visited); the other patterns test the pairs one tile row at a time (`pattern.scan_layout(B)`,
# never an $N \times N$ tensor, but $O(N^2)$ work). Section 9 times both. Either way a layout
# is computed once per length and reused by every layer, head and batch.

# %%
pattern, block = longformer_pattern(n, 3, [0, 32]), 8
layout = pattern.layout(block)
print(f"{int(layout.sum())} of {layout.numel()} tiles visited; "
      f"pairs computed {int(layout.sum()) * block**2} for {pattern.n_pairs()} allowed")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
axes[0].imshow(pattern.mask(), cmap="Blues")
axes[0].set_title("element mask (allowed pairs)")
axes[1].imshow(layout.repeat_interleave(block, 0).repeat_interleave(block, 1).int() + pattern.mask().int(),
               cmap="Blues", vmin=0, vmax=2)
axes[1].set_title(f"tiles of {block}×{block} visited (light) + allowed pairs (dark)")
for ax in axes:
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
plt.show()

# %% [markdown]
# ## 6. Sparse equals dense, pattern by pattern
#
# `block_sparse_attention(q, k, v, layout, B, mask_fn=pattern.allows)` loops over query blocks,
# gathers the keys of the visited tiles, masks the forbidden pairs inside them and runs one softmax
# over each query's whole row. It must match the dense reference under `pattern.mask()`, for any
# block size, even one that does not divide $N$:

# %%
q, k, v = torch.randn(3, 2, 4, n, 16).unbind(0)  # (batch 2, heads 4, N, d 16)
for pattern in patterns:
    dense = scaled_dot_product_attention(q, k, v, pattern.mask())
    worst = max(
        (block_sparse_attention(q, k, v, pattern.layout(b), b, mask_fn=pattern.allows) - dense).abs().max().item()
        for b in (8, 13, 32)
    )
    print(f"{pattern.name:<28} max |block-sparse - dense| < 1e-5: {worst < 1e-5}")

# %% [markdown]
# The sliding window needs no layout at all: query block $[s, e)$ can only see keys in
# $[s-w,\, e+w)$, one contiguous slice of $K$ and $V$. `sliding_window_attention` computes
# each block against its slice: $B(B+2w)$ scores per block, $O(N\,w)$ in total. Inside a band it
# is plain dense attention on a small problem (only the band's two corners are masked), so it
# hands each band to PyTorch's fused kernel: the sparsity is in *which* keys a block reads, not
# in how it attends to them. Production local attention works the same way.

# %%
for causal in (False, True):
    dense = scaled_dot_product_attention(q, k, v, sliding_window_mask(n, 5, causal))
    error = (sliding_window_attention(q, k, v, 5, causal=causal, block_size=16) - dense).abs().max().item()
    print(f"causal={causal}: max |sliding window - dense| < 1e-5: {error < 1e-5}")

# %% [markdown]
# ## 7. Information still travels: the receptive field over depth
#
# One layer with a window of $w$ moves information $w$ positions. Stack $L$ layers and a token
# can hear from $Lw$ positions away; with the residual connection a token also keeps what it had.
# `receptive_field(mask, L)[l - 1, i, j]` is `True` when token $j$ can influence position $i$
# through $l$ layers. Global tokens are shortcuts: everything reaches them in one layer, and they
# reach everything in the next. (In a causal model a global token at position 0 reads nothing
# after itself, so this shortcut is for encoders; decoders rely on depth and strides.)

# %%
n_small, depth = 48, 4
fields = {
    "sliding window w=3": receptive_field(sliding_window_mask(n_small, 3), depth),
    "Longformer w=3 + global token 0": receptive_field(longformer_pattern(n_small, 3, [0]).mask(), depth),
    "strided ℓ=7 (causal)": receptive_field(strided_pattern(n_small, 7).mask(), depth),
}
last = n_small - 1
for name, field in fields.items():
    reached = [int(field[layer, last].sum()) for layer in range(depth)]
    print(f"{name:<32} tokens reaching the last one after 1..{depth} layers: {reached}")

# %%
fig, axes = plt.subplots(1, len(fields), figsize=(13, 3.5))
for ax, (name, field) in zip(axes, fields.items(), strict=True):
    ax.imshow(field[:, last].int(), cmap="Blues", aspect="auto", interpolation="nearest")
    ax.set_yticks(range(depth), [str(layer + 1) for layer in range(depth)])
    ax.set_xlabel("source token j")
    ax.set_ylabel("layers stacked")
    ax.set_title(f"{name}\nwho reaches token {last}", fontsize=9)
plt.show()

# %% [markdown]
# ### Build your own pattern
#
# The pattern picker combines the pieces on 64 tokens: a window (keys on each side), a dilation
# (the gap between them), global tokens (the first few positions, full rows and columns) and
# BigBird's random key blocks (of 8 tokens, per query block). It shows the mask, its density, and
# the share of (position, input) pairs connected after 1 to 6 stacked layers.

# %%
# NBVAL_IGNORE_OUTPUT
picker = pattern_picker(n=64, block_size=8, max_layers=6)
save_figure(picker, "figures/10_pattern_picker.png", window=2, dilation=2, **{"global tokens": 0, "random blocks": 1})
picker

# %% [markdown]
# ![The pattern picker with window 2, dilation 2 and one random block per query block: the mask, its density, and the receptive field over depth](figures/10_pattern_picker.png)
#
# *The picker with window 2, dilation 2 and one random block (a saved picture, for readers
# without a running kernel).* Try a dilation of 2 with no random blocks first: the dilated
# window only links positions an even distance apart, and no depth fixes that. One random
# block, or one global token, does.

# %%
picker_reach = {}
for dilation, random_blocks in ((1, 0), (2, 0), (2, 1)):
    mask = dilated_window_pattern(64, 2, dilation).mask()
    if random_blocks:
        mask = mask | bigbird_pattern(64, 0, [], random_blocks, 8, seed=0).mask()
    picker_reach[(dilation, random_blocks)] = receptive_field(mask, 6)[-1].float().mean().item()
    print(f"window 2, dilation {dilation}, {random_blocks} random block(s): "
          f"{picker_reach[(dilation, random_blocks)]:.0%} of pairs connected after 6 layers")

# %% [markdown]
# Dilation reaches twice as far per layer but only half the positions (the same parity), so after
# six layers it connects no more than the plain window; one random block per query block connects
# almost everything.

# %% [markdown]
# ## 8. Density and FLOPs at a realistic length
#
# At $N = 4096$ with $d = 64$: the FLOPs of exactly the allowed pairs, and of the tiles a
# block-sparse kernel computes with $B = 64$ (every tile that holds at least one allowed pair),
# against dense attention's $4dN^2$:

# %%
n_big, d_big, block = 4096, 64, 64
big_patterns = [
    sliding_window_pattern(n_big, 128),
    dilated_window_pattern(n_big, 128, 2),
    strided_pattern(n_big, 64, causal=False),
    fixed_pattern(n_big, 64, 4, causal=False),
    longformer_pattern(n_big, 128, [0, 1, 2, 3]),
    bigbird_pattern(n_big, 128, [0, 1, 2, 3], 3, 64, seed=0),
]
dense_flops = attention_flops(n_big * n_big, d_big)
print(f"{'pattern':<30} {'density':>8} {'pair GFLOP':>10} {'tile GFLOP':>10} {'vs dense':>9}")
for pattern in big_patterns:
    pair_flops = attention_flops(pattern.n_pairs(), d_big)
    tile_flops = attention_flops(int(pattern.layout(block).sum()) * block**2, d_big)
    print(f"{pattern.name:<30} {pattern.density():>8.3f} {pair_flops / 1e9:>10.2f} {tile_flops / 1e9:>10.2f} "
          f"{tile_flops / dense_flops:>8.1%}")
print(f"{'dense':<30} {1:>8.3f} {dense_flops / 1e9:>10.2f} {dense_flops / 1e9:>10.2f} {1:>8.1%}")

# %% [markdown]
# Density is not enough: the pattern must also be *blocky*. The window, Longformer and BigBird
# patterns fill few tiles, so tiles cost little more than pairs. The strided and fixed patterns
# are as sparse, yet their columns (every $\ell$-th key, the summary keys) cross **every** tile:
# a block-sparse kernel over this layout does the full dense work. Their kernels first permute
# the keys so that each column becomes a contiguous block, or use tiles as narrow as the stride.

# %% [markdown]
# ## 9. Experiment: does the time really drop?
#
# FLOPs on paper are not seconds. We time, at a fixed window $w = 64$: PyTorch's fused dense
# kernel, the course's dense reference with the window mask (right answer, full price),
# block-sparse over the window's layout, and the sliding-window kernel. On log-log axes a slope
# of 2 is quadratic and a slope of 1 linear. (`benchmarks/bench_sparse.py` runs the same
# comparison up to $N = 16\,384$ with $w = 256$.)

# %%
# NBVAL_IGNORE_OUTPUT
window, block = 64, 64
timing_lengths = [512, 1024, 2048, 4096]
seconds = {"dense (PyTorch fused)": [], "dense + mask (course)": [], "block-sparse": [], "sliding window": []}
with torch.inference_mode():
    for n_t in timing_lengths:
        q, k, v = torch.randn(3, 1, heads, n_t, d_head).unbind(0)
        pattern = sliding_window_pattern(n_t, window)
        mask, layout = pattern.mask(), pattern.layout(block)
        runs = {
            "dense (PyTorch fused)": lambda: F.scaled_dot_product_attention(q, k, v),
            "dense + mask (course)": lambda: scaled_dot_product_attention(q, k, v, mask),
            "block-sparse": lambda: block_sparse_attention(q, k, v, layout, block, mask_fn=pattern.allows),
            "sliding window": lambda: sliding_window_attention(q, k, v, window, block_size=block),
        }
        for name, run in runs.items():
            seconds[name].append(best_seconds(run, repeats=2))
for name, times in seconds.items():
    print(f"{name:<22} ms: {[round(1000 * t, 1) for t in times]}   slope {growth_exponent(timing_lengths, times):.2f}")
print(f"sliding window / dense (PyTorch) at N = {timing_lengths[-1]}: "
      f"{seconds['sliding window'][-1] / seconds['dense (PyTorch fused)'][-1]:.2f}")

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for name, times in seconds.items():
    ax.loglog(timing_lengths, times, "o-", base=2, label=f"{name} (slope {growth_exponent(timing_lengths, times):.1f})")
ax.set_xlabel("sequence length N")
ax.set_ylabel("seconds")
ax.set_title(f"Dense vs sparse attention, window w = {window}")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# And the layout itself, at $N = 4096$: built from the tiles' bounds, or by testing every pair, next
# to the attention it serves (timings under whatever load the machine has; the ratios are what
# count):

# %%
# NBVAL_IGNORE_OUTPUT
pattern = sliding_window_pattern(4096, window)
q, k, v = torch.randn(3, 1, heads, 4096, d_head).unbind(0)
layout_seconds = {
    "layout from tile bounds": best_seconds(lambda: pattern.layout(block), repeats=2),
    "layout testing every pair": best_seconds(lambda: pattern.scan_layout(block), repeats=1),
    "sliding-window attention": best_seconds(lambda: sliding_window_attention(q, k, v, window, block_size=block),
                                             repeats=2),
}
for name, t in layout_seconds.items():
    print(f"{name:<27} {1000 * t:9.2f} ms   "
          f"({t / layout_seconds['sliding-window attention']:.3g}x the attention)")

# %% [markdown]
# Testing every pair costs a multiple of the attention it prepares (and grows as $N^2$, the attention as $N$); the
# layout built from tile bounds costs a tiny fraction of it. "Skipped tiles cost nothing" holds only
# when the layout is built without visiting them, or built once and reused.

# %% [markdown]
# The dense curves climb with slope near 2; the sparse ones with slope near 1 (at small $N$
# their fixed per-block overhead flattens them further). The window mask alone saves nothing:
# "dense + mask" computes all $N^2$ scores and still grows quadratically.

# %% [markdown]
# ## 10. What is lost, and how depth and global tokens give it back
#
# A toy retrieval task: one *needle* token hides at position 10 of 64 and **every** position must
# output the needle's value. Each token carries its content and a flag, "I hold the needle" (1 at
# the needle, 0 elsewhere). In every layer, every query looks for flagged keys: a flagged key gets
# the large score $\beta$ (a built-in feature here, learned in a real model), so a query that may
# see a flagged token copies its content **and its flag**. A token that has read the needle holds
# it from then on, and the next layer's queries can find it there: that is how depth carries
# information further.
#
# - Dense attention: every query sees the needle in one layer.
# - Sliding window $w = 4$: one layer reaches the queries within 4 positions of the needle; each
#   further layer 4 more (section 7's receptive field).
# - Longformer with global token 0: in layer 1 the global token reads the needle; in layer 2 every
#   token reads the global token.

# %%
n_task, needle, beta = 64, 10, 30.0
values = torch.randn(n_task, 8)  # (N, d): what each token holds
holds_needle = torch.zeros(n_task, 1)
holds_needle[needle] = 1.0
seek = torch.full((n_task, 1), beta)  # every query looks for flagged keys, score beta


def spread(mask: torch.Tensor | None, n_layers: int) -> torch.Tensor:
    """Run n_layers of the needle-seeking head; each layer's output (content, flag) is the next layer's input."""
    content, flag = values, holds_needle
    for _ in range(n_layers):
        read = scaled_dot_product_attention(seek, flag, torch.cat([content, flag], dim=-1), mask, scale=1.0)
        content, flag = read[:, :-1], read[:, -1:]  # (N, d), (N, 1): the flag travels with the content
    return content


def retrieved(output: torch.Tensor) -> float:
    """Fraction of positions whose output is (almost) the needle's value."""
    return ((output - values[needle]).norm(dim=-1) < 0.1).float().mean().item()


window_mask = sliding_window_mask(n_task, 4)
global_mask = longformer_pattern(n_task, 4, [0]).mask()
print(f"dense, 1 layer:                     {retrieved(spread(None, 1)):.2f} of positions retrieve the needle")
for n_layers in (1, 2, 3, 4):
    predicted = receptive_field(window_mask, n_layers)[-1, :, needle].float().mean().item()
    print(f"sliding window w=4, {n_layers} layer(s):     {retrieved(spread(window_mask, n_layers)):.2f}"
          f"   (receptive field of section 7: {predicted:.2f})")
print(f"Longformer w=4 + global, 1 layer:   {retrieved(spread(global_mask, 1)):.2f}")
print(f"Longformer w=4 + global, 2 layers:  {retrieved(spread(global_mask, 2)):.2f}")

# %% [markdown]
# The window alone reaches $9/64 = 0.14$ of the positions in one layer, and every further layer
# adds $w = 4$ positions on each side (fewer once the reach hits the start of the sequence): 17,
# then 23, then 27 positions, exactly the receptive field of section 7. Depth extends the reach,
# but only linearly: covering all 64 positions this way takes many layers. One global token does
# it in two, for the cost of one extra row and column. BigBird adds random links for the same
# reason: short paths between any two tokens.

# %% [markdown]
# ## 11. Local patterns can be a trap: overfitting, and what regularisation does
#
# Restricting attention to neighbours is a bet that nearby tokens matter most. A model can make the
# same bet on its own, and lose it: when a **local** cue happens to predict the answer on the
# training data, attention learns to read that cue instead of the real evidence, and fails on data
# where the cue means nothing. A small, fully computed case:
#
# - 16 tokens; the label says whether token `A` occurs among the first 14 (when it does, 3 times);
# - in training, the token just before the last one is `B` exactly when the label is 1: a spurious
#   local cue, right next to the position that answers;
# - on held-out data the cue is random, so only the real evidence (the `A`s) predicts the label;
# - the model: token and position embeddings, one attention head whose query is the last token, a
#   linear read-out; 150 steps of Adam on fresh batches, from seeds 0 to 3.
#
# Three ways to train it: plain; with **attention dropout** (each weight zeroed with probability
# 0.3 during training, the usual regulariser of attention layers); and with **cue noise** (in 20 %
# of the training examples the cue is redrawn at random, a data-side regulariser).

# %%
n_seq, vocab, width_probe, token_a, token_b = 16, 8, 16, 1, 0


def cue_batch(size: int, cue_follows_label: bool, generator: torch.Generator, cue_noise: float = 0.0):
    """Sequences (size, 16), labels (size,): A three times when the label is 1; the cue B at position 14."""
    tokens = torch.randint(2, vocab, (size, n_seq), generator=generator)
    labels = torch.randint(0, 2, (size,), generator=generator)
    slots = torch.rand(size, n_seq - 2, generator=generator).argsort(-1)[:, :3]  # 3 distinct positions
    has_a = torch.zeros(size, n_seq, dtype=torch.bool).scatter_(1, slots, True) & labels[:, None].bool()
    tokens = tokens.masked_fill(has_a, token_a)
    cue = labels.clone() if cue_follows_label else torch.randint(0, 2, (size,), generator=generator)
    redraw = torch.rand(size, generator=generator) < cue_noise
    cue = torch.where(redraw, torch.randint(0, 2, (size,), generator=generator), cue)
    tokens[:, n_seq - 2] = torch.where(cue.bool(), token_b, tokens[:, n_seq - 2])
    return tokens, labels


class CueProbe(torch.nn.Module):
    """One attention head read at the last position; attention dropout on its weights during training."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.token, self.position = torch.nn.Embedding(vocab, width_probe), torch.nn.Embedding(n_seq, width_probe)
        self.w_q, self.w_k, self.w_v = (torch.nn.Linear(width_probe, width_probe) for _ in range(3))
        self.readout, self.dropout = torch.nn.Linear(width_probe, 1), dropout

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.token(tokens) + self.position(torch.arange(n_seq))  # (B, 16, width)
        scores = self.w_q(h[:, -1:]) @ self.w_k(h).transpose(1, 2) / width_probe**0.5  # (B, 1, 16)
        weights = F.dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)
        return self.readout((weights @ self.w_v(h))[:, 0]).squeeze(-1), weights[:, 0]  # logits (B,), (B, 16)


def train_probe(seed: int, dropout: float = 0.0, cue_noise: float = 0.0) -> tuple[float, float, float]:
    """Train; return training accuracy, held-out accuracy (cue random) and the mean weight on the cue."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    probe = CueProbe(dropout)
    optimizer = torch.optim.Adam(probe.parameters(), lr=3e-3)
    for _ in range(150):
        tokens, labels = cue_batch(64, True, generator, cue_noise)
        loss = F.binary_cross_entropy_with_logits(probe(tokens)[0], labels.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probe.eval()
    test_generator = torch.Generator().manual_seed(1000)  # the same evaluation data for every model
    with torch.no_grad():
        train_tokens, train_labels = cue_batch(2000, True, test_generator)
        held_tokens, held_labels = cue_batch(2000, False, test_generator)
        train_logits = probe(train_tokens)[0]
        held_logits, held_weights = probe(held_tokens)
    accuracy = lambda logits, labels: ((logits > 0) == labels.bool()).float().mean().item()  # noqa: E731
    return accuracy(train_logits, train_labels), accuracy(held_logits, held_labels), held_weights[:, -2].mean().item()


probe_results = {}
for name, options in {"plain": {}, "attention dropout 0.3": {"dropout": 0.3}, "cue noise 20 %": {"cue_noise": 0.2}}.items():
    probe_results[name] = [train_probe(seed, **options) for seed in range(4)]
    print(f"{name:<22} training acc {[round(r[0], 2) for r in probe_results[name]]}   "
          f"held-out acc {[round(r[1], 2) for r in probe_results[name]]}   "
          f"weight on the cue {[round(r[2], 2) for r in probe_results[name]]}")

# %% [markdown]
# Every model is perfect on data like its training data, so training accuracy cannot tell them
# apart. Held out, the plain model of seeds 0 and 1 falls to chance: it put most of its weight on
# the cue next to it and learned nothing else. That is overfitting to a local pattern, and which
# seed falls into it is luck. Attention dropout, the standard regulariser of attention weights, is
# no cure here: dropping weights at random rewards using *every* cue that predicts the label, the
# spurious one included. It lifts seed 0 from 0.48 to 0.74, drops seed 3 from 0.98 to 0.74 and
# leaves seed 1 at chance; 0.74 is the accuracy of a model that says "yes" when it sees either
# the `A`s or the cue. What removes the shortcut is training data in
# which the shortcut sometimes fails: with the cue redrawn in 20 % of the examples, every seed
# ignores it and reads the `A`s. Regularisation helps against a spurious local pattern only when
# it makes that pattern unreliable during training.

# %% [markdown]
# ## Your turn
#
# Open [the exercises](../exercises/10_sparse_attention.ipynb): build the sliding-window mask,
# Longformer's global + local mask, and block-sparse attention over a layout. Each check names
# the usual mistakes: a window off by one, a window that looks into the future, global tokens as
# rows but not columns, tiles skipped that were partly needed, a softmax normalised per tile.
#
# ## Summary
#
# - Dense attention's time and memory grow as $N^2$: the score matrix is the wall.
# - A sparse pattern is a mask; its saving is real only when the kernel never computes the
#   masked pairs: block-sparse visits only the layout's tiles, the sliding window reads one band.
# - Sparse attention equals dense attention under the same mask, to float32 rounding.
# - Local patterns lose long-range links in one layer; depth, global tokens, strides and random
#   blocks bring them back.
# - A model can also *overfit* to a local pattern that happens to predict its training data;
#   held-out data shows it, and only a regulariser that makes the pattern unreliable in training
#   (here, noise on the cue; attention dropout was not enough) removes it.
#
# **Next:** lesson 11 keeps attention dense but never stores the $N \times N$ matrix either:
# FlashAttention's tiling and online softmax.
