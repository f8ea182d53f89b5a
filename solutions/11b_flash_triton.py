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
# # Exercise 11b · Flash attention as a Triton kernel
#
# Lesson: [11b flash as a GPU kernel](../notebooks/11b_flash_triton.ipynb). Write the kernel in
# the cell below, then run the check cell right under it: it says **PASS**, **TODO** (not done
# yet) or **FAIL** with a hint.
#
# The check does not run your kernel here. It copies its source into a separate Python process
# that runs it under Triton's interpreter on 10 cases (N at, below and across the block size,
# L ≠ S, causal on and off, several heads, an unusual memory layout, float32 and float16) with
# guard memory around every tensor, then has Triton compile it for an A100 (sm_80) and an H100
# (sm_90). A kernel that crashes or loops forever fails the check; it cannot take your notebook
# down. One check takes about 10 seconds.
#
# Run `attention-course grade exercises/11b_flash_triton.ipynb` in a terminal to grade the whole notebook.

# %%
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before the first `import triton`: kernels run on the CPU
try:
    import triton
    import triton.language as tl
except ModuleNotFoundError as error:
    raise ModuleNotFoundError("this exercise needs Triton: pip install 'attention_course[triton]'") from error

from attention_course.grading import check

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## One program: a block of queries against all the keys
#
# The launcher (`attention_course.triton_flash.triton_attention`) starts one program per block of
# `BLOCK_M` queries and per head: grid `(cdiv(n_queries, BLOCK_M), heads)`. Your program
#
# 1. finds its queries, `rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)`, and its head,
#    `tl.program_id(1)`, and loads its `(BLOCK_M, D_HEAD)` block of Q;
# 2. walks over the keys `BLOCK_N` at a time, keeping per query a running max $m$, a running sum
#    $\ell$ and an accumulator (all float32):
#
# $$S = Q K_j^\top \cdot \texttt{qk\_scale\_log2e},\quad m' = \max(m, \operatorname{rowmax} S),\quad
# \alpha = 2^{m - m'},\quad P = 2^{S - m'}$$
# $$\ell \leftarrow \alpha\,\ell + \operatorname{rowsum} P,\qquad
# \text{acc} \leftarrow \alpha\,\text{acc} + P V_j$$
#
# 3. stores `acc / ℓ` into its rows of `out`.
#
# Element `[h, i, d]` of `q` sits at `q_ptr + h * stride_qh + i * stride_qn + d * stride_qd`
# (the same for `k`, `v`, `out`). Positions past `n_queries` or `n_keys` must be masked on every
# load and store: N need not be a multiple of the block. With `CAUSAL`, query $i$ sees keys
# $j \le i$ only, and the loop stops after the last key block any of its queries can see.
#
# To try your kernel outside the check:
# `triton_attention(q, k, v, causal=True, kernel=flash_attention_kernel, block_m=16, block_n=16)`
# (from `attention_course.triton_flash`) and compare with `torch.nn.functional.scaled_dot_product_attention`.

# %%
@triton.jit
def flash_attention_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr,
    stride_qh, stride_qn, stride_qd,
    stride_kh, stride_kn, stride_kd,
    stride_vh, stride_vn, stride_vd,
    stride_oh, stride_on, stride_od,
    n_queries, n_keys, qk_scale_log2e,
    D_HEAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
):
    """Flash attention forward for one block of BLOCK_M queries of one head.

    q: (heads, n_queries, D_HEAD); k, v: (heads, n_keys, D_HEAD); out: (heads, n_queries, D_HEAD),
    each addressed through its three strides. qk_scale_log2e = scale * log2(e): use tl.exp2.

    Hints: tl.load(ptrs, mask=..., other=0.0); tl.dot(a, b) for (M, K) @ (K, N), so load K
    directly as a (D_HEAD, BLOCK_N) tile (features down the rows, keys across the columns);
    tl.max / tl.sum with axis=1; tl.where(cond, x, float("-inf")); range(0, end, BLOCK_N) with an
    `end` that depends on CAUSAL (no `break`: the GPU compiler rejects it); p.to(v.dtype) before
    the second tl.dot.
    """
    ### BEGIN SOLUTION
    block_m = tl.program_id(0)
    head = tl.program_id(1)
    rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    dims = tl.arange(0, D_HEAD)  # (D_HEAD,)
    q = tl.load(q_ptr + head * stride_qh + rows[:, None] * stride_qn + dims[None, :] * stride_qd,
                mask=rows[:, None] < n_queries, other=0.0)  # (BLOCK_M, D_HEAD)
    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D_HEAD], tl.float32)
    end = n_keys
    if CAUSAL:
        end = tl.minimum((block_m + 1) * BLOCK_M, n_keys)
    for start in range(0, end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        k_t = tl.load(k_ptr + head * stride_kh + cols[None, :] * stride_kn + dims[:, None] * stride_kd,
                      mask=cols[None, :] < n_keys, other=0.0)  # (D_HEAD, BLOCK_N)
        v = tl.load(v_ptr + head * stride_vh + cols[:, None] * stride_vn + dims[None, :] * stride_vd,
                    mask=cols[:, None] < n_keys, other=0.0)  # (BLOCK_N, D_HEAD)
        scores = tl.dot(q, k_t) * qk_scale_log2e  # (BLOCK_M, BLOCK_N)
        allowed = cols[None, :] < n_keys
        if CAUSAL:
            allowed = allowed & (cols[None, :] <= rows[:, None])
        scores = tl.where(allowed, scores, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, axis=1))
        alpha = tl.exp2(row_max - new_max)
        p = tl.exp2(scores - new_max[:, None])
        row_sum = row_sum * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        row_max = new_max
    out = acc / row_sum[:, None]
    tl.store(out_ptr + head * stride_oh + rows[:, None] * stride_on + dims[None, :] * stride_od,
             out.to(out_ptr.dtype.element_ty), mask=rows[:, None] < n_queries)
    ### END SOLUTION


# %%
check("flash_attention_kernel", flash_attention_kernel)

# %% [markdown]
# Done? Lesson [12, the capstone](../notebooks/12_capstone.ipynb) plugs attention into a real
# pretrained transformer.
