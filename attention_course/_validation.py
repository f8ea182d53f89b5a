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
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN (shape {shape_of(x)}); attention would spread it to every output")


def require_broadcastable(name: str, x: Tensor, target: tuple[int, ...]) -> None:
    try:
        torch.broadcast_shapes(shape_of(x), target)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {shape_of(x)} cannot broadcast to the scores' shape {target}"
        ) from None
    if len(shape_of(x)) > len(target):
        raise ValueError(f"{name} of shape {shape_of(x)} has more dimensions than the scores {target}")


def require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
