"""Lesson 04 exercise: a numerically stable softmax with a temperature."""

from __future__ import annotations

import torch

from ...softmax import softmax
from ..registry import register
from ..spec import Case, Exercise, Mistake


def _cases() -> list[Case]:
    generator = torch.Generator().manual_seed(4)
    scores = torch.randn(3, 5, generator=generator)
    batch = torch.randn(2, 3, 4, generator=generator)
    return [
        Case((torch.tensor([1.0, 2.0, 3.0]),), label="x = tensor([1., 2., 3.])"),
        Case((scores,), label="x of shape (3, 5), dim=-1"),
        Case((scores.T.contiguous(),), {"dim": 0}, label="x of shape (5, 3), dim=0"),
        Case((batch,), {"dim": 1}, label="x of shape (2, 3, 4), dim=1"),
        Case((torch.tensor([[1000.0, 0.0, -1000.0], [500.0, 499.0, 0.0]]),),
             label="large scores x = tensor([[1000., 0., -1000.], [500., 499., 0.]])"),
        Case((torch.tensor([1.0, 2.0, 3.0]),), {"temperature": 0.5}, label="x = tensor([1., 2., 3.]), temperature=0.5"),
        Case((scores,), {"temperature": 4.0}, label="x of shape (3, 5), temperature=4.0"),
        # float16 keeps ~3 significant digits, so a different but valid order of operations
        # may differ from the reference by a few units in the last place.
        Case((torch.tensor([12.0, 0.0, -3.0], dtype=torch.float16),), label="float16 x = tensor([12., 0., -3.])",
             atol=2e-3, rtol=2e-3),
    ]


def _no_max_subtraction(x, dim=-1, temperature=1.0):
    exps = torch.exp(x / temperature)
    return exps / exps.sum(dim=dim, keepdim=True)


def _ignores_dim(x, dim=-1, temperature=1.0):
    z = x / temperature
    exps = torch.exp(z - z.amax(dim=-1, keepdim=True))
    return exps / exps.sum(dim=-1, keepdim=True)


def _normalises_whole_tensor(x, dim=-1, temperature=1.0):
    z = x / temperature
    exps = torch.exp(z - z.max())
    return exps / exps.sum()


def _global_max(x, dim=-1, temperature=1.0):
    z = x / temperature
    exps = torch.exp(z - z.max())
    return exps / exps.sum(dim=dim, keepdim=True)


def _temperature_multiplied(x, dim=-1, temperature=1.0):
    z = x * temperature
    exps = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return exps / exps.sum(dim=dim, keepdim=True)


def _not_normalised(x, dim=-1, temperature=1.0):
    z = x / temperature
    return torch.exp(z - z.amax(dim=dim, keepdim=True))


def _max_without_keepdim(x, dim=-1, temperature=1.0):
    z = x / temperature
    exps = torch.exp(z - z.amax(dim=dim))
    return exps / exps.sum(dim=dim, keepdim=True)


register(Exercise(
    name="softmax",
    lesson="04_softmax",
    reference=softmax,
    cases=_cases,
    mistakes=(
        Mistake("no_max_subtraction",
                "subtract the maximum along `dim` before exp: exp(1000.) overflows to inf and inf/inf is NaN.",
                _no_max_subtraction),
        Mistake("normalises_whole_tensor",
                "normalise along `dim` only (.sum(dim=dim, keepdim=True)), not over the whole tensor.",
                _normalises_whole_tensor),
        Mistake("global_max",
                "subtract each row's own maximum (x.amax(dim=dim, keepdim=True)), not the maximum of the whole tensor: "
                "a row far below the global maximum underflows to all zeros and 0/0 is NaN.",
                _global_max),
        Mistake("ignores_dim",
                "use the `dim` argument for both the maximum and the sum; the code always works on the last axis.",
                _ignores_dim),
        Mistake("temperature_multiplied",
                "divide the scores by the temperature (x / temperature): a higher temperature must flatten the weights.",
                _temperature_multiplied),
        Mistake("not_normalised",
                "divide the exponentials by their sum along `dim` so that the weights add up to 1.",
                _not_normalised),
        Mistake("max_without_keepdim",
                "keep the reduced axis (keepdim=True) so that the maximum broadcasts back along `dim`.",
                _max_without_keepdim),
    ),
))
