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
# # 11b · Flash attention as a GPU kernel (Triton)
#
# Lesson 11 tiled attention in PyTorch: a loop over blocks of queries, an inner loop over blocks
# of keys, and an online softmax that never builds the $N \times N$ matrix. Production flash
# attention is the same algorithm written as a **GPU kernel**. Here we write it in
# [Triton](https://triton-lang.org), a Python dialect for GPU kernels, and run it on this CPU.
#
# **You will be able to**
# 1. map lesson 11's tiled loop onto Triton's program model: a grid of programs, program ids,
#    pointers and strides, masks, `tl.dot`, `tl.exp2`;
# 2. run a Triton kernel on a CPU through Triton's **interpreter** and check it against PyTorch;
# 3. say what the interpreter does **not** check (memory bounds, bfloat16 `tl.dot`, code the GPU
#    compiler refuses) and how guard memory and a GPU compile catch it;
# 4. compile the kernel for an A100 (sm_80) and an H100 (sm_90) without a GPU, and read how much
#    shared memory it needs;
# 5. say what FlashAttention-2 and -3 do beyond this kernel.
#
# **Builds on:** the online softmax and tiled forward pass of lesson 11, the causal mask of
# [lesson 05](05_masking.ipynb) and the heads of [lesson 06](06_multi_head_attention.ipynb).
#
# Triton is an optional dependency: `pip install 'attention_course[triton]'` (about 1 GB installed,
# Linux x86-64). The rest of the course works without it.

# %%
import importlib.util
import inspect
import math
import os
import textwrap
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must come before the first `import triton`
if importlib.util.find_spec("triton") is None:
    raise ModuleNotFoundError("lesson 11b needs Triton: pip install 'attention_course[triton]' "
                              "(Linux x86-64); every other lesson runs without it")
import triton
import triton.language as tl

from attention_course import scaled_dot_product_attention
from attention_course.grading import get_exercise
from attention_course.triton_flash import (
    GpuCompileError,
    compile_for_gpu,
    flash_attention_kernel,
    flash_forward_kernel,
    interpreting,
    triton_attention,
    triton_attention_with_lse,
)

_ = torch.manual_seed(0)  # every random number below is the same on every run
print(f"Triton {triton.__version__}; CUDA GPU: {torch.cuda.is_available()}; interpreter: {interpreting()}")

# %% [markdown]
# ## 1. From a loop to a grid
#
# In lesson 11 one Python loop visits the query blocks one after the other. On a GPU that outer loop
# disappears: each (query block, head) pair becomes a **program**, and the GPU runs thousands of
# programs side by side on its streaming multiprocessors. Only the inner loop, over key blocks,
# stays inside a program, with the running max, the running sum and the output accumulator kept
# in the program's registers.
#
# With a causal mask, a program does not even visit the key blocks that lie entirely in the future
# of its queries. The picture shows, for $N = 96$ and $16 \times 16$ blocks, which tiles of the
# $N \times N$ score matrix each program computes.

# %%
n, block = 96, 16
blocks = n // block
tiles = np.zeros((blocks, blocks))  # 0 skipped, 1 computed and partly masked, 2 computed in full
for qb in range(blocks):  # one program per query block
    end = min((qb + 1) * block, n)  # the kernel's causal loop bound
    for kb in range(math.ceil(end / block)):
        tiles[qb, kb] = 1 if (kb + 1) * block - 1 > qb * block else 2
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.imshow(tiles, cmap=plt.matplotlib.colors.ListedColormap(["white", "tab:orange", "tab:blue"]), vmin=0, vmax=2)
ax.set_xticks(range(blocks), [f"{kb * block}–{kb * block + block - 1}" for kb in range(blocks)], rotation=60)
ax.set_yticks(range(blocks), [f"program {qb}: queries {qb * block}–{qb * block + block - 1}" for qb in range(blocks)])
ax.set_xlabel("key block (keys)")
ax.set_ylabel("query block = one program")
ax.set_title("Causal flash attention: tiles computed (blue), masked inside (orange), skipped (white)")
plt.show()
computed = int((tiles > 0).sum())
print(f"{computed} of {blocks * blocks} tiles computed ({computed / blocks**2:.0%}); "
      f"{int((tiles == 1).sum())} of them need the causal mask inside the tile")

