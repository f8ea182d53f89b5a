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
# # 11 · Flash attention: exact attention, one tile at a time
#
# **You will be able to**
# 1. explain why attention is limited by memory traffic rather than arithmetic, using the gap
#    between slow, large memory (HBM) and fast, small memory (SRAM);
# 2. derive the **online softmax**: a softmax computed in one pass over blocks of scores, with a
#    running maximum $m$ and a running sum $\ell$ that are rescaled whenever $m$ grows;
# 3. write the **tiled forward pass** of FlashAttention, which gives exactly the same output as
#    ordinary attention without ever holding the $N \times N$ score matrix;
# 4. measure its memory (linear in $N$ instead of quadratic) and count its reads and writes of
#    slow memory with the IO model of the FlashAttention paper.
#
# **Builds on:** [lesson 04](04_softmax.ipynb) (the stable softmax and the log-sum-exp) and
# [lesson 05](05_masking.ipynb) (the causal mask).

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from attention_course import logsumexp, scaled_dot_product_attention, softmax
from attention_course.flash import (
    flash_attention,
    merge_attention_partials,
    online_softmax,
    tiled_attention,
    tiled_attention_steps,
)
from attention_course.io_model import (
    flash_attention_io,
    flash_block_sizes,
    standard_attention_io,
    tiled_attention_io,
)
from attention_course.measure import best_seconds, peak_memory_bytes

_ = torch.manual_seed(0)  # every random number below is the same on every run

# %% [markdown]
# ## 1. Where the time goes: memory, not arithmetic
#
# A GPU has two kinds of memory. **HBM** is large (40–80 GB on an A100) and sits off the chip;
# **SRAM** is tiny (192 KB next to each of the 108 streaming multiprocessors) and about ten times
# faster. Every number a kernel uses must travel from HBM to SRAM and back.
#
# Standard attention computes $S = QK^\top$, **writes** the $N \times N$ matrix $S$ to HBM,
# reads it back to compute $P = \mathrm{softmax}(S)$, writes $P$, and reads it again for $PV$.
# That is a few arithmetic operations for every number moved. A chip is **memory-bound** when
# its arithmetic intensity (FLOPs per byte moved) is below the ratio of its compute speed to its
# memory bandwidth. The A100's numbers (from its datasheet and the FlashAttention paper):

# %%
A100_FLOPS = 312e12  # FP16 tensor-core operations per second
A100_HBM_BYTES_PER_S = 1.5e12  # HBM bandwidth (40 GB model)
A100_SRAM_NUMBERS = 100 * 1024 // 4  # ~100 KB of SRAM per SM for the tiles, in float32 numbers
ridge = A100_FLOPS / A100_HBM_BYTES_PER_S
print(f"the A100 needs {ridge:.0f} FLOPs per byte moved to keep its arithmetic units busy")

n, d = 4096, 64
flops = 4 * n * n * d  # two N x N x d matrix products (the softmax adds a few per score)
standard_bytes = 2 * standard_attention_io(n, d).total  # float16: 2 bytes per number
print(f"standard attention, N={n}, d={d}: {flops / standard_bytes:.0f} FLOPs per byte -> memory-bound")

# %% [markdown]
# 32 FLOPs per byte against the 208 the chip needs: the arithmetic units wait for memory most of
# the time. Doing fewer FLOPs would not help. Moving fewer bytes does.
#
# FlashAttention's idea: load a **tile** of $Q$, $K$ and $V$ into SRAM, do everything for that
# tile there (scores, softmax, the product with $V$), and write only the output back. The
# $N \times N$ matrices are never written to HBM. The obstacle is the softmax: each weight
# $e^{s_j} / \sum_{j'} e^{s_{j'}}$ depends on **all** the scores of its row, but a tile only
# sees some of them. The next two sections remove that obstacle.
#
# (A CPU has the same hierarchy under other names: DRAM, then the L3, L2 and L1 caches. The
# tiled code in this lesson runs on the CPU, where a tile that stays in cache is what pays.)

