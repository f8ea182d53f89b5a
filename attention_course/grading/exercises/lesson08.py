"""Lesson 08 exercises: the sinusoidal position table and rotary position embeddings (RoPE)."""

from __future__ import annotations

import torch

from ...positional import apply_rope, sinusoidal_table
from ..registry import register
from ..spec import Case, Exercise, Mistake

LESSON = "08_positional_encodings"

# ---------------------------------------------------------------- sinusoidal_table


def _table_cases() -> list[Case]:
    # Angles reach at most 49 rad here: float32 sin/cos of such angles are within ~5e-6 of the
    # float64 values the reference rounds, inside the default atol=1e-5.
    return [
        Case((3, 4), label="sinusoidal_table(3, 4)"),
        Case((10, 16), label="sinusoidal_table(10, 16)"),
        Case((6, 8), {"base": 100.0}, label="sinusoidal_table(6, 8, base=100.0)"),
        Case((50, 32), label="sinusoidal_table(50, 32)"),
    ]


def _table_sin_cos_swapped(n_positions, d_model, base=10000.0):
    angles = torch.arange(n_positions)[:, None] * base ** (-torch.arange(0, d_model, 2) / d_model)
    table = torch.empty(n_positions, d_model)
    table[:, 0::2], table[:, 1::2] = torch.cos(angles), torch.sin(angles)
    return table


def _table_positions_from_one(n_positions, d_model, base=10000.0):
    angles = torch.arange(1, n_positions + 1)[:, None] * base ** (-torch.arange(0, d_model, 2) / d_model)
    table = torch.empty(n_positions, d_model)
    table[:, 0::2], table[:, 1::2] = torch.sin(angles), torch.cos(angles)
    return table


def _table_halves(n_positions, d_model, base=10000.0):
    angles = torch.arange(n_positions)[:, None] * base ** (-torch.arange(0, d_model, 2) / d_model)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def _table_column_exponent(n_positions, d_model, base=10000.0):
    angles = torch.arange(n_positions)[:, None] * base ** (-torch.arange(d_model) / d_model)
    table = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table


def _table_base_ignored(n_positions, d_model, base=10000.0):
    angles = torch.arange(n_positions)[:, None] * 10000.0 ** (-torch.arange(0, d_model, 2) / d_model)
    table = torch.empty(n_positions, d_model)
    table[:, 0::2], table[:, 1::2] = torch.sin(angles), torch.cos(angles)
    return table