# %% [markdown]
# ## 2. The program model in one small kernel
#
# A Triton kernel is a Python function decorated with `@triton.jit`. It is launched as
# `kernel[grid](arguments)`: `grid` says how many programs run, and each program asks
# `tl.program_id(axis)` which one it is. A program works on **blocks**: `tl.arange(0, BLOCK)` is a
# vector of `BLOCK` indices (a power of two), and every operation acts on the whole block at once.
# Tensors arrive as **pointers** to their first element; element `i` lives at `x_ptr + i * stride`.
# A **mask** switches off the lanes that fall past the end, because `n` need not be a multiple of
# `BLOCK`.
#
# This kernel writes into each element the id of the program that handled it.

# %%
@triton.jit
def which_program(out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)  # which program am I?
    offsets = pid * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) the elements I handle
    tl.store(out_ptr + offsets, pid + 0 * offsets, mask=offsets < n)  # lanes past n write nothing


owner = torch.full((10,), -1, dtype=torch.int32)
grid = (triton.cdiv(10, 4),)  # 3 programs of 4 lanes for 10 elements
which_program[grid](owner, 10, BLOCK=4)
print("grid:", grid, "-> owner of each element:", owner.tolist())

# %% [markdown]
# ## 3. The online softmax in base 2
#
# A program holds a block $Q_i$ of `BLOCK_M` queries. For each block $K_j, V_j$ of `BLOCK_N` keys
# and values it updates, per query row, the running max $m$, the running sum $\ell$ and the
# accumulator (lesson 11's recurrence):
#
# $$S = Q_i K_j^\top \cdot c, \qquad m' = \max\big(m, \operatorname{rowmax} S\big), \qquad
#   \alpha = 2^{\,m - m'}, \qquad P = 2^{\,S - m'}$$
# $$\ell \leftarrow \alpha\,\ell + \operatorname{rowsum} P, \qquad
#   \text{acc} \leftarrow \alpha\,\text{acc} + P\,V_j, \qquad O_i = \text{acc} / \ell .$$
#
# Why powers of 2? $e^{x} = 2^{x \log_2 e}$, so folding $\log_2 e$ into the score scale once,
# $c = \log_2 e / \sqrt{d}$, gives the same softmax while every exponential becomes `exp2`, the
# instruction GPUs actually have (`exp` costs an extra multiply per element). The cell checks the
# identity.

# %%
x = torch.linspace(-8, 0, 9, dtype=torch.float64)
gap = float((torch.exp(x) - torch.exp2(x * math.log2(math.e))).abs().max())
print("exp(x) and 2**(x * log2 e) agree to 1e-15 in float64:", gap < 1e-15)

# %% [markdown]
# ## 4. Lesson 11's loop, line by line, in Triton
#
# | lesson 11 (PyTorch, one block of queries) | Triton (one program) |
# |---|---|
# | `for i0 in range(0, L, BLOCK_M):` | grid axis 0: `block_m = tl.program_id(0)`; heads on axis 1 |
# | `q_i = q[i0:i0 + BLOCK_M]` | `rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)`; `tl.load(q_ptr + rows[:, None] * stride_qn + dims[None, :] * stride_qd, mask=rows[:, None] < n_queries)` |
# | `for j0 in range(0, S, BLOCK_N):` | `for start in range(0, end, BLOCK_N):` with `end` cut at the diagonal when causal |
# | `s = q_i @ k[j0:j0 + BLOCK_N].T * scale` | `k_t = tl.load(...)` as a `(D_HEAD, BLOCK_N)` tile; `tl.dot(q, k_t) * qk_scale_log2e` |
# | `s[~allowed] = -inf` | `tl.where(allowed, scores, float("-inf"))`, `allowed` from `cols < n_keys` and `cols <= rows` |
# | `m_new = max(m, s.max(-1))`; `p = exp(s - m_new)` | `tl.maximum(row_max, tl.max(scores, axis=1))`; `tl.exp2(scores - new_max[:, None])` |
# | `acc = acc * alpha + p @ v_j` | `acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)` (float32 accumulator) |
# | `out[i0:i0 + BLOCK_M] = acc / l` | `tl.store(out_ptr + ..., mask=rows[:, None] < n_queries)` |
#
# Here is the whole kernel, as `attention_course.triton_flash` defines it.

