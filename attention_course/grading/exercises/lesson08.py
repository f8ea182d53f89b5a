"""Lesson 08 exercises: the sinusoidal position table and rotary position embeddings (RoPE)."""

from __future__ import annotations

import torch

from ...positional import apply_rope, sinusoidal_table
from ..casegen import column_major, generator, randn
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

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
        Case((1, 2), label="sinusoidal_table(1, 2)"),
        Case((7, 6), {"base": 50.0}, label="sinusoidal_table(7, 6, base=50.0)"),
    ]


FREQ = "frequencies = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)"
SIN = "table[:, 0::2] = torch.sin(angles)"
COS = "table[:, 1::2] = torch.cos(angles)"

register(
    Exercise(
        name="sinusoidal_table",
        lesson=LESSON,
        reference=sinusoidal_table,
        cases=_table_cases,
        mistakes=catalogue(
            LESSON,
            "sinusoidal_table",
            (
                "sin_cos_swapped",
                "even columns hold the sines, odd columns the cosines: PE[p, 2i] = sin(...), PE[p, 2i+1] = cos(...).",
                edit(SIN, "table[:, 0::2] = torch.cos(angles)"),
                edit(COS, "table[:, 1::2] = torch.sin(angles)"),
            ),
            (
                "positions_from_one",
                "positions count from 0: the first row is position 0 (sin 0 = 0, cos 0 = 1).",
                edit(
                    "torch.arange(n_positions, dtype=torch.float64)",
                    "torch.arange(1, n_positions + 1, dtype=torch.float64)",
                ),
            ),
            (
                "sin_and_cos_in_halves",
                "interleave the columns (sin in 0, 2, 4, ...; cos in 1, 3, 5, ...), not all sines then all cosines.",
                edit(SIN, "table[:, :d_model // 2] = torch.sin(angles)"),
                edit(COS, "table[:, d_model // 2:] = torch.cos(angles)"),
            ),
            (
                "exponent_from_column_index",
                "columns 2i and 2i+1 share one frequency 1 / base^(2i/d_model): build d_model/2 frequencies from "
                "torch.arange(0, d_model, 2), not one per column.",
                edit(FREQ, "frequencies = base ** (-torch.arange(0, d_model, dtype=torch.float64) / d_model)"),
                edit(SIN, "table[:, 0::2] = torch.sin(angles[:, 0::2])"),
                edit(COS, "table[:, 1::2] = torch.cos(angles[:, 1::2])"),
            ),
            (
                "exponent_i_not_2i",
                "the exponent is 2i / d_model: build it from torch.arange(0, d_model, 2) (0, 2, 4, ...), "
                "not torch.arange(d_model // 2) (0, 1, 2, ...).",
                edit(FREQ, "frequencies = base ** (-torch.arange(d_model // 2, dtype=torch.float64) / d_model)"),
            ),
            (
                "base_ignored",
                "use the base argument in the frequencies (base ** (-2i/d_model)), not a hard-coded 10000.",
                edit(FREQ, "frequencies = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)"),
            ),
            (
                "float64_table",
                "return a float32 table (call .float() at the end if you computed in float64).",
                edit("return table.float()", "return table"),
            ),
            (
                "frequencies_grow",
                "the angle is p / base^(2i/d_model): the frequencies fall from 1 (columns 0, 1) to about 1/base; "
                "p * base^(2i/d_model) makes them grow instead.",
                edit(FREQ, "frequencies = base ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)"),
            ),
        ),
    )
)

# ---------------------------------------------------------------- apply_rope


def _rope_cases() -> list[Case]:
    g = generator(8)
    return [
        Case(
            (torch.arange(1.0, 9.0).reshape(2, 4),),
            label="x = torch.arange(1., 9.).reshape(2, 4)  (2 positions, d_head=4)",
        ),
        Case((randn(g, 2, 3, 5, 8),), label="x of shape (2, 3, 5, 8), default positions"),
        Case(
            (randn(g, 4, 6), torch.tensor([3, 7, 8, 20])), label="x of shape (4, 6), positions = tensor([3, 7, 8, 20])"
        ),
        Case((randn(g, 1, 2, 6, 8),), {"base": 500.0}, label="x of shape (1, 2, 6, 8), base=500.0"),
        Case(
            (randn(g, 1, 1, 1, 6), torch.tensor([5])),
            label="one token: x of shape (1, 1, 1, 6), positions = tensor([5])",
        ),
        Case(
            (randn(g, 2, 2, 3, 10), torch.tensor([4, 5, 6])),
            label="x of shape (2, 2, 3, 10), positions = tensor([4, 5, 6]) (a cached decode's positions)",
        ),
        Case((column_major(randn(g, 2, 5, 4)),), label="x of shape (2, 5, 4) stored column-major"),
        Case((randn(g, 3, 4, dtype=torch.float64),), label="float64 x of shape (3, 4)"),
        # float16 rounds each product to ~5e-4 relative; values are O(1).
        Case((randn(g, 2, 4, 8, dtype=torch.float16),), label="float16 x of shape (2, 4, 8)", atol=1e-2, rtol=1e-2),
        # Far into a sequence (a cached decode at position ~4000), angles computed in float16 are off by up to
        # p * 2**-11 ~ 2 rad; angles in float32 or float64 are within the same ~5e-4 relative rounding as above.
        Case(
            (randn(g, 2, 4, 8, dtype=torch.float16), torch.tensor([1000, 1001, 2047, 4000])),
            label="float16 x of shape (2, 4, 8), positions = tensor([1000, 1001, 2047, 4000])",
            atol=1e-2,
            rtol=1e-2,
        ),
        Case(
            (randn(g, 2, 3, 4), torch.tensor([1, 2, 3])),
            check_grad=True,
            label="gradients: x of shape (2, 3, 4), positions = tensor([1, 2, 3])",
        ),
    ]


