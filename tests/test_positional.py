"""Sinusoidal table (the paper's formula) and RoPE (half-split, relative-position property)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import apply_rope, rotate_half, sinusoidal_table


def test_sinusoidal_table_follows_the_formula() -> None:
    table = sinusoidal_table(50, 16)
    for p in (0, 1, 7, 49):
        for i in range(8):
            angle = p / 10000 ** (2 * i / 16)
            assert math.isclose(table[p, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(table[p, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)


def test_rope_matches_the_half_split_reference_formula() -> None:
    # Hugging Face / GPT-NeoX layout: pair coordinate i with i + d/2, rotate_half = [-x2, x1].
    x = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(0))
    inv_freq = 1.0 / 10000 ** (torch.arange(0, 8, 2).float() / 8)
    angles = torch.arange(6).float()[:, None] * inv_freq
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    expected = x * cos + torch.cat([-x[..., 4:], x[..., :4]], -1) * sin
    torch.testing.assert_close(apply_rope(x), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rotate_half(rotate_half(x)), -x)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(0, 200), n=st.integers(0, 200), shift=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_rope_scores_depend_only_on_relative_position(m, n, shift, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 16, generator=g, dtype=torch.float64), torch.randn(1, 16, generator=g, dtype=torch.float64)

    def score(i: int, j: int) -> float:
        return float(apply_rope(q, torch.tensor([i])) @ apply_rope(k, torch.tensor([j])).T)

    # float64 keeps rotations by angles up to ~500 rad exact to ~1e-12.
    assert math.isclose(score(m, n), score(m + shift, n + shift), abs_tol=1e-9)


def test_rope_preserves_norms_and_leaves_position_zero_alone() -> None:
    x = torch.randn(2, 5, 10, generator=torch.Generator().manual_seed(1))
    rotated = apply_rope(x)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rotated[:, 0], x[:, 0])