# %%
print(textwrap.dedent(inspect.getsource(flash_attention_kernel.fn)))

# %% [markdown]
# `tl.dot` multiplies blocks on the GPU's tensor cores, so it needs every dimension to be at least
# 16; `tl.arange` needs powers of two. That is why the head size must be one of 16, 32, 64, 128,
# 256 here, and why the block sizes are powers of two.

# %% [markdown]
# ## 5. Running it on a CPU
#
# With `TRITON_INTERPRET=1` (set in the first cell, before `import triton`), Triton does not
# compile anything: it runs each program of the grid, one after the other, on NumPy arrays. Slow,
# but it is the same kernel code, and it works on CPU tensors. `triton_attention` has the same call
# as the course's `scaled_dot_product_attention`; here a batch of 2, 4 heads, 100 tokens (not a
# multiple of the 32-wide blocks), head size 32.

# %%
q, k, v = torch.randn(3, 2, 4, 100, 32).unbind(0)  # each (B=2, H=4, N=100, d=32)
for causal in (False, True):
    ours = triton_attention(q, k, v, causal=causal, block_m=32, block_n=32)
    course = scaled_dot_product_attention(q, k, v, causal=causal)
    error = float((ours - course).abs().max())  # float32 summed in another order: ~1e-6
    print(f"causal={causal!s:5}: output {tuple(ours.shape)}, max |triton - course| below 1e-5: {error < 1e-5}")
half = triton_attention(q.half(), k.half(), v.half(), causal=True, block_m=32, block_n=32)
error = float((half.float() - scaled_dot_product_attention(q, k, v, causal=True)).abs().max())
print(f"float16 inputs: max |error| below 5e-3 (float16 keeps about 3 decimal digits): {error < 5e-3}")

# %% [markdown]
# ### An experiment: how much work does causal skipping save?
#
# The interpreter's time is proportional to the number of (program, key block) steps it runs, so
# it shows the saving of section 1 directly. Non-causal attention runs $(N/B)^2$ tiles; causal
# attention runs $\tfrac12 (N/B)(N/B + 1)$, which tends to half.

# %%
# NBVAL_IGNORE_OUTPUT
sizes = [64, 128, 192, 256]
seconds = {False: [], True: []}
for n_tokens in sizes:
    qs, ks, vs = torch.randn(3, 1, n_tokens, 32).unbind(0)
    for causal in (False, True):
        start = time.perf_counter()
        triton_attention(qs, ks, vs, causal=causal, block_m=32, block_n=32)
        seconds[causal].append(time.perf_counter() - start)
