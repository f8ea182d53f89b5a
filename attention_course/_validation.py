"""Argument checks shared by the reference implementations.

Every message names the argument and the shape (or dtype) it got, so a learner who passes
the wrong thing sees what to fix instead of a stack trace from deep inside torch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def shape_of(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def require_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def require_float(name: str, x: object) -> Tensor:
    """A floating-point tensor (attention needs real numbers, not integer token ids)."""
    x = require_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype} with shape {shape_of(x)}"
            " (convert with .float())"
        )
    return x


def require_min_rank(name: str, x: Tensor, rank: int, layout: str) -> None:
    if x.dim() < rank:
        raise ValueError(f"{name} must have at least {rank} dimensions {layout}, got shape {shape_of(x)}")


def require_rank(name: str, x: Tensor, rank: int, layout: str) -> None:
    if x.dim() != rank:
        raise ValueError(f"{name} must have exactly {rank} dimensions {layout}, got shape {shape_of(x)}")


def require_no_nan(name: str, x: Tensor) -> None:
    # The maximum is NaN when any element is: one read of x, without a boolean copy of it.
    if x.numel() and torch.isnan(x.amax()):
        raise ValueError(f"{name} contains NaN (shape {shape_of(x)}); attention would spread it to every output")


def require_broadcastable(name: str, x: Tensor, target: tuple[int, ...]) -> None:
    try:
        torch.broadcast_shapes(shape_of(x), target)
    except RuntimeError:
        raise ValueError(f"{name} of shape {shape_of(x)} cannot broadcast to the scores' shape {target}") from None
    if len(shape_of(x)) > len(target):
        raise ValueError(f"{name} of shape {shape_of(x)} has more dimensions than the scores {target}")


def require_count(name: str, value: object, minimum: int = 1) -> int:
    """An ``int`` (not a bool) of at least ``minimum``: a length, a block size, a number of layers."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


def require_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Queries, keys and values that attention can combine: float, same dtype, matching shapes, no NaN."""
    for name, t, layout in (("q", q, "(..., L, d_k)"), ("k", k, "(..., S, d_k)"), ("v", v, "(..., S, d_v)")):
        require_float(name, t)
        require_min_rank(name, t, 2, layout)
        require_no_nan(name, t)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dimension, got q {shape_of(q)} and k {shape_of(k)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of positions S (dim -2), got k {shape_of(k)} and v {shape_of(v)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
