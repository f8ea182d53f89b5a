r"""Queries, keys and values, and the scores that compare them (lessons 02 and 03).

Each token embedding $x_i$ asks a question (its query $q_i = x_i W_Q$), offers a label to be
found by (its key $k_i = x_i W_K$) and carries content (its value $v_i = x_i W_V$).
Weights are stored the way the equations are written: ``w_q`` has shape ``(d_model, d_k)`` and
``q = x @ w_q``. (``torch.nn.Linear`` stores the transpose, ``(d_k, d_model)``.)
"""

from __future__ import annotations

import math

from torch import Tensor

from ._validation import require_float, require_min_rank, require_rank, shape_of


def qkv_projection(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Project embeddings to queries, keys and values.

    Args:
        x: embeddings ``(..., L, d_model)``.
        w_q: ``(d_model, d_k)``.
        w_k: ``(d_model, d_k)``.
        w_v: ``(d_model, d_v)``.

    Returns:
        ``q (..., L, d_k)``, ``k (..., L, d_k)``, ``v (..., L, d_v)``.
    """
    require_float("x", x)
    require_min_rank("x", x, 2, "(..., L, d_model)")
    for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)):
        require_float(name, w)
        require_rank(name, w, 2, "(d_model, d_out)")
        if w.shape[0] != x.shape[-1]:
            raise ValueError(
                f"{name} must have d_model={x.shape[-1]} rows to multiply x {shape_of(x)}, got {name} {shape_of(w)}"
            )
    if w_q.shape[1] != w_k.shape[1]:
        raise ValueError(
            f"w_q and w_k must give queries and keys the same width d_k, got w_q {shape_of(w_q)} and w_k {shape_of(w_k)}"
        )
    return x @ w_q, x @ w_k, x @ w_v


def _check_qk(q: Tensor, k: Tensor) -> None:
    require_float("q", q)
    require_float("k", k)
    require_min_rank("q", q, 2, "(..., L, d_k)")
    require_min_rank("k", k, 2, "(..., S, d_k)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dimension, got q {shape_of(q)} and k {shape_of(k)}")


def attention_scores(q: Tensor, k: Tensor) -> Tensor:
    r"""Raw scores $S = Q K^\top$: how well each query matches each key.

    Args:
        q: queries ``(..., L, d_k)``.
        k: keys ``(..., S, d_k)``; leading dimensions broadcast with ``q``'s.

    Returns:
        scores ``(..., L, S)``; ``scores[..., i, j] = q_i · k_j``.
    """
    _check_qk(q, k)
    return q @ k.transpose(-2, -1)


def scaled_attention_scores(q: Tensor, k: Tensor, scale: float | None = None) -> Tensor:
    r"""Scores divided by $\sqrt{d_k}$ so their variance stays near 1 whatever $d_k$ is.

    Args:
        q: queries ``(..., L, d_k)``.
        k: keys ``(..., S, d_k)``.
        scale: multiply by this instead of ``1 / sqrt(d_k)``.

    Returns:
        ``(q @ k^T) * scale`` with shape ``(..., L, S)``.
    """
    _check_qk(q, k)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return attention_scores(q, k) * scale