# %% [markdown]
# ## 2. Online softmax, on a list of numbers
#
# The stable softmax of lesson 04 makes **three** passes over the scores: find the maximum $m$,
# sum $e^{x_j - m}$, divide. Can the first two be done in **one** pass, reading each score once?
#
# Keep, after reading $x_1 \dots x_t$, the maximum so far $m_t$ and the sum so far
# **relative to it**, $\ell_t = \sum_{j \le t} e^{x_j - m_t}$. When $x_{t+1}$ arrives:
#
# $$m_{t+1} = \max(m_t, x_{t+1}), \qquad
#   \ell_{t+1} = \ell_t\, e^{m_t - m_{t+1}} + e^{x_{t+1} - m_{t+1}}.$$
#
# The factor $e^{m_t - m_{t+1}}$ converts the old sum from the old maximum to the new one (it is
# 1 when the maximum did not change, and less than 1 when it grew). Every exponent stays $\le 0$,
# so nothing overflows, even for scores in the hundreds.

# %%
scores = [3.0, 1.0, 6.0, 2.0, 9.0]
m, l = float("-inf"), 0.0
for x in scores:
    m_new = max(m, x)
    l = l * math.exp(m - m_new) + math.exp(x - m_new)  # rescale the old sum, add the new term
    m = m_new
    print(f"read {x:3.0f}:  m = {m:3.0f}   l = {l:.4f}")

online = [math.exp(x - m) / l for x in scores]
print("online :", [round(w, 4) for w in online])
print("softmax:", [round(w, 4) for w in softmax(torch.tensor(scores)).tolist()])

# %% [markdown]
# ## 3. Online softmax, block by block
#
# Nothing changes when the scores arrive in **blocks** instead of one at a time: take the
# block's maximum, then
#
# $$m' = \max\big(m, \max_{j \in B} x_j\big), \qquad
#   \ell' = \ell\, e^{m - m'} + \sum_{j \in B} e^{x_j - m'}.$$
#
# `online_softmax` does this over a list of blocks (the rows of a tensor at once) and checks
# itself against the ordinary softmax of the concatenation:

# %%
blocks = [torch.randn(3, 4) * 5, torch.randn(3, 2) * 5 + 10, torch.randn(3, 5) * 5]  # 3 rows, 11 scores each
ours = online_softmax(blocks)
expected = softmax(torch.cat(blocks, dim=-1))
print("rows sum to:", ours.sum(dim=-1).round(decimals=5).tolist())
print("largest difference from the softmax of the concatenation < 1e-6:", bool((ours - expected).abs().max() < 1e-6))

# %% [markdown]
# ### Merging two partial results
#
# The same rescaling merges two **finished** partial results. Suppose we attended to the first
# half of the keys and, separately, to the second half, keeping each part's normalised output
# $o_a, o_b$ and log-sum-exp $\mathrm{lse}_a = \log \sum_{j \in a} e^{s_j}$. The full softmax
# gives each part a share of the total weight in proportion to $e^{\mathrm{lse}}$:
#
# $$\mathrm{lse} = \log\big(e^{\mathrm{lse}_a} + e^{\mathrm{lse}_b}\big), \qquad
#   o = e^{\mathrm{lse}_a - \mathrm{lse}}\, o_a + e^{\mathrm{lse}_b - \mathrm{lse}}\, o_b .$$
#
# This is how attention is split across GPUs (ring attention) or across the keys of one long
# sequence during decoding (flash-decoding).

# %%
q, k, v = torch.randn(6, 8), torch.randn(10, 8), torch.randn(10, 8)  # 6 queries, 10 keys
half_a = tiled_attention(q, k[:4], v[:4])  # (output, lse) over keys 0..3
half_b = tiled_attention(q, k[4:], v[4:])  # over keys 4..9
merged, merged_lse = merge_attention_partials(*half_a, *half_b)
print("merged halves equal attention over all keys:",
      bool(torch.allclose(merged, scaled_dot_product_attention(q, k, v), atol=1e-6)))
print("merged lse equals the log-sum-exp of all scores:",
      bool(torch.allclose(merged_lse, logsumexp(q @ k.T / math.sqrt(8)), atol=1e-6)))