THETA = "theta = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)"
REPEAT = "angles = torch.cat([angles, angles], dim=-1)"
HALF = "rotated_half = torch.cat([-x[..., d_head // 2:], x[..., :d_head // 2]], dim=-1)"
RESULT = "return x * torch.cos(angles).to(x.dtype) + rotated_half * torch.sin(angles).to(x.dtype)"

register(
    Exercise(
        name="apply_rope",
        lesson=LESSON,
        reference=apply_rope,
        cases=_rope_cases,
        mistakes=catalogue(
            LESSON,
            "apply_rope",
            (
                "interleaved_pairs",
                "this course uses the half-split convention (GPT-NeoX, Hugging Face's Llama port): coordinate i pairs "
                "with i + d_head/2, not with its neighbour i + 1 (the interleaved layout of GPT-J and Meta's Llama code).",
                edit(REPEAT, "angles = angles.repeat_interleave(2, dim=-1)"),
                edit(HALF, "rotated_half = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)"),
            ),
            (
                "rotation_reversed",
                "rotate forwards: x * cos + rotate_half(x) * sin with rotate_half([x1, x2]) = [-x2, x1]; the code "
                "turns every pair by minus the angle.",
                edit(RESULT, "return x * torch.cos(angles).to(x.dtype) - rotated_half * torch.sin(angles).to(x.dtype)"),
            ),
            (
                "positions_from_one",
                "default positions count from 0 (torch.arange(L)): the first token is not rotated at all.",
                edit("positions = torch.arange(length)", "positions = torch.arange(1, length + 1)"),
            ),
            (
                "positions_argument_ignored",
                "when positions is given, rotate row r by positions[r], not by r.",
                edit("if positions is None:\n    positions = torch.arange(length)", "positions = torch.arange(length)"),
            ),
            (
                "frequency_per_coordinate",
                "both coordinates of a pair (i, i + d_head/2) turn by the same angle: compute d_head/2 frequencies "
                "base^(-2i/d_head) and repeat them (torch.cat([angles, angles], dim=-1)).",
                edit(THETA, "theta = base ** (-torch.arange(0, d_head, dtype=torch.float64) / d_head)"),
                edit(REPEAT, ""),
            ),
            (
                "base_ignored",
                "use the base argument in the frequencies (base ** (-2i/d_head)), not a hard-coded 10000.",
                edit(THETA, "theta = 10000.0 ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)"),
            ),
            (
                "dtype_changed",
                "return x's dtype: cast cos and sin back with .to(x.dtype) (float64 angles times a float32 x give a "
                "float64 result).",
                edit(RESULT, "return x * torch.cos(angles) + rotated_half * torch.sin(angles)"),
            ),
            (
                "angles_in_low_precision",
                "compute the angles positions * theta in float32 or float64 and cast only cos and sin to x's dtype: "
                "float16 holds about 3 significant digits, so at position 4000 the angle is off by whole radians.",
                edit(
                    "angles = positions.to(torch.float64)[:, None] * theta",
                    "angles = positions.to(x.dtype)[:, None] * theta.to(x.dtype)",
                ),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit(
                    RESULT,
                    "return (x * torch.cos(angles).to(x.dtype) + rotated_half * torch.sin(angles).to(x.dtype)).detach()",
                ),
            ),
            (
                "exponent_i_not_2i",
                "theta_i = base^(-2i/d_head): build the exponents from torch.arange(0, d_head, 2) (0, 2, 4, ...), "
                "not torch.arange(d_head // 2) (0, 1, 2, ...).",
                edit(THETA, "theta = base ** (-torch.arange(d_head // 2, dtype=torch.float64) / d_head)"),
            ),
            (
                "angles_interleaved_for_half_split",
                "in the half-split layout pair i is columns i and i + d_head/2, so its angle goes in both: "
                "torch.cat([angles, angles], dim=-1); repeat_interleave puts it in columns 2i and 2i+1 (the "
                "interleaved layout) while rotate_half pairs i with i + d_head/2.",
                edit(REPEAT, "angles = angles.repeat_interleave(2, dim=-1)"),
            ),
        ),
    )
)
