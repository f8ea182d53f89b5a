r"""Positional encodings (lesson 08).

Attention by itself ignores order: permute the tokens and the outputs are permuted the same way.
Two ways to put order back:

* **Sinusoidal** (Vaswani et al., 2017), added to the embeddings:
  $PE_{p, 2i} = \sin(p / b^{2i/d})$, $PE_{p, 2i+1} = \cos(p / b^{2i/d})$ with $b = 10000$.
* **RoPE** (Su et al., 2021), applied to queries and keys: rotate each pair of coordinates by the
  angle $p\,\theta_i$, $\theta_i = b^{-2i/d}$, so that $q_m \cdot k_n$ depends on $m - n$ only.
  The pairs follow the **half-split** convention of GPT-NeoX and Hugging Face's ``rotate_half``
  (used by its port of Llama, whose converted $W_Q$, $W_K$ rows are permuted to match):
  coordinate $i$ is paired with $i + d/2$, not with its neighbour $i+1$ (the interleaved layout
  of the original paper, GPT-J and Meta's own Llama code).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import require_float, require_min_rank, shape_of


def _require_even(name: str, value: int) -> None:
    if value <= 0 or value % 2:
        raise ValueError(f"{name} must be a positive even number, got {value}")


def sinusoidal_table(n_positions: int, d_model: int, base: float = 10000.0) -> Tensor:
    """The fixed sinusoidal position table of "Attention Is All You Need".

    Args:
        n_positions: number of positions P (position 0 first).
        d_model: embedding width, even.
        base: wavelength base ``b``.

    Returns:
        float32 ``(P, d_model)``; even columns ``sin(p / b^(2i/d))``, odd columns ``cos(...)``.
    """
    _require_even("d_model", d_model)
    positions = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    angles = positions * inv_freq  # (P, d/2)
    table = torch.empty(n_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.float()


def rope_cos_sin(
    positions: Tensor, d_head: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Cosines and sines of the RoPE angles, laid out for the half-split convention.

    Args:
        positions: int or float ``(L,)``.
        d_head: rotated width, even.
        base: frequency base.
        dtype: dtype of the result (angles are computed in float64 first).

    Returns:
        ``cos, sin`` ``(L, d_head)``: angle ``p * theta_i`` in columns ``i`` and ``i + d_head/2``.
    """
    _require_even("d_head", d_head)
    inv_freq = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)  # (d/2,)
    angles = positions.to(torch.float64)[:, None] * inv_freq  # (L, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (L, d): pair i with i + d/2
    return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last axis split in halves (a 90° turn of every pair)."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: Tensor, positions: Tensor | None = None, base: float = 10000.0) -> Tensor:
    """Rotate queries or keys by their positions (half-split RoPE).

    Args:
        x: ``(..., L, d_head)`` with ``d_head`` even.
        positions: ``(L,)`` positions of the rows (default ``0..L-1``).
        base: frequency base.

    Returns:
        Tensor shaped like ``x``: ``x * cos + rotate_half(x) * sin``.
    """
    require_float("x", x)
    require_min_rank("x", x, 2, "(..., L, d_head)")
    length, d_head = x.shape[-2:]
    _require_even("d_head (last dimension of x)", d_head)
    if positions is None:
        positions = torch.arange(length, device=x.device)
    if tuple(positions.shape) != (length,):
        raise ValueError(
            f"positions must have shape (L,) = ({length},) to match x {shape_of(x)}, got {shape_of(positions)}"
        )
    cos, sin = rope_cos_sin(positions.cpu(), d_head, base, dtype=x.dtype)
    cos, sin = cos.to(x.device), sin.to(x.device)
    return x * cos + rotate_half(x) * sin