# %% [markdown]
# ## 4. The tiled forward pass
#
# Now attention. Cut $Q$ into tiles of $B_q$ rows and $K, V$ into tiles of $B_k$ rows. For one
# query tile $Q_i$, keep per row the running maximum $m$, the running sum $\ell$ and an
# **un-normalised output** $o$, all relative to $m$. For each key tile $K_j, V_j$:
#
# $$S = Q_i K_j^\top / \sqrt{d_k}, \qquad m' = \max(m, \operatorname{rowmax} S), \qquad
#   P = e^{S - m'}, \qquad \alpha = e^{m - m'},$$
# $$\ell \leftarrow \alpha\,\ell + \operatorname{rowsum} P, \qquad o \leftarrow \alpha\, o + P\, V_j,
#   \qquad m \leftarrow m'.$$
#
# The output is a weighted sum of values, so it is rescaled by the same $\alpha$ as the sum.
# After the last key tile, $o / \ell$ is the exact attention output and $m + \log\ell$ the row's
# log-sum-exp, which the backward pass uses to recompute the weights tile by tile. The largest
# temporary is one $B_q \times B_k$ tile of scores.
#
# With a causal mask, a key tile that starts after the query tile's last query is skipped
# entirely (about half of all tiles), and only the tiles that straddle the diagonal need the mask.
#
# `tiled_attention` does this for all heads at once (one batched matrix product per tile):

# %%
q, k, v = torch.randn(3, 1000, 64), torch.randn(3, 1000, 64), torch.randn(3, 1000, 64)  # (heads, N, d)
for causal in (False, True):
    out, lse = tiled_attention(q, k, v, causal=causal, block_q=128, block_k=96)  # N is not a multiple of either
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    print(f"causal={causal!s:5}  output {tuple(out.shape)}, lse {tuple(lse.shape)},"
          f" largest difference from PyTorch < 1e-5: {bool((out - reference).abs().max() < 1e-5)}")

# %% [markdown]
# ### Step through the tiles
#
# The widget runs the algorithm on one small head (8 queries, 12 keys, tiles of 4 × 4) and
# stops after the tile you choose. Left: the tiles visited so far (grey) and the current one
# (red), over the final attention weights. Middle: $m$ and $\ell$ of the current query tile's
# rows. Right: the partial output $o / \ell$ of those rows (dots) moving towards the final
# output (crosses) as tiles are added. Watch $\ell$ shrink when a tile raises $m$: that is the
# rescaling. Tick *causal* to see the skipped tiles.

# %%
# Later keys are longer, so their scores are larger: the running maximum keeps moving.
small_q, small_k, small_v = torch.randn(8, 2), torch.randn(12, 2) * torch.linspace(0.5, 3, 12)[:, None], torch.randn(12, 2)


def show_tiles(step: int, causal: bool) -> None:
    steps = tiled_attention_steps(small_q, small_k, small_v, causal, block_q=4, block_k=4)
    step = min(step, len(steps))
    current = steps[step - 1]
    final, weights = scaled_dot_product_attention(small_q, small_k, small_v, causal=causal, return_weights=True)
    rows = torch.arange(current.q_start, current.q_stop)
    fig, (ax_map, ax_stats, ax_out) = plt.subplots(1, 3, figsize=(14, 3.8))
    ax_map.imshow(weights, cmap="Blues", vmin=0, vmax=float(weights.max()))
    for seen in steps[:step]:
        is_current = seen is current
        ax_map.add_patch(Rectangle((seen.k_start - 0.5, seen.q_start - 0.5), seen.k_stop - seen.k_start,
                                   seen.q_stop - seen.q_start, fill=not is_current, alpha=1 if is_current else 0.35,
                                   facecolor="grey", edgecolor="red" if is_current else "grey", linewidth=3))
    ax_map.set(title=f"tile {step} of {len(steps)}: queries {current.q_start}-{current.q_stop - 1}, "
               f"keys {current.k_start}-{current.k_stop - 1}", xlabel="key", ylabel="query")
    width = 0.4
    ax_stats.bar(rows - width / 2, current.running_max, width, label="running max m")
    ax_stats.bar(rows + width / 2, current.running_sum, width, label="running sum ℓ")
    ax_stats.set(title="m and ℓ of this query tile", xlabel="query", ylabel="value", xticks=rows.tolist())
    ax_stats.legend()
    ax_out.scatter(*current.partial_output.T, label="partial output o / ℓ")
    ax_out.scatter(*final[rows].T, marker="x", s=80, label="final output")
    for row, (x, y), (fx, fy) in zip(rows.tolist(), current.partial_output.tolist(), final[rows].tolist(), strict=True):
        ax_out.plot([x, fx], [y, fy], ":", color="grey")  # how far this row still has to go
        ax_out.annotate(str(row), (x, y), textcoords="offset points", xytext=(4, 4))
    ax_out.set(title="partial against final output", xlabel="output feature 0", ylabel="output feature 1")
    ax_out.legend()
    plt.tight_layout()
    plt.show()


