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
# 4. derive and write the **tiled backward pass** of FlashAttention-2, which recomputes the weights
#    from the saved log-sum-exp instead of storing them;
# 5. measure its memory (linear in $N$ instead of quadratic), count the tiles a causal mask lets it
#    skip, and count its reads and writes of slow memory with the IO model of the FlashAttention paper.
#
# **Builds on:** [lesson 04](04_softmax.ipynb) (the stable softmax and the log-sum-exp) and
# [lesson 05](05_masking.ipynb) (the causal mask).

# %%
import math
import os
from collections import Counter

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from attention_course import logsumexp, scaled_dot_product_attention, softmax
from attention_course.flash import (
    BLOCK_K,
    BLOCK_Q,
    flash_attention,
    flash_decoding,
    merge_attention_partials,
    online_softmax,
    tiled_attention,
    tiled_attention_backward,
    tiled_attention_steps,
    visited_tiles,
)
from attention_course.io_model import (
    flash_attention_io,
    flash_block_sizes,
    standard_attention_io,
    tiled_attention_io,
)
from attention_course.measure import background_cpu_ms, best_seconds, largest_allocation, peak_memory_bytes
from attention_course.teaching.widgets import tile_stepper

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
BYTES = 2  # float16: every count of numbers below becomes bytes at 2 bytes per number
A100_SRAM_NUMBERS = 100 * 1024 // BYTES  # ~100 KB of the SM's on-chip memory for the tiles, in float16 numbers
A100_ON_CHIP_NUMBERS = 192 * 1024 // BYTES  # all of it (L1 + shared memory per SM)
ridge = A100_FLOPS / A100_HBM_BYTES_PER_S
print(f"the A100 needs {ridge:.0f} FLOPs per byte moved to keep its arithmetic units busy")

n, d = 4096, 64
flops = 4 * n * n * d  # two N x N x d matrix products (the softmax adds a few per score)
standard_bytes = BYTES * standard_attention_io(n, d).total
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
# ### Flash-decoding: splitting one query's keys
#
# When a model generates text, each step has **one** new query per head, attending to a cache of
# thousands of keys. A GPU kernel that gives each (query tile, head) one block of threads then runs
# only as many blocks as there are heads, say 32 on a chip with 108 or 132 multiprocessors, and each
# block walks the whole cache alone. Flash-decoding splits the cache into chunks instead: each chunk's
# attention $(o_c, \mathrm{lse}_c)$ depends on that chunk only, so all chunks of all heads run at once,
# and a small final step merges them with the formula above. The merge is exact, whatever the split:

# %%
q_new = torch.randn(32, 1, 64)  # 32 heads, one new token
k_cache, v_cache = torch.randn(32, 8192, 64), torch.randn(32, 8192, 64)
full = F.scaled_dot_product_attention(q_new, k_cache, v_cache)
for n_splits in (1, 4, 16, 64):
    out, lse = flash_decoding(q_new, k_cache, v_cache, n_splits)
    print(f"{n_splits:2} chunks of {8192 // n_splits:4} keys: {32 * n_splits:4} independent pieces of work, "
          f"largest difference from full attention {(out - full).abs().max():.1e}")

# %% [markdown]
# The differences are float32 rounding (a few $10^{-7}$): the chunks sum the same terms in another
# order. More chunks mean more independent work and a larger merge, which costs
# $O(\text{chunks} \cdot d)$ per query against the $O(S\, d)$ of the attention itself.
#
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
# With a causal mask the key tiles fall into three kinds: a tile **wholly below** the diagonal
# (every key before every query of the tile) is used without a mask; a tile the diagonal
# **crosses** gets the mask $S_{ij} = -\infty$ for $j > i$; a tile **wholly above** it (every key
# after every query) is never visited. The loop stops at the query tile's last query, so the third
# kind costs nothing, not even a comparison.
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
# How many tiles does causal attention visit at $N = 4096$ with square $256 \times 256$ tiles?
# `visited_tiles` lists the tiles the loops visit, with whether each carries a mask:

# %%
n_tokens = 4096
all_tiles = visited_tiles(n_tokens, n_tokens, 256, 256, causal=False)
causal_tiles = visited_tiles(n_tokens, n_tokens, 256, 256, causal=True)
n_masked = sum(masked for _, _, masked in causal_tiles)
print(f"non-causal: {len(all_tiles)} tiles; causal: {len(causal_tiles)} visited "
      f"({len(causal_tiles) / len(all_tiles):.0%}), of which {n_masked} masked and "
      f"{len(causal_tiles) - n_masked} unmasked; {len(all_tiles) - len(causal_tiles)} never visited")

# %% [markdown]
# A little over half: the diagonal tiles are visited whole although part of them is masked. With
# $T = N / B_q$ query tiles (and $B_k$ dividing $B_q$) the fraction is $(T + 1) / 2T$, which tends to
# one half as the tiles shrink:

# %%
n_query_tiles = n_tokens // 256
print(f"(T + 1) / 2T for T = {n_query_tiles}: {(n_query_tiles + 1) / (2 * n_query_tiles):.4f},"
      f" counted: {len(causal_tiles) / len(all_tiles):.4f}")
#
# ### Step through the tiles
#
# The widget runs the algorithm on one small head (8 queries, 12 keys, tiles of 4 × 4) and
# stops after the tile you choose. Left: the tiles visited so far (grey) and the current one
# (red), over the final attention weights. Middle: $m$ and $\ell$ of the current query tile's
# rows. Right: the partial output $o / \ell$ of those rows (dots) moving towards the final
# output (crosses) as tiles are added. Watch $\ell$ shrink when a tile raises $m$: that is the
# rescaling. Tick *causal* to see the skipped tiles.

# %%
# NBVAL_IGNORE_OUTPUT
# Later keys are longer, so their scores are larger: the running maximum keeps moving.
small_q, small_k, small_v = torch.randn(8, 2), torch.randn(12, 2) * torch.linspace(0.5, 3, 12)[:, None], torch.randn(12, 2)
tile_stepper(small_q, small_k, small_v, block_q=4, block_k=4)

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
# ### The backward pass, line by line
#
# Training needs gradients. Standard attention keeps $P$ ($N \times N$) for the backward pass.
# FlashAttention keeps only $Q, K, V$, the output $O$ and the log-sum-exp ($O(Nd)$ numbers) and
# recomputes each tile's weights. Write the forward for one query row $i$ with
# $s = 1/\sqrt{d_k}$: $S_{ij} = s\, q_i \cdot k_j$, $P_{ij} = e^{S_{ij} - \mathrm{lse}_i}$,
# $O_i = \sum_j P_{ij} v_j$. Given $dO = \partial \mathcal{L} / \partial O$, the chain rule gives, one
# line at a time (each line is a line of `tiled_attention_backward`, on one tile):
#
# 1. **Recompute the weights.** $\mathrm{lse}_i$ is the log of the softmax's denominator, so
#    $P_{ij} = e^{S_{ij} - \mathrm{lse}_i}$ is the forward's weight exactly, from one tile of scores.
#    `p = torch.exp(q_tile @ k_tile.mT * scale - lse_tile[..., None])`
# 2. **Values.** $O_i = \sum_j P_{ij} v_j$ is linear in $v_j$: $dV_j = \sum_i P_{ij}\, dO_i$, i.e.
#    $dV \mathrel{+}= P^\top dO$ summed over query tiles.
#    `dv_tile += p.mT @ do_tile`
# 3. **Weights.** The same product, differentiated in $P$: $dP_{ij} = dO_i \cdot v_j$, i.e. $dP = dO\, V^\top$.
#    `dp = do_tile @ v_tile.mT`
# 4. **Scores.** The softmax's Jacobian is $\partial P_{ij} / \partial S_{ik} = P_{ij}(\delta_{jk} - P_{ik})$, so
#    $dS_{ik} = P_{ik}\big(dP_{ik} - \sum_j P_{ij}\, dP_{ij}\big)$. The sum runs over **all** keys of the
#    row, which one tile does not hold, but it equals $\sum_j P_{ij}\, dO_i \cdot v_j = dO_i \cdot O_i
#    =: D_i$: one number per row, computed once from $dO$ and $O$ before the loop.
#    `delta = (grad_out * out).sum(-1, keepdim=True)` then `ds = p * (dp - delta_tile)`
# 5. **Queries and keys.** $S_{ij} = s\, q_i \cdot k_j$ gives $dq_i = s \sum_j dS_{ij} k_j$ and
#    $dk_j = s \sum_i dS_{ij} q_i$: $dQ \mathrel{+}= s\, dS\, K$ and $dK \mathrel{+}= s\, dS^\top Q$.
#    `dq_tile += ds @ k_tile * scale` and `dk_tile += ds.mT @ q_tile * scale`
#
# With a causal mask the backward visits the same tiles as the forward and masks the same
# diagonal tiles ($P = 0$ above the diagonal, so no gradient flows to future keys). This is the
# last exercise of this lesson; the package's `tiled_attention_backward` batches the same lines
# (`torch.baddbmm`, in place). Against autograd through PyTorch's SDPA:

# %%
q, k, v = torch.randn(2, 4, 300, 32), torch.randn(2, 4, 260, 32), torch.randn(2, 4, 260, 48)  # L != S, d_v != d_k
grad_out = torch.randn(2, 4, 300, 48)
for causal in (False, True):
    out, lse = tiled_attention(q, k, v, causal=causal, block_q=64, block_k=48)  # ragged last tiles
    ours = tiled_attention_backward(q, k, v, out, lse, grad_out, causal=causal, block_q=64, block_k=48)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    theirs = torch.autograd.grad(F.scaled_dot_product_attention(*leaves, is_causal=causal), leaves, grad_out)
    print(f"causal={causal!s:5}  dQ, dK, dV equal autograd through SDPA within 1e-5:",
          all(bool((a - b).abs().max() < 1e-5) for a, b in zip(ours, theirs, strict=True)))

# %% [markdown]
# `flash_attention` wraps the tiled forward and this backward in a `torch.autograd.Function`, so
# `loss.backward()` uses them. What it saves for the backward pass is $Q, K, V, O$ and the
# log-sum-exp; autograd through the dense formula saves the $N \times N$ scores and weights too.
# The bytes each one saves (counted with a hook on autograd's saved tensors) and the peak memory of
# forward and backward together (`peak_memory_bytes`), for 2 heads of width 64:


# %%
def saved_bytes(attention, q, k, v) -> int:
    """Bytes autograd keeps between forward and backward (each storage once; the inputs themselves excluded)."""
    storages = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        if all(t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr() for x in (q, k, v)):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        attention(q, k, v)
    return sum(storages.values())


def train_step(attention, q, k, v) -> None:
    attention(q, k, v).sum().backward()


def dense(q, k, v):
    return scaled_dot_product_attention(q, k, v)


for n in (256, 512, 1024):
    q, k, v = (torch.randn(2, n, 64, requires_grad=True) for _ in range(3))
    dense_saved = saved_bytes(dense, q, k, v)
    print(f"N = {n:4}: saved for backward: dense {dense_saved / 2**20:5.1f} MiB"
          f" ({dense_saved / (2 * n * n * 4):.1f} N x N float32 matrices per head),"
          f" flash {saved_bytes(flash_attention, q, k, v) / 2**20:4.2f} MiB;   peak of forward + backward:"
          f" dense {peak_memory_bytes(lambda: train_step(dense, q, k, v)) / 2**20:5.1f} MiB,"
          f" flash {peak_memory_bytes(lambda: train_step(flash_attention, q, k, v)) / 2**20:4.1f} MiB")

# %% [markdown]
# The dense pass saves three $N \times N$ matrices per head (intermediate results of the softmax and
# the weights: each operation keeps what its own backward needs), growing 4× per doubling of $N$;
# flash saves the output and the log-sum-exp, growing 2×. The price is the recomputation: one more
# $QK^\top$ per tile in the backward pass.

