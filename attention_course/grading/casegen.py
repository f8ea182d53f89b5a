"""Deterministic inputs for generated grading cases: seeded random tensors in unusual layouts.

Every helper takes a ``torch.Generator`` so that a lesson's cases are the same on every run (a
learner who reruns a check sees the same failing case).
"""

from __future__ import annotations

import torch


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(
    gen: torch.Generator, *shape: int, scale: float = 1.0, shift: float = 0.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).to(dtype)


def column_major(x: torch.Tensor) -> torch.Tensor:
    """The same values with the last two axes stored transposed: dense but not contiguous.

    (A dense layout survives the grader's ``clone()``, unlike a sliced view.)
    """
    return x.transpose(-2, -1).contiguous().transpose(-2, -1)


def reversed_axes(x: torch.Tensor) -> torch.Tensor:
    """The same values with every axis stored in reverse order (strides increase left to right)."""
    dims = tuple(range(x.dim() - 1, -1, -1))
    return x.permute(dims).contiguous().permute(dims)