n_tiles = {causal: len(tiled_attention_steps(small_q, small_k, small_v, causal, 4, 4)) for causal in (False, True)}
step_slider = widgets.IntSlider(value=1, min=1, max=n_tiles[False], description="tile")
causal_box = widgets.Checkbox(value=False, description="causal")
causal_box.observe(lambda change: setattr(step_slider, "max", n_tiles[change["new"]]), names="value")

# %%
# NBVAL_IGNORE_OUTPUT
display(widgets.HBox([step_slider, causal_box]),  # noqa: F821 (display is an IPython built-in)
        widgets.interactive_output(show_tiles, {"step": step_slider, "causal": causal_box}))

# %% [markdown]
# The numbers behind the widget, for the first query tile (queries 0–3): $m$ never decreases;
# whenever it jumps, the old $\ell$ is multiplied by $e^{m - m'} < 1$ before the new tile's terms
# are added; and after the last key tile the partial output is the final output.

# %%
steps = tiled_attention_steps(small_q, small_k, small_v, block_q=4, block_k=4)
for s in steps[:3]:
    print(f"keys {s.k_start:2}-{s.k_stop - 1:2}:  m = {[round(x, 2) for x in s.running_max.tolist()]}"
          f"  l = {[round(x, 2) for x in s.running_sum.tolist()]}")
final_rows = scaled_dot_product_attention(small_q, small_k, small_v)[:4]
print("after the last key tile, partial output == final output:",
      bool(torch.allclose(steps[2].partial_output, final_rows, atol=1e-6)))
causal_steps = tiled_attention_steps(small_q, small_k, small_v, causal=True, block_q=4, block_k=4)
print(f"causal: {len(causal_steps)} of {len(steps)} tiles visited")

# %% [markdown]
# ### The backward pass recomputes instead of storing
#
# Training needs gradients. Standard attention keeps $P$ ($N \times N$) for the backward pass.
# The tiled backward keeps only $Q, K, V$, the output and the log-sum-exp ($O(Nd)$) and
# recomputes each tile's weights as $P = e^{S - \mathrm{lse}}$: more FLOPs, far less memory
# traffic, and on a GPU faster overall. `flash_attention` wraps the tiled forward and that backward
# in a `torch.autograd.Function`; its gradients match autograd through the dense formula:

# %%
q64, k64, v64 = (torch.randn(2, 50, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
grads_tiled = torch.autograd.grad(flash_attention(q64, k64, v64, True, 16, 16).sum(), (q64, k64, v64))
grads_dense = torch.autograd.grad(scaled_dot_product_attention(q64, k64, v64, causal=True).sum(), (q64, k64, v64))
print("dQ, dK, dV equal autograd's:", all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads_tiled, grads_dense)))

# %% [markdown]
# ## 5. Memory: quadratic against linear
#
# `peak_memory_bytes` replays the allocations PyTorch's profiler recorded while a function ran
# and returns the most bytes held at once. Dense attention (the package's
# `scaled_dot_product_attention`, which builds the score and weight matrices) against the tiled
# pass, for 2 heads of width 64:

