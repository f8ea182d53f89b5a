"""Lesson 03 exercise: scores divided by sqrt(d_k) (or multiplied by a given scale)."""

from __future__ import annotations

import torch

from ...qkv import scaled_attention_scores
from ..casegen import column_major, generator, randn
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "03_scaling"


def _cases() -> list[Case]:
    g = generator(3)
    q = torch.tensor([[1.0, 2.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]])  # L=2, d_k=4: sqrt(d_k) = 2
    k = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 2.0], [0.0, 0.0, 3.0, 0.0]])  # S=3
    return [
        Case((q, k), label="q of shape (2, 4), k of shape (3, 4): d_k = 4, so divide by 2"),
        Case(
            (randn(g, 2, 3, 5, 16), randn(g, 2, 3, 7, 16)), label="q of shape (2, 3, 5, 16), k of shape (2, 3, 7, 16)"
        ),
        Case((q, k), {"scale": 0.1}, label="the same 2×4 q and 3×4 k with scale=0.1"),
        # d_k = 6 is not a perfect square: an integer square root (math.isqrt) or d_k // 2 gives the wrong scale.
        Case((randn(g, 3, 6), randn(g, 5, 6)), label="q (3, 6), k (5, 6): d_k = 6, sqrt(6) is not a whole number"),
        Case((randn(g, 1, 2, 1, 5), randn(g, 1, 2, 4, 5)), label="one query: q (1, 2, 1, 5), k (1, 2, 4, 5), d_k = 5"),
        Case(
            (column_major(randn(g, 2, 4, 3)), randn(g, 2, 6, 3)),
            {"scale": 2.0},
            label="q (2, 4, 3) stored column-major, k (2, 6, 3), scale=2.0",
        ),
        Case((randn(g, 3, 7), randn(g, 2, 7)), {"scale": 1.0}, label="q (3, 7), k (2, 7), scale=1.0 (no scaling)"),
        Case(
            (randn(g, 4, 8, dtype=torch.float64), randn(g, 3, 8, dtype=torch.float64)),
            label="float64 q (4, 8), k (3, 8)",
        ),
        Case((randn(g, 2, 3, 5), randn(g, 2, 4, 5)), check_grad=True, label="gradients: q (2, 3, 5), k (2, 4, 5)"),
        # A given scale of 0 is a scale like any other (every score 0): `if not scale` or `scale or ...`
        # takes it for "not given" and divides by sqrt(d_k) instead.
        Case((q, k), {"scale": 0.0}, label="the same 2×4 q and 3×4 k with scale=0.0: every score is 0"),
    ]


DEFAULT = "scale = 1.0 / math.sqrt(q.shape[-1])"
RESULT = "return q @ k.transpose(-2, -1) * scale"

register(
    Exercise(
        name="scaled_attention_scores",
        lesson=LESSON,
        reference=scaled_attention_scores,
        cases=_cases,
        mistakes=catalogue(
            LESSON,
            "scaled_attention_scores",
            (
                "divided_by_d_k",
                "divide by the square root of d_k (math.sqrt(d_k)), not by d_k itself: the scores' standard "
                "deviation grows like sqrt(d_k).",
                edit(DEFAULT, "scale = 1.0 / q.shape[-1]"),
            ),
            (
                "multiplied_by_sqrt_d_k",
                "divide by sqrt(d_k) (multiply by 1 / sqrt(d_k)); multiplying by it makes large scores larger.",
                edit(DEFAULT, "scale = math.sqrt(q.shape[-1])"),
            ),
            (
                "sqrt_of_length",
                "d_k is the last dimension of q and k (q.shape[-1]), not the number of queries (q.shape[-2]).",
                edit(DEFAULT, "scale = 1.0 / math.sqrt(q.shape[-2])"),
            ),
            (
                "sqrt_of_n_keys",
                "d_k is the last dimension of q and k (k.shape[-1]), not the number of keys (k.shape[-2]).",
                edit(DEFAULT, "scale = 1.0 / math.sqrt(k.shape[-2])"),
            ),
            (
                "sqrt_of_first_axis",
                "q.shape[1] is d_k only for a 2-D q; with batch or head axes use q.shape[-1], the last one.",
                edit(DEFAULT, "scale = 1.0 / math.sqrt(q.shape[1])"),
            ),
            (
                "integer_square_root",
                "math.isqrt (and int(...)) round the square root down to a whole number: use math.sqrt(d_k) "
                "(d_k = 6 gives 2.449..., not 2).",
                edit(DEFAULT, "scale = 1.0 / math.isqrt(q.shape[-1])"),
            ),
            (
                "power_precedence",
                "** binds tighter than /: d_k ** -1 / 2 is (1 / d_k) / 2; write d_k ** -0.5 or 1 / math.sqrt(d_k).",
                edit(DEFAULT, "scale = q.shape[-1] ** -1 / 2"),
            ),
            (
                "zero_scale_taken_as_missing",
                "test whether `scale` was given with `if scale is None`: `if not scale` (or `scale or ...`) also "
                "replaces a given scale of 0.0 by 1 / sqrt(d_k).",
                edit("if scale is None:", "if not scale:"),
            ),
            (
                "ignores_scale",
                "when `scale` is given, multiply by it instead of dividing by sqrt(d_k).",
                edit(
                    "if scale is None:\n    scale = 1.0 / math.sqrt(q.shape[-1])",
                    "scale = 1.0 / math.sqrt(q.shape[-1])",
                ),
            ),
            (
                "divides_by_scale",
                "`scale` is a multiplier: return scores * scale (the default scale is 1 / sqrt(d_k)).",
                edit(DEFAULT, "scale = math.sqrt(q.shape[-1])"),
                edit(RESULT, "return q @ k.transpose(-2, -1) / scale"),
            ),
            (
                "default_and_given_scale",
                "a given `scale` replaces 1 / sqrt(d_k); multiply by it alone, not by both.",
                edit(
                    "if scale is None:\n    scale = 1.0 / math.sqrt(q.shape[-1])",
                    "scale = 1.0 / math.sqrt(q.shape[-1]) * (1.0 if scale is None else scale)",
                ),
            ),
            (
                "float32_forced",
                "keep the input's dtype: float64 q and k give float64 scores (no .float(), no torch.tensor(scale) "
                "of another dtype).",
                edit(RESULT, "return q.float() @ k.float().transpose(-2, -1) * scale"),
            ),
            ("detached_output", DETACHED_HINT, edit(RESULT, "return (q @ k.transpose(-2, -1) * scale).detach()")),
        ),
    )
)
