r"""The lesson-10 patterns as FlexAttention ``mask_mod`` / ``score_mod`` functions (lesson 13).

PyTorch's FlexAttention (``torch.nn.attention.flex_attention``, PyTorch >= 2.5) writes a variant of
attention as two small functions of the indices, instead of as a new kernel:

* ``score_mod(score, b, h, q_idx, kv_idx) -> score`` edits one score before the softmax (a bias
  such as ALiBi, a soft cap, or ``-inf`` to hide a pair);
* ``mask_mod(b, h, q_idx, kv_idx) -> bool`` says whether a pair may attend at all. From it,
  ``create_block_mask`` computes which tiles hold any allowed pair (the ``layout`` of lesson 10),
  so a kernel can skip the empty ones.

A course pattern's ``allows(i, j)`` already is a mask_mod without ``b`` and ``h``.

**Eager vs compiled.** Called as it is, ``flex_attention`` runs a reference path: it evaluates the
mods with ``torch.vmap`` over the whole score matrix, so it builds the ``N × N`` scores and skips
nothing (PyTorch warns that this path is for debugging). ``torch.compile(flex_attention)``
generates one fused kernel from the mods (Triton on GPUs, C++ on CPUs) that never materialises the
scores and skips the tiles the block mask leaves out. On this course's CPU machine the compiled
form works, but its first call spends about a minute compiling (measured under load), so the
lesson and the tests use the eager form and check its values; the speed belongs to the compiled form.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from ._validation import require_count, require_qkv, require_rank
from .sparse import SparsePattern

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def mask_mod_from_pattern(pattern: SparsePattern) -> MaskMod:
    """``pattern.allows(i, j)`` as a FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` (same for every batch row and head)."""

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return pattern.allows(q_idx, kv_idx)

    return mask_mod


def score_mod_from_pattern(pattern: SparsePattern) -> ScoreMod:
    """The same pattern as a ``score_mod``: ``-inf`` for a forbidden pair (no tile is skipped this way)."""

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return torch.where(pattern.allows(q_idx, kv_idx), score, -math.inf)

    return score_mod


def sink_window_pattern(n: int, n_sinks: int, window: int) -> SparsePattern:
    """StreamingLLM's causal pattern: the first ``n_sinks`` keys and the last ``window`` (lesson 13's rolling cache)."""
    require_count("n", n, 0)
    require_count("n_sinks", n_sinks, 0)
    require_count("window", window, 1)

    def allows(i: Tensor, j: Tensor) -> Tensor:
        return (j <= i) & ((j < n_sinks) | (i - j < window))

    return SparsePattern(f"{n_sinks} sinks + window {window}", n, allows)


def alibi_score_mod(n_heads: int) -> ScoreMod:
    r"""ALiBi (Press et al., 2022): add $-m_h\,(i - j)$ to each score, slopes $m_h = 2^{-8(h+1)/H}$."""
    require_count("n_heads", n_heads, 1)
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / n_heads) for h in range(n_heads)])

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return score - slopes[h] * (q_idx - kv_idx)

    return score_mod


def soft_cap_score_mod(cap: float) -> ScoreMod:
    r"""Gemma 2's logit soft-capping: $s \mapsto c \tanh(s / c)$, scores kept inside $(-c, c)$."""
    if not cap > 0:
        raise ValueError(f"cap must be positive, got {cap}")

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return cap * torch.tanh(score / cap)

    return score_mod


def pattern_block_mask(pattern: SparsePattern, block_size: int = 128, device: torch.device | str = "cpu") -> BlockMask:
    """FlexAttention's block mask of ``pattern`` (which ``block_size`` tiles hold any allowed pair)."""
    require_count("block_size", block_size, 1)
    return create_block_mask(
        mask_mod_from_pattern(pattern), None, None, pattern.n, pattern.n, device=device, BLOCK_SIZE=block_size
    )


def flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    score_mod: ScoreMod | None = None,
    block_mask: BlockMask | None = None,
    compiled: bool = False,
) -> Tensor:
    """``flex_attention`` on ``(B, H, N, d)`` tensors; eager unless ``compiled`` (quietly: the eager
    path's "use torch.compile" warning is expected here). A query that may see no key gets zeros."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_rank(name, t, 4, "(B, heads, positions, d)")
    require_qkv(q, k, v)
    fn = torch.compile(flex_attention) if compiled else flex_attention
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention.*")
        return fn(q, k, v, score_mod=score_mod, block_mask=block_mask)


def flex_pattern_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: SparsePattern, *, use_block_mask: bool = True, block_size: int = 128
) -> Tensor:
    """Self-attention under ``pattern`` through FlexAttention: as a ``mask_mod`` (with its block mask)
    or, with ``use_block_mask=False``, as a ``score_mod`` that writes ``-inf``.

    Args:
        q, k, v: ``(B, H, N, d)`` with ``N == pattern.n``.

    Returns:
        ``(B, H, N, d_v)``, equal to ``scaled_dot_product_attention(q, k, v, pattern.mask())``.
    """
    if q.shape[-2] != pattern.n or k.shape[-2] != pattern.n:
        raise ValueError(f"the pattern is for N={pattern.n} tokens, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if use_block_mask:
        return flex(q, k, v, block_mask=pattern_block_mask(pattern, block_size, q.device))
    return flex(q, k, v, score_mod=score_mod_from_pattern(pattern))