# %%
lengths = [256, 512, 1024, 2048, 4096]
dense_mib, tiled_mib = [], []
for n in lengths:
    q, k, v = (torch.randn(2, n, 64) for _ in range(3))
    dense_mib.append(peak_memory_bytes(lambda: scaled_dot_product_attention(q, k, v)) / 2**20)
    tiled_mib.append(peak_memory_bytes(lambda: tiled_attention(q, k, v)) / 2**20)
    print(f"N = {n:5}: dense {dense_mib[-1]:7.1f} MiB   tiled {tiled_mib[-1]:5.1f} MiB")

# %%
fig, ax = plt.subplots(figsize=(6, 4))
ax.loglog(lengths, dense_mib, "o-", label="dense (N × N matrices)")
ax.loglog(lengths, tiled_mib, "s-", label="tiled (one 512 × 256 tile)")
ax.set(title="Peak memory of one attention call (2 heads, d = 64)", xlabel="sequence length N",
       ylabel="peak memory (MiB)")
ax.set_xticks(lengths, [str(n) for n in lengths])
ax.minorticks_off()
ax.legend()
plt.show()

# %% [markdown]
# On a log-log plot a slope of 2 is quadratic and a slope of 1 linear. Doubling $N$ from 2048 to 4096:

# %%
print(f"dense x{dense_mib[-1] / dense_mib[-2]:.1f}, tiled x{tiled_mib[-1] / tiled_mib[-2]:.1f};"
      f" at N = 4096 the tiled pass needs {dense_mib[-1] / tiled_mib[-1]:.0f} times less memory")

# %% [markdown]
# ## 6. Counting reads and writes: the IO model
#
# The paper counts the numbers moved between HBM and an SRAM that holds $M$ numbers
# (`attention_course.io_model`):
#
# * standard attention reads and writes $S$ and $P$: $\Theta(Nd + N^2)$;
# * FlashAttention uses key tiles of $B_c = \lceil M / 4d \rceil$ rows, so that a tile of $K$, $V$,
#   $Q$ and $O$ fits in SRAM, and passes over $Q$ and $O$ once per key tile:
#   $T_c = \lceil N / B_c \rceil \approx 4Nd/M$ passes of $O(Nd)$ each, i.e. $\Theta(N^2 d^2 / M)$.
#
# The standard count is about $4N^2$ whatever the SRAM; the flash count is about $12 N^2 d^2 / M$ and
# falls in proportion as the SRAM grows. So the tiled algorithm wins once $M > 3d^2$: with
# $d = 64$ and an A100's SRAM, by about a factor of two in numbers moved (and it never writes the
# $N \times N$ matrices, which also saves their memory).

# %%
d, sram = 64, A100_SRAM_NUMBERS
print("A100 tiles (B_r, B_c) for d = 64:", flash_block_sizes(d, sram))
ns = [512, 1024, 2048, 4096, 8192, 16384]
fig, (ax_n, ax_m) = plt.subplots(1, 2, figsize=(12, 4))
ax_n.loglog(ns, [standard_attention_io(n, d).total for n in ns], "o-", label="standard, Θ(Nd + N²)")
ax_n.loglog(ns, [flash_attention_io(n, d, sram).total for n in ns], "s-", label=f"flash, M = {sram}")
ax_n.set(title="HBM accesses against N (d = 64)", xlabel="sequence length N", ylabel="numbers read + written")
ax_n.legend()
srams = [2**p for p in range(10, 19)]
ax_m.loglog(srams, [flash_attention_io(4096, d, m).total for m in srams], "s-", color="tab:orange", label="flash")
ax_m.axhline(standard_attention_io(4096, d).total, color="tab:blue", label="standard")
ax_m.axvline(3 * d * d, color="grey", linestyle=":", label="M = 3d²")
ax_m.set(title="HBM accesses against SRAM size (N = 4096, d = 64)", xlabel="SRAM size M (numbers)",
         ylabel="numbers read + written")
ax_m.legend()
plt.show()

# %%
for n in (1024, 4096, 16384):
    ratio = standard_attention_io(n, d).total / flash_attention_io(n, d, sram).total
    print(f"N = {n:5}: flash moves {ratio:.1f} times fewer numbers than standard attention")
print("doubling M from 2**13 to 2**14 divides flash's traffic by",
      round(flash_attention_io(4096, d, 2**13).total / flash_attention_io(4096, d, 2**14).total, 2))