def _table_float64(n_positions, d_model, base=10000.0):
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * base ** (
        -torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.empty(n_positions, d_model, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(angles), torch.cos(angles)
    return table


register(Exercise(
    name="sinusoidal_table",
    lesson=LESSON,
    reference=sinusoidal_table,
    cases=_table_cases,
    mistakes=(
        Mistake("sin_cos_swapped",
                "even columns hold the sines, odd columns the cosines: PE[p, 2i] = sin(...), PE[p, 2i+1] = cos(...).",
                _table_sin_cos_swapped),
        Mistake("positions_from_one",
                "positions count from 0: the first row is position 0 (sin 0 = 0, cos 0 = 1).",
                _table_positions_from_one),
        Mistake("sin_and_cos_in_halves",
                "interleave the columns (sin in 0, 2, 4, ...; cos in 1, 3, 5, ...), not all sines then all cosines.",
                _table_halves),
        Mistake("exponent_from_column_index",
                "columns 2i and 2i+1 share one frequency 1 / base^(2i/d_model): build d_model/2 frequencies from "
                "torch.arange(0, d_model, 2), not one per column.",
                _table_column_exponent),
        Mistake("base_ignored",
                "use the base argument in the frequencies (base ** (-2i/d_model)), not a hard-coded 10000.",
                _table_base_ignored),
        Mistake("float64_table",
                "return a float32 table (call .float() at the end if you computed in float64).",
                _table_float64),
    ),
))

# ---------------------------------------------------------------- apply_rope


def _rope_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(8)

    def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype)

    return [
        Case((torch.arange(1.0, 9.0).reshape(2, 4),), label="x = torch.arange(1., 9.).reshape(2, 4)  (2 positions, d_head=4)"),
        Case((randn(2, 3, 5, 8),), label="x of shape (2, 3, 5, 8), default positions"),
        Case((randn(4, 6), torch.tensor([3, 7, 8, 20])), label="x of shape (4, 6), positions = tensor([3, 7, 8, 20])"),
        Case((randn(1, 2, 6, 8),), {"base": 500.0}, label="x of shape (1, 2, 6, 8), base=500.0"),
        Case((randn(3, 4, dtype=torch.float64),), label="float64 x of shape (3, 4)"),
    ]


def _rope_interleaved(x, positions=None, base=10000.0):
    length, d_head = x.shape[-2:]
    positions = torch.arange(length) if positions is None else positions
    angles = positions.double()[:, None] * base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def _rope_reversed(x, positions=None, base=10000.0):
    length, d_head = x.shape[-2:]
    positions = torch.arange(length) if positions is None else positions
    angles = positions.double()[:, None] * base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angles = torch.cat([angles, angles], dim=-1)
    rotated = torch.cat([-x[..., d_head // 2:], x[..., :d_head // 2]], dim=-1)
    return x * torch.cos(angles).to(x.dtype) - rotated * torch.sin(angles).to(x.dtype)


def _rope_positions_from_one(x, positions=None, base=10000.0):
    length, d_head = x.shape[-2:]
    positions = torch.arange(1, length + 1) if positions is None else positions
    angles = positions.double()[:, None] * base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angles = torch.cat([angles, angles], dim=-1)
    rotated = torch.cat([-x[..., d_head // 2:], x[..., :d_head // 2]], dim=-1)
    return x * torch.cos(angles).to(x.dtype) + rotated * torch.sin(angles).to(x.dtype)


def _rope_positions_ignored(x, positions=None, base=10000.0):
    length, d_head = x.shape[-2:]
    angles = torch.arange(length, dtype=torch.float64)[:, None] * base ** (
        -torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angles = torch.cat([angles, angles], dim=-1)
    rotated = torch.cat([-x[..., d_head // 2:], x[..., :d_head // 2]], dim=-1)
    return x * torch.cos(angles).to(x.dtype) + rotated * torch.sin(angles).to(x.dtype)


def _rope_frequency_per_coordinate(x, positions=None, base=10000.0):
    length, d_head = x.shape[-2:]
    positions = torch.arange(length) if positions is None else positions
    angles = positions.double()[:, None] * base ** (-torch.arange(d_head, dtype=torch.float64) / d_head)
    rotated = torch.cat([-x[..., d_head // 2:], x[..., :d_head // 2]], dim=-1)
    return x * torch.cos(angles).to(x.dtype) + rotated * torch.sin(angles).to(x.dtype)


def _rope_base_ignored(x, positions=None, base=10000.0):
    length, d_head = x.shape[-2:]
    positions = torch.arange(length) if positions is None else positions
    angles = positions.double()[:, None] * 10000.0 ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angles = torch.cat([angles, angles], dim=-1)
    rotated = torch.cat([-x[..., d_head // 2:], x[..., :d_head // 2]], dim=-1)
    return x * torch.cos(angles).to(x.dtype) + rotated * torch.sin(angles).to(x.dtype)


register(Exercise(
    name="apply_rope",
    lesson=LESSON,
    reference=apply_rope,
    cases=_rope_cases,
    mistakes=(
        Mistake("interleaved_pairs",
                "this course uses the half-split convention (GPT-NeoX, Hugging Face's Llama port): coordinate i pairs "
                "with i + d_head/2, not with its neighbour i + 1 (the interleaved layout of GPT-J and Meta's Llama code).",
                _rope_interleaved),
        Mistake("rotation_reversed",
                "rotate forwards: x * cos + rotate_half(x) * sin with rotate_half([x1, x2]) = [-x2, x1]; the code "
                "turns every pair by minus the angle.",
                _rope_reversed),
        Mistake("positions_from_one",
                "default positions count from 0 (torch.arange(L)): the first token is not rotated at all.",
                _rope_positions_from_one),
        Mistake("positions_argument_ignored",
                "when positions is given, rotate row r by positions[r], not by r.",
                _rope_positions_ignored),
        Mistake("frequency_per_coordinate",
                "both coordinates of a pair (i, i + d_head/2) turn by the same angle: compute d_head/2 frequencies "
                "base^(-2i/d_head) and repeat them (torch.cat([angles, angles], dim=-1)).",
                _rope_frequency_per_coordinate),
        Mistake("base_ignored",
                "use the base argument in the frequencies (base ** (-2i/d_head)), not a hard-coded 10000.",
                _rope_base_ignored),
    ),
))
