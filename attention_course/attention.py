r"""Scaled dot-product attention, the operation every later lesson builds on.

$$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V$$

where $M$ is 0 where a query may look at a key and $-\infty$ where it may not. Semantics match
``torch.nn.functional.scaled_dot_product_attention`` (boolean masks are ``True`` where attention
is allowed, float masks are added to the scores, ``causal`` is aligned top-left), including a
fully masked query row, which gives zero weights and a zero output (where ``torch.softmax`` and
``torch.nn.MultiheadAttention`` give NaN), and no keys at all (``S = 0``), which gives zeros.

float16 and bfloat16 inputs are computed in float32 (scores, softmax and the weighted sum) and the
results cast back, as PyTorch's kernels do: rounding ``QK^T`` to 8 bits of mantissa before the
softmax would cost far more accuracy than the inputs' own rounding.

Arguments are checked once, at the public functions; ``attention_core`` is the same computation
without the checks, for callers that have validated their inputs already and call it many times
(block-sparse attention runs it once per query block).
"""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import Tensor

from ._validation import require_broadcastable, require_qkv, shape_of
from .masking import causal_mask
from .qkv import scaled_attention_scores
from .softmax import softmax

HALF_DTYPES = (torch.float16, torch.bfloat16)


def apply_mask(scores: Tensor, mask: Tensor | None, *, causal: bool = False) -> Tensor:
    """Put ``-inf`` (boolean mask, causal) or add a float mask into scores ``(..., L, S)``.

    Args:
        scores: ``(..., L, S)``.
        mask: bool (``True`` = keep) or float (added), broadcastable to ``scores``.
        causal: also hide keys ``j > i`` (top-left aligned).

    Returns:
        masked scores, same shape as ``scores``.
    """
    n_queries, n_keys = scores.shape[-2:]
    if causal:
        scores = scores.masked_fill(~causal_mask(n_queries, n_keys, device=scores.device), float("-inf"))
    if mask is None:
        return scores
    require_broadcastable("mask", mask, shape_of(scores))
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    if mask.is_floating_point():
        return scores + mask.to(scores.dtype)
    raise TypeError(f"mask must be boolean or floating point, got dtype {mask.dtype} with shape {shape_of(mask)}")


@overload
def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
    return_weights: Literal[False] = False,
) -> Tensor: ...


@overload
def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
    return_weights: Literal[True],
) -> tuple[Tensor, Tensor]: ...


@overload
def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]: ...


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of queries over keys/values.

    Args:
        q: queries ``(..., L, d_k)``.
        k: keys ``(..., S, d_k)``.
        v: values ``(..., S, d_v)``.
        mask: bool (``True`` = may attend) or float (added to scores), broadcastable to ``(..., L, S)``.
        causal: hide keys ``j > i`` (top-left aligned, like PyTorch's ``is_causal``).
        scale: score multiplier, default ``1 / sqrt(d_k)``.
        return_weights: also return the attention weights.

    Returns:
        ``output (..., L, d_v)``, and ``weights (..., L, S)`` when ``return_weights``.
    """
    require_qkv(q, k, v)
    output, weights = attention_core(q, k, v, mask, causal=causal, scale=scale)
    return (output, weights) if return_weights else output


def attention_core(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``scaled_dot_product_attention`` without checking q, k and v: for validated inputs only.

    Same arguments; float16/bfloat16 are computed in float32 and cast back.

    Returns:
        ``output (..., L, d_v)`` and ``weights (..., L, S)``, both in the dtype of ``q``.
    """
    compute = torch.float32 if q.dtype in HALF_DTYPES else q.dtype
    scores = apply_mask(
        scaled_attention_scores(q.to(compute), k.to(compute), scale), mask, causal=causal
    )  # (..., L, S)
    # Rows sum to 1 (0 for fully masked rows); with no keys at all (S = 0) there is nothing to normalise.
    weights = softmax(scores, dim=-1) if scores.shape[-1] else scores
    output = weights @ v.to(compute)  # (..., L, d_v); zeros when S = 0
    return output.to(q.dtype), weights.to(q.dtype)


def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention under a boolean mask (the lesson 05 exercise).

    Args:
        q: ``(..., L, d_k)``; k: ``(..., S, d_k)``; v: ``(..., S, d_v)``.
        mask: bool, broadcastable to ``(..., L, S)``; ``True`` = may attend.

    Returns:
        ``output (..., L, d_v)`` and ``weights (..., L, S)``; a fully masked query row gets zeros.
    """
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean (True = may attend), got dtype {mask.dtype}")
    return scaled_dot_product_attention(q, k, v, mask, return_weights=True)
