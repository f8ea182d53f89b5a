r"""Flash attention's forward pass as a Triton kernel (lesson 11b).

The algorithm is lesson 11's tiled loop; what changes is who runs it. A Triton *program* owns one
block of ``BLOCK_M`` queries of one head; the launch *grid* holds one program per (query block,
head), and the GPU runs them side by side. Each program keeps its running statistics in registers
and walks over the keys ``BLOCK_N`` at a time:

$$S = Q_i K_j^\top \cdot \text{scale} \cdot \log_2 e,\quad
m' = \max(m, \operatorname{rowmax} S),\quad \alpha = 2^{m - m'},\quad P = 2^{S - m'}$$
$$\ell \leftarrow \alpha\,\ell + \operatorname{rowsum} P,\qquad
\text{acc} \leftarrow \alpha\,\text{acc} + P V_j,\qquad O_i = \text{acc} / \ell$$

Scores are kept in base 2 ($e^x = 2^{x \log_2 e}$, with $\log_2 e$ folded into the scale once)
because ``exp2`` is the instruction GPUs have.

Without a CUDA GPU, Triton runs kernels through its *interpreter* (NumPy on CPU tensors), which
must be switched on with ``TRITON_INTERPRET=1`` before ``triton`` is first imported. This module
does that itself when no GPU is present and ``triton`` has not been imported yet. The interpreter
does not check memory bounds and accepts code the GPU compiler refuses; :func:`compile_for_gpu`
compiles a kernel for real GPU targets (sm_80, sm_90) on a CPU-only machine to catch the latter,
and ``attention_course.grading.triton_sandbox`` grades kernels with guard buffers for the former.

``triton`` is an optional dependency (``pip install 'attention_course[triton]'``): this module
imports without it and raises a clear error only when a kernel is used.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._validation import require_qkv, shape_of
from .triton_compile import GpuBuild, GpuCompileError, compile_in_subprocess, is_jitted, kernel_module_source

if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when triton.language is first imported

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

LOG2E = 1.4426950408889634  # log2(e): e**x == 2**(x * LOG2E)
HEAD_DIMS = (16, 32, 64, 128, 256)  # tl.arange needs a power of two, tl.dot at least 16
INSTALL_HINT = "lesson 11b needs Triton: pip install 'attention_course[triton]' (Linux x86-64)"

__all__ = [
    "GpuBuild", "GpuCompileError", "HEAD_DIMS", "LOG2E", "compile_for_gpu", "flash_attention_kernel",
    "flash_forward_kernel", "interpreting", "launch_flash_kernel", "require_triton", "triton_attention",
    "triton_attention_with_lse",
]


def require_triton() -> None:
    """Raise ``ModuleNotFoundError`` with the install command when Triton is missing."""
    if triton is None:
        raise ModuleNotFoundError(INSTALL_HINT)


if triton is not None:

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
        """Flash attention forward for one block of ``BLOCK_M`` queries of one head.

        Grid: ``(cdiv(n_queries, BLOCK_M), heads)``. Tensors are ``q (heads, n_queries, D_HEAD)``,
        ``k, v (heads, n_keys, D_HEAD)``, ``out (heads, n_queries, D_HEAD)``, addressed through
        their strides (head, position, feature). ``qk_scale_log2e`` is ``scale * log2(e)``, so
        the softmax runs on base-2 scores with ``tl.exp2``. ``CAUSAL`` hides keys ``j > i``
        (top-left aligned) and skips the key blocks that lie wholly in the future.
        """
        block_m = tl.program_id(0)  # which block of queries
        head = tl.program_id(1)  # which (batch, head) pair
        rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query positions
        dims = tl.arange(0, D_HEAD)  # (D_HEAD,) feature indices
        q = tl.load(q_ptr + head * stride_qh + rows[:, None] * stride_qn + dims[None, :] * stride_qd,
                    mask=rows[:, None] < n_queries, other=0.0)  # (BLOCK_M, D_HEAD)
        row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)  # m: running max of base-2 scores
        row_sum = tl.zeros([BLOCK_M], tl.float32)  # l: running sum of 2**(s - m)
        acc = tl.zeros([BLOCK_M, D_HEAD], tl.float32)  # running sum of 2**(s - m) * v
        end = n_keys
        if CAUSAL:
            end = tl.minimum((block_m + 1) * BLOCK_M, n_keys)  # later keys are in every row's future
        for start in range(0, end, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
            k_t = tl.load(k_ptr + head * stride_kh + cols[None, :] * stride_kn + dims[:, None] * stride_kd,
                          mask=cols[None, :] < n_keys, other=0.0)  # (D_HEAD, BLOCK_N): K transposed
            v = tl.load(v_ptr + head * stride_vh + cols[:, None] * stride_vn + dims[None, :] * stride_vd,
                        mask=cols[:, None] < n_keys, other=0.0)  # (BLOCK_N, D_HEAD)
            scores = tl.dot(q, k_t) * qk_scale_log2e  # (BLOCK_M, BLOCK_N), base 2
            allowed = cols[None, :] < n_keys
            if CAUSAL:
                allowed = allowed & (cols[None, :] <= rows[:, None])
            scores = tl.where(allowed, scores, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(scores, axis=1))  # (BLOCK_M,)
            alpha = tl.exp2(row_max - new_max)  # shrinks what was summed under the old max
            p = tl.exp2(scores - new_max[:, None])  # (BLOCK_M, BLOCK_N) unnormalised weights
            row_sum = row_sum * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            row_max = new_max
        out = acc / row_sum[:, None]  # (BLOCK_M, D_HEAD)
        tl.store(out_ptr + head * stride_oh + rows[:, None] * stride_on + dims[None, :] * stride_od,
                 out.to(out_ptr.dtype.element_ty), mask=rows[:, None] < n_queries)

    @triton.jit
    def _attend_key_blocks(
        acc, row_sum, row_max, q, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
        rows, dims, start, end, n_keys, qk_scale_log2e,
        BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
    ):
        """Fold the key blocks ``[start, end)`` into one program's running state; masks only if ``MASKED``."""
        for block_start in range(start, end, BLOCK_N):
            cols = block_start + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
            k_offsets = cols[None, :] * stride_kn + dims[:, None] * stride_kd  # K transposed: (D_HEAD, BLOCK_N)
            v_offsets = cols[:, None] * stride_vn + dims[None, :] * stride_vd  # (BLOCK_N, D_HEAD)
            if MASKED:
                k_t = tl.load(k_ptr + k_offsets, mask=cols[None, :] < n_keys, other=0.0)
                v = tl.load(v_ptr + v_offsets, mask=cols[:, None] < n_keys, other=0.0)
            else:  # every key of the block exists and precedes every query of the program
                k_t = tl.load(k_ptr + k_offsets)
                v = tl.load(v_ptr + v_offsets)
            scores = tl.dot(q, k_t) * qk_scale_log2e  # (BLOCK_M, BLOCK_N), base 2
            if MASKED:
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
        return acc, row_sum, row_max

    @triton.jit
    def flash_forward_kernel(
        q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr,
        stride_qh, stride_qn, stride_qd,
        stride_kh, stride_kn, stride_kd,
        stride_vh, stride_vn, stride_vd,
        stride_oh, stride_on, stride_od,
        stride_lh, stride_ln,
        n_queries, n_keys, qk_scale_log2e,
        D_HEAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
    ):
        """``flash_attention_kernel`` as FlashAttention-2 runs it: a two-stage loop, and the log-sum-exp stored.

        Stage 1 visits the key blocks that lie wholly before the program's first query (and before
        ``n_keys``): no mask, no comparison. Stage 2 visits the rest up to the diagonal (causal) or
        to ``n_keys``, with the masks. Key blocks after the diagonal are never visited. Each row's
        log-sum-exp of the scaled scores, (m + log2(l)) * ln(2), goes to ``lse (heads, n_queries)``:
        all a backward pass needs to recompute the weights.
        """
        block_m = tl.program_id(0)
        head = tl.program_id(1)
        rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, D_HEAD)
        q = tl.load(q_ptr + head * stride_qh + rows[:, None] * stride_qn + dims[None, :] * stride_qd,
                    mask=rows[:, None] < n_queries, other=0.0)
        row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
        row_sum = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D_HEAD], tl.float32)
        k_head = k_ptr + head * stride_kh
        v_head = v_ptr + head * stride_vh
        end = n_keys
        unmasked_end = (n_keys // BLOCK_N) * BLOCK_N  # the full key blocks
        if CAUSAL:
            end = tl.minimum((block_m + 1) * BLOCK_M, n_keys)
            unmasked_end = (tl.minimum(block_m * BLOCK_M, n_keys) // BLOCK_N) * BLOCK_N  # ... before the first query
        acc, row_sum, row_max = _attend_key_blocks(
            acc, row_sum, row_max, q, k_head, v_head, stride_kn, stride_kd, stride_vn, stride_vd,
            rows, dims, 0, unmasked_end, n_keys, qk_scale_log2e, BLOCK_N, False, CAUSAL)
        acc, row_sum, row_max = _attend_key_blocks(
            acc, row_sum, row_max, q, k_head, v_head, stride_kn, stride_kd, stride_vn, stride_vd,
            rows, dims, unmasked_end, end, n_keys, qk_scale_log2e, BLOCK_N, True, CAUSAL)
        out = acc / row_sum[:, None]
        tl.store(out_ptr + head * stride_oh + rows[:, None] * stride_on + dims[None, :] * stride_od,
                 out.to(out_ptr.dtype.element_ty), mask=rows[:, None] < n_queries)
        lse = (row_max + tl.log2(row_sum)) * 0.6931471805599453  # back to base e: log2(x) * ln(2)
        tl.store(lse_ptr + head * stride_lh + rows * stride_ln, lse, mask=rows < n_queries)

else:

    def flash_attention_kernel(*args: Any, **kwargs: Any) -> None:
        """Placeholder when Triton is not installed: raises the install hint."""
        require_triton()

    def flash_forward_kernel(*args: Any, **kwargs: Any) -> None:
        """Placeholder when Triton is not installed: raises the install hint."""
        require_triton()


def interpreting() -> bool:
    """Whether this process's Triton runs kernels through its interpreter (CPU) or compiles them."""
    require_triton()
    return type(flash_attention_kernel).__name__ == "InterpretedFunction"


def launch_flash_kernel(
    kernel: Any,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    *,
    causal: bool,
    scale: float,
    block_m: int,
    block_n: int,
) -> None:
    """Run a kernel with ``flash_attention_kernel``'s signature, writing into ``out`` in place.

    No checks: callers validate (``triton_attention`` does; the grading sandbox builds its own
    inputs, with guard memory around them).

    Args:
        kernel: a ``@triton.jit`` function with the signature of ``flash_attention_kernel``.
        q: ``(heads, L, d)``; k, v: ``(heads, S, d)``; out: ``(heads, L, d)``, any strides.
        causal: hide keys ``j > i``.
        scale: score multiplier (``1 / sqrt(d)`` for standard attention).
        block_m, block_n: query and key block sizes (powers of two, at least 16).
    """
    heads, n_queries, d_head = q.shape
    grid = (triton.cdiv(n_queries, block_m), heads)
    kernel[grid](
        q, k, v, out, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        n_queries, k.shape[1], scale * LOG2E,
        D_HEAD=d_head, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal,
    )


def _check_launch(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, return_weights: bool,
                  block_m: int, block_n: int) -> None:
    require_qkv(q, k, v)
    if mask is not None:
        raise ValueError(f"triton_attention takes causal=True or no mask, got mask of shape {shape_of(mask)}")
    if return_weights:
        raise ValueError("triton_attention never forms the (L, S) weights, so return_weights must be False")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(f"q, k and v must share their leading (batch, head) dims, got q {shape_of(q)}, "
                         f"k {shape_of(k)} and v {shape_of(v)}")
    if q.shape[-1] != v.shape[-1] or q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"the kernel needs d_k == d_v in {HEAD_DIMS}, got q {shape_of(q)} and v {shape_of(v)}")
    if 0 in q.shape or 0 in k.shape:
        raise ValueError(f"q and k must be non-empty, got q {shape_of(q)} and k {shape_of(k)}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device} and {v.device}")
    allowed = (torch.float32, torch.float16) + ((torch.bfloat16,) if q.is_cuda else ())
    if q.dtype not in allowed:
        raise TypeError(f"q must be float32 or float16 (bfloat16 on a GPU only: the interpreter gets bf16 "
                        f"tl.dot wrong), got dtype {q.dtype} with shape {shape_of(q)}")
    for name, block in (("block_m", block_m), ("block_n", block_n)):
        if block < 16 or block & (block - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {block}")


def triton_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
    kernel: Any = None,
    block_m: int = 64,
    block_n: int = 64,
) -> Tensor:
    """Scaled dot-product attention computed by a Triton flash kernel.

    Same call as ``attention_course.scaled_dot_product_attention``; only ``causal`` masking is
    supported (``mask`` must be ``None``) and the weights are never formed. CPU tensors run
    under Triton's interpreter, CUDA tensors on the GPU.

    Args:
        q: queries ``(..., L, d)``; k: keys ``(..., S, d)``; v: values ``(..., S, d)``; float32
            or float16, ``d`` in ``HEAD_DIMS``, the same leading dims.
        mask: must be ``None``.
        causal: hide keys ``j > i`` (top-left aligned).
        scale: score multiplier, default ``1 / sqrt(d)``.
        return_weights: must be ``False``.
        kernel: the kernel to launch (default ``flash_attention_kernel``; a learner's version drops in).
        block_m, block_n: query and key block sizes.

    Returns:
        ``output (..., L, d)`` in the dtype of ``q``.
    """
    require_triton()
    _check_launch(q, k, v, mask, return_weights, block_m, block_n)
    if q.device.type == "cpu" and not interpreting():
        raise RuntimeError("CPU tensors run only under Triton's interpreter: set os.environ['TRITON_INTERPRET'] = '1' "
                           "before the first `import triton` (restart the kernel), or move the tensors to a GPU")
    n_queries, d_head = q.shape[-2:]
    scale = 1.0 / math.sqrt(d_head) if scale is None else scale
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    launch_flash_kernel(
        flash_attention_kernel if kernel is None else kernel,
        q.reshape(-1, n_queries, d_head), k.reshape(-1, k.shape[-2], d_head), v.reshape(-1, v.shape[-2], d_head),
        out.view(-1, n_queries, d_head), causal=causal, scale=scale, block_m=block_m, block_n=block_n,
    )
    return out


def triton_attention_with_lse(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_m: int = 64,
    block_n: int = 64,
) -> tuple[Tensor, Tensor]:
    """Attention by ``flash_forward_kernel``: the output and each query's log-sum-exp.

    Args:
        q, k, v, causal, scale, block_m, block_n: as in ``triton_attention``.

    Returns:
        ``output (..., L, d)`` in the dtype of ``q`` and ``lse (..., L)`` in float32, the log-sum-exp
        (base e) of each query's scaled, masked scores.
    """
    require_triton()
    _check_launch(q, k, v, None, False, block_m, block_n)
    if q.device.type == "cpu" and not interpreting():
        raise RuntimeError("CPU tensors run only under Triton's interpreter: set os.environ['TRITON_INTERPRET'] = '1' "
                           "before the first `import triton` (restart the kernel), or move the tensors to a GPU")
    n_queries, d_head = q.shape[-2:]
    scale = 1.0 / math.sqrt(d_head) if scale is None else scale
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    q3, k3, v3 = q.reshape(-1, n_queries, d_head), k.reshape(-1, k.shape[-2], d_head), v.reshape(-1, v.shape[-2], d_head)
    out3, lse2 = out.view(-1, n_queries, d_head), lse.view(-1, n_queries)
    grid = (triton.cdiv(n_queries, block_m), q3.shape[0])
    flash_forward_kernel[grid](
        q3, k3, v3, out3, lse2, *q3.stride(), *k3.stride(), *v3.stride(), *out3.stride(), *lse2.stride(),
        n_queries, k3.shape[1], scale * LOG2E,
        D_HEAD=d_head, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal,
    )
    return out, lse


def compile_for_gpu(
    kernel: Any = None,
    *,
    archs: Sequence[int] = (80, 90),
    dtype: torch.dtype = torch.float16,
    head_dim: int = 64,
    block_sizes: Sequence[tuple[int, int]] = ((128, 64),),
    causal: bool = True,
    num_warps: int = 4,
    num_stages: int = 3,
    timeout: float = 300.0,
) -> list[GpuBuild]:
    """Compile a flash kernel for NVIDIA GPUs without one, and report what each build needs.

    Runs Triton's real compiler (Triton IR, then LLVM, PTX and ``ptxas``) for each compute
    capability in ``archs`` (80 = A100, 90 = H100) in a subprocess, since a process whose Triton
    interprets cannot also compile. The kernel is specialised as for contiguous tensors.

    Args:
        kernel: a ``@triton.jit`` function with ``flash_attention_kernel``'s signature (default: it).
        archs: compute capabilities, e.g. ``(80, 90)``.
        dtype: float16, bfloat16 or float32 for q, k, v and the output.
        head_dim: ``D_HEAD``, in ``HEAD_DIMS``.
        block_sizes: ``(BLOCK_M, BLOCK_N)`` pairs; one build per arch and pair.
        causal: the ``CAUSAL`` flag to compile.
        num_warps, num_stages: Triton launch options (threads per program / pipeline depth).
        timeout: seconds for the whole subprocess.

    Returns:
        one ``GpuBuild`` per (arch, block size), with the shared memory each program needs.

    Raises:
        TypeError: ``kernel`` is not a ``@triton.jit`` function.
        GpuCompileError: with the compiler's message when it rejects the kernel.
    """
    require_triton()
    types = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    if dtype not in types:
        raise TypeError(f"dtype must be one of {list(types)}, got {dtype}")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {HEAD_DIMS}, got {head_dim}")
    kernel = flash_attention_kernel if kernel is None else kernel
    if not is_jitted(kernel):
        raise TypeError(f"kernel must be a @triton.jit function, got {type(kernel).__name__}")
    configs = [
        {"arch": arch, "dtype": types[dtype], "head_dim": head_dim, "block_m": bm, "block_n": bn,
         "causal": causal, "num_warps": num_warps, "num_stages": num_stages}
        for arch in archs for bm, bn in block_sizes
    ]
    return compile_in_subprocess(kernel_module_source(kernel), kernel.__name__, configs, timeout=timeout)