# %% [markdown]
# ## 5. Memory: quadratic against linear
#
# `peak_memory_bytes` replays the allocations PyTorch's profiler recorded while a function ran
# and returns the most bytes held at once. Dense attention (the package's
# `scaled_dot_product_attention`, which builds the score and weight matrices) against the tiled
# pass, for 2 heads of width 64. (It runs the function on one thread, where the profiler sees
# every allocation; on $c$ cores the tiled pass holds $c$ tiles at once, see section 7.)

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
ax.loglog(lengths, tiled_mib, "s-", label="tiled (one tile of scores at a time)")
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
# falls in proportion as the SRAM grows. So the tiled algorithm wins once $M > 3d^2$, by a factor of
# about $M / 3d^2$. $M$ and the byte counts must use the same unit: in float16, 100 KB of an A100
# SM's on-chip memory holds 51,200 numbers, $M / 3d^2 \approx 4$ at $d = 64$; all 192 KB of it
# (L1 and shared memory together) would give about 7 (and flash never writes the $N \times N$
# matrices, which also saves their memory).

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
print(f"M = {sram} float16 numbers (100 KB), M / 3d^2 = {sram / (3 * d * d):.1f}")
for n in (1024, 4096, 16384):
    ratio = standard_attention_io(n, d).total / flash_attention_io(n, d, sram).total
    ratio_full = standard_attention_io(n, d).total / flash_attention_io(n, d, A100_ON_CHIP_NUMBERS).total
    print(f"N = {n:5}: flash moves {ratio:.1f} times fewer numbers than standard attention"
          f" ({ratio_full:.1f} with all 192 KB on chip)")
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
# **FlashAttention's own arithmetic intensity.** In this order each query tile reads $K$ and $V$
# once: about $2Nd \cdot N / B_q$ numbers for $4N^2 d$ FLOPs. In float16 (2 bytes a number) that is
# $4N^2 d / (4 N^2 d / B_q) = B_q$ FLOPs per byte: the intensity **is** the query-tile size.

# %%
n = 4096
for block_q in (64, 128, 256):
    intensity = flops / (BYTES * tiled_attention_io(n, 64, block_q, 64).total)
    print(f"B_q = {block_q:3}: {intensity:5.1f} FLOPs per byte (standard attention: "
          f"{flops / standard_bytes:.0f}; the A100 needs {ridge:.0f})")

# %% [markdown]
# With $B_q = 128$ the model says 124 FLOPs per byte: four times standard attention's 32, still
# under the 208 the chip needs. Real kernels do better than this count because the $K, V$ tiles
# that successive query tiles re-read are mostly found in the 40 MB L2 cache rather than in HBM;
# the model counts every re-read as HBM traffic.
#
# **Against the paper.** FlashAttention (Dao et al., 2022, Figure 2 left) measured GPT-2 medium's
# attention (N = 1024, d = 64, forward and backward, on an A100): **40.3 GB** of HBM reads and
# writes for the standard implementation against **4.4 GB** for FlashAttention, 9.2× less. The
# model's forward-only ratio at the same size:

# %%
model_ratio = standard_attention_io(1024, 64).total / flash_attention_io(1024, 64, A100_SRAM_NUMBERS).total
print(f"paper: {40.3 / 4.4:.1f}x less HBM traffic; model (forward, 100 KB of SRAM): {model_ratio:.1f}x;"
      f" model with all 192 KB: "
      f"{standard_attention_io(1024, 64).total / flash_attention_io(1024, 64, A100_ON_CHIP_NUMBERS).total:.1f}x")

