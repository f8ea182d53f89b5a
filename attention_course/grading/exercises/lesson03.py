"""Lesson 03 exercise: scores divided by sqrt(d_k) (or multiplied by a given scale)."""

from __future__ import annotations

import math

import torch

from ...qkv import scaled_attention_scores
from ..registry import register
from ..spec import Case, Exercise, Mistake


def _cases() -> list[Case]:
    generator = torch.Generator().manual_seed(3)
    q = torch.tensor([[1.0, 2.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]])  # L=2, d_k=4: sqrt(d_k) = 2
    k = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 2.0], [0.0, 0.0, 3.0, 0.0]])  # S=3
    batch_q = torch.randn(2, 3, 5, 16, generator=generator)  # (B, heads, L, d_k)
    batch_k = torch.randn(2, 3, 7, 16, generator=generator)
    return [
        Case((q, k), label="q of shape (2, 4), k of shape (3, 4): d_k = 4, so divide by 2"),
        Case((batch_q, batch_k), label="q of shape (2, 3, 5, 16), k of shape (2, 3, 7, 16)"),
        Case((q, k), {"scale": 0.1}, label="the same 2×4 q and 3×4 k with scale=0.1"),
    ]


def _divided_by_d_k(q, k, scale=None):
    scale = 1.0 / q.shape[-1] if scale is None else scale
    return q @ k.transpose(-2, -1) * scale


def _multiplied_by_sqrt_d_k(q, k, scale=None):
    scale = math.sqrt(q.shape[-1]) if scale is None else scale
    return q @ k.transpose(-2, -1) * scale


def _sqrt_of_length(q, k, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-2]) if scale is None else scale
    return q @ k.transpose(-2, -1) * scale


def _sqrt_of_n_keys(q, k, scale=None):
    scale = 1.0 / math.sqrt(k.shape[-2]) if scale is None else scale
    return q @ k.transpose(-2, -1) * scale


def _ignores_scale(q, k, scale=None):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def _divides_by_scale(q, k, scale=None):
    divisor = math.sqrt(q.shape[-1]) if scale is None else scale
    return q @ k.transpose(-2, -1) / divisor


def _sqrt_of_first_axis(q, k, scale=None):
    scale = 1.0 / math.sqrt(q.shape[1]) if scale is None else scale
    return q @ k.transpose(-2, -1) * scale


register(Exercise(
    name="scaled_attention_scores",
    lesson="03_scaling",
    reference=scaled_attention_scores,
    cases=_cases,
    mistakes=(
        Mistake("divided_by_d_k",
                "divide by the square root of d_k (math.sqrt(d_k)), not by d_k itself: the scores' standard "
                "deviation grows like sqrt(d_k).",
                _divided_by_d_k),
        Mistake("multiplied_by_sqrt_d_k",
                "divide by sqrt(d_k) (multiply by 1 / sqrt(d_k)); multiplying by it makes large scores larger.",
                _multiplied_by_sqrt_d_k),
        Mistake("sqrt_of_length",
                "d_k is the last dimension of q and k (q.shape[-1]), not the number of queries (q.shape[-2]).",
                _sqrt_of_length),
        Mistake("sqrt_of_n_keys",
                "d_k is the last dimension of q and k (k.shape[-1]), not the number of keys (k.shape[-2]).",
                _sqrt_of_n_keys),
        Mistake("sqrt_of_first_axis",
                "q.shape[1] is d_k only for a 2-D q; with batch or head axes use q.shape[-1], the last one.",
                _sqrt_of_first_axis),
        Mistake("ignores_scale",
                "when `scale` is given, multiply by it instead of dividing by sqrt(d_k).",
                _ignores_scale),
        Mistake("divides_by_scale",
                "`scale` is a multiplier: return scores * scale (the default scale is 1 / sqrt(d_k)).",
                _divides_by_scale),
    ),
))