# %% [markdown]
# The counts move with the tiling. FlashAttention-2 swaps the loops (query tiles outside, as in
# `tiled_attention`): each query tile is read once and $K, V$ are re-read once per query tile,
# so the traffic falls as $1/B_q$ while $B_k$ only sets how much SRAM a tile needs:

# %%
for block_q in (64, 128, 256):
    count = tiled_attention_io(4096, 64, block_q, 64)
    causal_count = tiled_attention_io(4096, 64, block_q, 64, causal=True)
    print(f"B_q = {block_q:3}: {count.total / 1e6:5.1f} M numbers, causal {causal_count.total / 1e6:5.1f} M")

# %% [markdown]
# ## 7. How fast is it on this CPU?
#
# PyTorch's `scaled_dot_product_attention` runs a fused C++ flash kernel on the CPU. Our tiled
# pass is plain PyTorch: a Python loop over tiles, each doing a few large batched operations.
# Big tiles keep the Python overhead small; tiles that fit in the caches keep the memory traffic
# small. (The full sweep over N is `benchmarks/bench_flash.py`; timings on a shared machine vary.)

# %%
# NBVAL_IGNORE_OUTPUT
q, k, v = (torch.randn(1, 8, 2048, 64) for _ in range(3))  # batch 1, 8 heads, N = 2048, d = 64
t_sdpa = best_seconds(lambda: F.scaled_dot_product_attention(q, k, v))
t_tiled = best_seconds(lambda: tiled_attention(q, k, v))
t_dense = best_seconds(lambda: scaled_dot_product_attention(q, k, v))
print(f"PyTorch SDPA {t_sdpa * 1e3:6.1f} ms\ntiled        {t_tiled * 1e3:6.1f} ms  ({t_tiled / t_sdpa:.2f}x SDPA)"
      f"\ndense        {t_dense * 1e3:6.1f} ms  ({t_dense / t_sdpa:.2f}x SDPA)")

# %% [markdown]
# ## 8. Where FlashAttention-2 and -3 go further
#
# * **FlashAttention-2** (2023) puts the query tiles in the outer loop (as we did), so each
#   query tile's $m$, $\ell$ and output stay in registers and are written once; it splits the
#   work of one head across thread blocks along the sequence, so long sequences with few heads
#   still fill the GPU; and it keeps the non-matmul work (the rescaling) to a minimum, dividing by
#   $\ell$ once at the end, because a GPU does matrix products ~16 times faster than other arithmetic.
# * **FlashAttention-3** (2024, for H100) overlaps the two matrix products and the softmax of
#   different tiles, with separate warps loading data (warp specialisation, asynchronous copies
#   with the TMA), and runs in **FP8** with block-wise scaling and a rotation of $Q$ and $K$ that
#   spreads outliers, reaching ~75% of the chip's peak.
# * Later kernels even skip most rescalings: they rescale only when the maximum grows by more
#   than a threshold, since a slightly stale maximum cannot overflow.
#
# Lesson 11b writes the tiled forward pass as a Triton GPU kernel.
#
# ## Your turn
#
# Open [exercises/11_flash_attention.ipynb](../exercises/11_flash_attention.ipynb): write
# `online_softmax` and `tiled_attention` (with the causal case and the log-sum-exp). The check
# cells name the classic bugs: forgetting to rescale, dividing by $\ell$ inside the loop,
# skipping the diagonal tile.
#
# ## Summary
#
# * Attention is memory-bound: the $N \times N$ matrices cost far more to move than to compute.
# * The online softmax keeps a running maximum $m$ and sum $\ell$; when $m$ grows, everything
#   accumulated so far is multiplied by $e^{m_\text{old} - m_\text{new}}$.
# * Tiling $Q$, $K$, $V$ and carrying $(m, \ell, o)$ across key tiles gives **exact** attention with
#   memory linear in $N$; $m + \log \ell$ is all the backward pass needs.
# * HBM traffic drops from $\Theta(Nd + N^2)$ to $\Theta(N^2 d^2 / M)$.
#
# **Next:** [11b · flash attention as a GPU kernel](11b_flash_triton.ipynb).