# %% [markdown]
# They differ for reasons the model leaves out on purpose. The standard implementation the paper
# measured runs the masking, softmax and dropout as separate kernels, each reading and writing the
# $N \times N$ matrix, and its backward pass reads and writes several more $N \times N$ matrices
# ($P$, $dP$, $dS$): far more than the model's $4N^2$. FlashAttention's backward re-reads $Q, K, V$
# but writes no $N \times N$ matrix. The model counts one forward pass with the matrices written
# once; it gets the order right ($\Theta(N^2)$ against $\Theta(N^2 d^2 / M)$), not the constant.
#
# ## 7. How fast is it on this CPU?
#
# PyTorch's `scaled_dot_product_attention` runs a fused C++ flash kernel on the CPU. Our tiled
# pass is plain PyTorch: a Python loop over tiles, each doing a few large batched operations.
# What makes `tiled_attention` fast, compared with the exercise's version of the same loop:
#
# * **all heads in one operation per tile**: the batch and head axes are flattened into one, so
#   each tile is one `torch.bmm` over every head, and the Python loop runs
#   $\lceil L / B_q \rceil \cdot \lceil S / B_k \rceil$ times whatever the number of heads;
# * **one query tile per core**: query tiles are independent (FlashAttention-2 gives each one its
#   own block of GPU threads), so `tiled_attention` hands them to as many Python threads as
#   PyTorch has threads, each running single-threaded operations, the longest tiles (the last,
#   under a causal mask) first. No operation then waits for a second core. With multi-threaded
#   operations every one of them would, and while another program holds one core each such wait
#   can last a scheduler time slice (`bench_flash.py --load` times the tiled pass with a busy
#   neighbour);
# * **no multi-threaded operation in the calling thread either**: after one, OpenMP (PyTorch's
#   thread pool) keeps its idle thread spinning on a core, waiting for more work, for milliseconds
#   (the cell below prints how much CPU it burns after one SDPA call), and a tile thread would share
#   that core with it. So even the checks of the inputs run single-threaded. The same spinning
#   slows a tiled call made right after a multi-threaded one (`bench_flash.py`'s `alternating`
#   column); the cell times each function over consecutive calls;
# * **tile size, measured rather than derived**: `BLOCK_Q` × `BLOCK_K` scores per head (the tile
#   for 8 heads is printed below) was among the fastest sizes `bench_flash.py --block-q --block-k`
#   tried from 1k to 16k tokens; tiny tiles pay more Python per tile, and large query tiles leave
#   too few tiles to share between cores (the second cell below times $512 \times 256$ tiles at
#   $N = 1024$ under a causal mask: two query tiles, one with twice the other's key tiles);
# * **in-place updates**: `sub_`, `exp2_`, `mul_`, `baddbmm_` reuse the tile of scores and the
#   accumulators, so each tile allocates one buffer, not five;
# * **the scale applied to each query tile once**, in its own thread, in base 2 (`exp2` is cheaper
#   than `exp`), and the division by $\ell$ done once after the last key tile;
# * **causal tiles above the diagonal never visited**, and only diagonal tiles masked.
#
# (The full sweep over $N$, causal and not, the backward pass and a run with a busy neighbour is
# `benchmarks/bench_flash.py`; timings on a shared machine vary.)

# %%
# NBVAL_IGNORE_OUTPUT
print(f"tile of scores: 8 heads x {BLOCK_Q} x {BLOCK_K} x 4 B = {8 * BLOCK_Q * BLOCK_K * 4 / 2**20:.2f} MiB;"
      f" {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
q, k, v = (torch.randn(1, 8, 2048, 64) for _ in range(3))  # batch 1, 8 heads, N = 2048, d = 64
t_sdpa = best_seconds(lambda: F.scaled_dot_product_attention(q, k, v))
t_tiled = best_seconds(lambda: tiled_attention(q, k, v))
t_dense = best_seconds(lambda: scaled_dot_product_attention(q, k, v))
spin_ms = background_cpu_ms(lambda: F.scaled_dot_product_attention(q, k, v))
print(f"PyTorch SDPA {t_sdpa * 1e3:6.1f} ms\ntiled        {t_tiled * 1e3:6.1f} ms  ({t_tiled / t_sdpa:.2f}x SDPA)"
      f"\ndense        {t_dense * 1e3:6.1f} ms  ({t_dense / t_sdpa:.2f}x SDPA)"
      f"\nOpenMP's idle threads after one SDPA call: {spin_ms:.1f} ms of CPU in the next 50 ms")

# %%
# NBVAL_IGNORE_OUTPUT
q, k, v = (torch.randn(1, 8, 1024, 64) for _ in range(3))  # N = 1024, causal
key_tiles = Counter(i for i, _, _ in visited_tiles(1024, 1024, 512, 256, causal=True))
t_sdpa = best_seconds(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
t_tiled = best_seconds(lambda: tiled_attention(q, k, v, causal=True))
t_large = best_seconds(lambda: tiled_attention(q, k, v, causal=True, block_q=512, block_k=256))
print(f"N = 1024, causal: {BLOCK_Q} x {BLOCK_K} tiles {t_tiled / t_sdpa:.2f}x SDPA;"
      f" 512 x 256 tiles {t_large / t_sdpa:.2f}x SDPA (key tiles per query tile: {dict(key_tiles)})")

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
# `online_softmax`, `tiled_attention` (with the causal case and the log-sum-exp) and
# `tiled_attention_backward` (FlashAttention-2's backward, graded against autograd through
# PyTorch's SDPA, without building the $L \times S$ matrix). The check cells name the classic bugs:
# forgetting to rescale, dividing by $\ell$ inside the loop, skipping the diagonal tile, forgetting
# the $D$ term, recomputing $P$ without the scale or the log-sum-exp.
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