ratios = [c / f for c, f in zip(seconds[True], seconds[False])]
tile_ratios = [(n_b * (n_b + 1) / 2) / n_b**2 for n_b in (s // 32 for s in sizes)]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(sizes, seconds[False], "o-", label="full")
ax.plot(sizes, seconds[True], "s-", label="causal (future key blocks skipped)")
ax.set_xlabel("sequence length N (1 head, d = 32, 32×32 blocks)")
ax.set_ylabel("seconds under the interpreter")
ax.set_title("Causal block skipping, measured on the interpreter")
ax.legend()
plt.show()
print("causal / full time:", [round(r, 2) for r in ratios])
print("causal / full tiles:", [round(r, 2) for r in tile_ratios])

# %% [markdown]
# ### FlashAttention-2's forward: two stages and the log-sum-exp
#
# `flash_attention_kernel` (the one you write in the exercise) computes the `allowed` mask on every
# key block, although only the blocks the diagonal crosses (orange in section 1) have anything to
# mask, and it returns no log-sum-exp, so a backward pass could not recompute its weights.
# `flash_forward_kernel` fixes both, as FlashAttention-2 does. Its loop runs in two stages through
# one `@triton.jit` helper whose `MASKED` flag is a `tl.constexpr`, so the compiler builds two loops:
# the first over the key blocks wholly before the program's first query (blue: no mask, no
# comparison, not even the bounds check), the second over the rest up to the diagonal (orange).
# After the loop each program stores its rows' $\mathrm{lse} = (m + \log_2 \ell)\ln 2$
# (back from base 2 to base $e$):

# %%
source = inspect.getsource(flash_forward_kernel.fn)
print(textwrap.dedent(source[source.index("        end = n_keys"):]))

# %% [markdown]
# Its output and log-sum-exp against PyTorch (`torch.logsumexp` of the scaled, masked scores):

# %%
for causal in (False, True):
    ours, lse = triton_attention_with_lse(q, k, v, causal=causal, block_m=32, block_n=16)
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~torch.ones(100, 100, dtype=torch.bool).tril(), float("-inf"))
    print(f"causal={causal!s:5}: lse {tuple(lse.shape)}, max |lse - torch.logsumexp| below 1e-5: "
          f"{float((lse - torch.logsumexp(scores, dim=-1)).abs().max()) < 1e-5};"
          f" output equals the course's: {float((ours - scaled_dot_product_attention(q, k, v, causal=causal)).abs().max()) < 1e-5}")

# %% [markdown]
# How many key blocks each stage visits, for $N = 100$, 32-query programs and 16-key blocks (the
# kernel's own loop bounds, recomputed in Python):

# %%
n_tokens, bm, bn = 100, 32, 16
for causal in (False, True):
    plain = masked = 0
    for program in range(math.ceil(n_tokens / bm)):
        end = min((program + 1) * bm, n_tokens) if causal else n_tokens
        unmasked_end = (min(program * bm, n_tokens) if causal else n_tokens) // bn * bn
        plain += len(range(0, unmasked_end, bn))
        masked += len(range(unmasked_end, end, bn))
    total = math.ceil(n_tokens / bm) * math.ceil(n_tokens / bn)
    print(f"causal={causal!s:5}: {plain} blocks without a mask + {masked} with one = {plain + masked} of {total}")

# %% [markdown]
# ## 6. What the interpreter does not check
#
# The interpreter runs your kernel's Python with NumPy. Three things a GPU would do differently
# pass through it silently.
#
# **Memory bounds.** A load or store without a mask reads or writes past the end of the tensor,
# and the interpreter never notices: it computes an address and touches whatever memory is there.
# (Far enough out, it can crash the whole Python process.) Below, the small kernel of section 2
# runs without its mask on a 20-element output that sits at the front of a 32-element buffer: the
# 12 **guard** elements behind it should keep their value $-1$.

# %%
@triton.jit
def which_program_unmasked(out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offsets, pid + 0 * offsets)  # no mask: the last program writes past n


buffer = torch.full((32,), -1, dtype=torch.int32)
output = buffer[:20]  # the tensor the kernel is told about; buffer[20:] is guard memory
which_program_unmasked[(triton.cdiv(20, 16),)](output, 20, BLOCK=16)
print("guard after the output:", buffer[20:].tolist(), "<- overwritten, and no error was raised")

# %% [markdown]
# The grader of this lesson's exercise uses exactly this trick: every tensor your kernel gets lies
# in a bigger buffer. The gaps around the inputs hold NaN, so an unmasked load puts NaN into the
# result; the gaps around the output hold a sentinel value that must survive. It also runs the
# kernel in a separate process, so that a wild pointer that kills the interpreter fails the check
# instead of your notebook.
#
# **bfloat16 `tl.dot`.** The interpreter computes `tl.dot` on bfloat16 blocks wrongly (it has no
# NumPy bfloat16 type to compute with), while float32 and float16 are exact here:

# %%
@triton.jit
def matmul_16(a_ptr, b_ptr, c_ptr):
    r = tl.arange(0, 16)
    a = tl.load(a_ptr + r[:, None] * 16 + r[None, :])
    b = tl.load(b_ptr + r[:, None] * 16 + r[None, :])
    tl.store(c_ptr + r[:, None] * 16 + r[None, :], tl.dot(a, b))


for dtype in (torch.float32, torch.float16, torch.bfloat16):
    a, b = torch.randn(2, 16, 16).to(dtype).unbind(0)
    c = torch.zeros(16, 16)
    matmul_16[(1,)](a, b, c)
    print(f"{str(dtype):15} tl.dot correct: {torch.allclose(c, a.float() @ b.float(), atol=1e-4)}")

# %% [markdown]
# So the launcher refuses bfloat16 on CPU tensors, and the grader tests float32 and float16 only.
#
# **Code the GPU compiler refuses.** The interpreter runs any Python: a `break` out of the key loop,
# a call to an ordinary Python helper function. Triton's compiler turns the kernel into a GPU
# program with structured control flow and only accepts `triton.language` operations and other
# `@triton.jit` functions. Here is the kernel with its causal bound replaced by a `break` (one of
# the mistakes the exercise's grader knows). The interpreter gets the right numbers:

# %%
with_break = {mistake.name: mistake.impl for mistake in get_exercise("flash_attention_kernel").mistakes}["break_in_loop"]
print("\n".join(line for line in inspect.getsource(with_break.fn).splitlines() if "break" in line or "for start" in line))
ours = triton_attention(q, k, v, causal=True, kernel=with_break, block_m=32, block_n=32)
print("interpreter, max |error| below 1e-5:", float((ours - scaled_dot_product_attention(q, k, v, causal=True)).abs().max()) < 1e-5)

# %% [markdown]
# ## 7. Compiling for a GPU without a GPU
#
# Triton's compiler does not need a GPU to compile: it lowers the kernel to Triton IR, then to
# LLVM IR, to PTX (NVIDIA's assembly) and, with `ptxas`, to machine code for the compute
# capability we name: 80 for an A100, 90 for an H100. `compile_for_gpu` does that in a separate
# process (a process whose Triton interprets cannot also compile). The kernel with the `break`:

# %%
try:
    compile_for_gpu(with_break, archs=(80,))
except GpuCompileError as error:
    print(error.summary())

# %% [markdown]
# And the kernel itself, built as a real launch would build it: float16, head size 64, blocks of
# 128 queries × 64 keys, 4 warps (128 threads) per program, a 3-stage pipeline. Each build reports
# the **shared memory** one program needs. Shared memory is the fast on-chip memory (lesson 11's
# SRAM) where tiles of K and V are staged while the tensor cores work; an SM has a fixed amount of
# it, and a program that asks for more than the limit cannot launch. We also build 32- and
# 128-key blocks, to see how the figure grows.

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
builds = compile_for_gpu(archs=(80, 90), block_sizes=((128, 32), (128, 64), (128, 128)), num_stages=3)
print(f"{len(builds)} builds in {time.perf_counter() - start:.1f} s (cached builds are instant)")

# %%
for build in builds:
    print(f"sm_{build.arch}  BLOCK_M={build.block_m:3}  BLOCK_N={build.block_n:3}  shared memory "
          f"{build.shared_bytes / 1024:5.0f} KiB of {build.shared_limit_bytes / 1024:.0f} KiB  fits: {build.fits}")

# %% [markdown]
# **Reading the figure.** In float16 a $128 \times 64$ block of Q takes $128 \cdot 64 \cdot 2$ bytes,
# and one K tile plus one V tile of $64 \times 64$ take twice $64 \cdot 64 \cdot 2$. Subtract the
# Q block from what the compiler reports and divide by one (K, V) pair: the result is how many
# (K, V) tiles are in flight at once, the depth of the software pipeline that loads the next key
# block while the tensor cores work on this one.

# %%
for build in builds:
    q_tile = build.block_m * 64 * 2
    kv_pair = 2 * build.block_n * 64 * 2
    print(f"sm_{build.arch} BLOCK_N={build.block_n:3}: Q block {q_tile // 1024} KiB + "
          f"{(build.shared_bytes - q_tile) / kv_pair:.0f} x (K, V) tiles of {kv_pair // 1024} KiB "
          f"= {build.shared_bytes // 1024} KiB")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for arch, marker in ((80, "o"), (90, "s")):
    mine = [b for b in builds if b.arch == arch]
    ax.plot([b.block_n for b in mine], [b.shared_bytes / 1024 for b in mine], marker + "-", label=f"sm_{arch} kernel")
    ax.axhline(mine[0].shared_limit_bytes / 1024, ls="--", color="tab:blue" if arch == 80 else "tab:orange",
               label=f"sm_{arch} limit per program")
ax.set_xscale("log", base=2)
ax.set_xticks([32, 64, 128], ["32", "64", "128"])
ax.set_xlabel("BLOCK_N (keys per tile), BLOCK_M = 128, d = 64, float16")
ax.set_ylabel("shared memory per program (KiB)")
ax.set_title("Shared memory the compiler allocates, by key block size")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Bigger tiles mean fewer trips to GPU memory (lesson 11's IO count) but more shared memory per
# program, hence fewer programs resident on an SM at once; tuning (`triton.autotune`) picks the
# sizes per GPU. Note that the H100 build keeps one more (K, V) tile in flight than the A100 build:
# the compiler pipelines differently for Hopper's asynchronous tensor cores.
#
# ## 8. On a real GPU
#
# With a CUDA GPU, the same `triton_attention` call compiles the kernel for it and runs there. The
# cell below then times the kernel against PyTorch's fused `scaled_dot_product_attention` (which
# calls FlashAttention-2 or cuDNN kernels) in float16. On this machine there is no GPU, so it says
# what it would measure.

# %%
# NBVAL_IGNORE_OUTPUT
if torch.cuda.is_available():
    for n_tokens in (1024, 2048, 4096, 8192):
        qg, kg, vg = torch.randn(3, 4, 16, n_tokens, 64, device="cuda", dtype=torch.float16).unbind(0)
        ours_ms = triton.testing.do_bench(lambda: triton_attention(qg, kg, vg, causal=True, block_m=128, block_n=64))
        sdpa_ms = triton.testing.do_bench(lambda: F.scaled_dot_product_attention(qg, kg, vg, is_causal=True))
        flops = 4 * 4 * 16 * n_tokens * n_tokens * 64 / 2  # two matmuls, half the tiles (causal)
        print(f"N={n_tokens:5}: triton {ours_ms:.3f} ms ({flops / ours_ms / 1e9:.0f} TFLOP/s), "
              f"SDPA {sdpa_ms:.3f} ms, ratio {ours_ms / sdpa_ms:.2f}")
else:
    print("No CUDA GPU here. On one, this cell times triton_attention against F.scaled_dot_product_attention\n"
          "(batch 4, 16 heads, d = 64, float16, causal) for N = 1024 ... 8192 with triton.testing.do_bench,\n"
          "and prints milliseconds, TFLOP/s and the ratio of the two.")

# %% [markdown]
# ## 9. Where FlashAttention-2 and -3 go further
#
# `flash_forward_kernel` has FlashAttention-2's forward ideas, each shown above: the grid runs over
# query blocks (and heads), so long sequences fill the GPU even at batch size 1; the output is
# divided by $\ell$ once, after the loop; causal programs stop at the diagonal and mask only the
# blocks it crosses; and the log-sum-exp is stored for the backward pass. What this lesson does not
# build:
#
# * **The backward kernel.** Lesson 11's `tiled_attention_backward` is its algorithm in PyTorch:
#   recompute $P = e^{S - \mathrm{lse}}$ block by block from the stored log-sum-exp.
# * **Hopper's asynchrony** (FlashAttention-3, sm_90): the tensor memory accelerator (TMA) copies
#   tiles while *producer* warps and *consumer* warps specialise, and two warp groups ping-pong so
#   that one's softmax overlaps the other's matrix multiply; plus FP8 with per-block scaling.
# * **The rest of the interface**: padding masks, dropout, grouped-query attention (lesson 09),
#   sliding windows (lesson 10), and a KV cache for decoding.
#
# ## Your turn
#
# Open [exercises/11b_flash_triton.ipynb](../exercises/11b_flash_triton.ipynb) and write
# `flash_attention_kernel` yourself. Its check runs your kernel under the interpreter on ten cases
# (N at, below and across the block size, L ≠ S, causal and not, several heads, float32 and
# float16) with guard memory around every tensor, then compiles it for sm_80 and sm_90, and names
# the usual mistakes: a causal comparison off by one, a loop that stops a block early, missing key
# masks, an accumulator that is not rescaled, swapped strides, `exp` where the scale assumes
# `exp2`, a `break`.
#
# ## Summary
#
# * A Triton kernel is one **program**; the **grid** runs one per (query block, head). Lesson 11's
#   outer loop becomes the grid, its inner loop stays in the program.
# * Programs address tensors through **pointers and strides**, and **mask** every load and store,
#   because N need not be a multiple of the block size.
# * Scores in base 2 (`qk_scale_log2e`) turn every exponential into `exp2`.
# * The **interpreter** runs kernels on a CPU but checks no bounds, gets bfloat16 `tl.dot` wrong, and
#   accepts code the compiler refuses: guard memory and a GPU **compile** for sm_80/sm_90 close
#   those gaps, and the compile reports the **shared memory** a program needs.
#
# **Next:** [lesson 12](12_capstone.ipynb) puts attention to work inside a real pretrained model.
