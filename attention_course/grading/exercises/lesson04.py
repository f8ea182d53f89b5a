"""Lesson 04 exercise: a numerically stable softmax with a temperature.

A row whose entries are all -inf has no softmax (0/0); exercise 04 does not define it, so no case
has one (lesson 05 deals with fully masked rows, with the course's ``attention_course.softmax``).
"""

from __future__ import annotations

import math

import torch

from ...softmax import softmax
from ..casegen import column_major, generator, randn
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "04_softmax"


def _cases() -> list[Case]:
    g = generator(4)
    scores = randn(g, 3, 5)
    return [
        Case((torch.tensor([1.0, 2.0, 3.0]),), label="x = tensor([1., 2., 3.])"),
        Case(
            (torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0], [2.0, 2.0, 1.0]]),),
            label="a square x = tensor([[1., 2., 0.], [0.5, -1., 3.], [2., 2., 1.]]), dim=-1",
        ),
        Case((scores,), label="x of shape (3, 5), dim=-1"),
        Case((scores.T.contiguous(),), {"dim": 0}, label="x of shape (5, 3), dim=0"),
        Case((randn(g, 2, 3, 4),), {"dim": 1}, label="x of shape (2, 3, 4), dim=1"),
        Case((randn(g, 2, 4, 3),), {"dim": -2}, label="x of shape (2, 4, 3), dim=-2"),
        Case(
            (torch.tensor([[1000.0, 0.0, -1000.0], [500.0, 499.0, 0.0]]),),
            label="large scores x = tensor([[1000., 0., -1000.], [500., 499., 0.]])",
        ),
        Case(
            (torch.tensor([[-1000.0, -1001.0, -1003.0], [3.0, 1.0, 2.0]]),),
            label="very negative scores x = tensor([[-1000., -1001., -1003.], [3., 1., 2.]])",
        ),
        Case((torch.tensor([1.0, 2.0, 3.0]),), {"temperature": 0.5}, label="x = tensor([1., 2., 3.]), temperature=0.5"),
        Case((scores,), {"temperature": 4.0}, label="x of shape (3, 5), temperature=4.0"),
        Case(
            (randn(g, 4, 2, scale=3.0),),
            {"dim": 0, "temperature": 2.0},
            label="x of shape (4, 2), dim=0, temperature=2.0",
        ),
        Case((column_major(randn(g, 4, 6)),), label="x of shape (4, 6) stored column-major"),
        Case((randn(g, 1, 1, 5),), label="x of shape (1, 1, 5)"),
        Case((randn(g, 3, 4, dtype=torch.float64),), label="float64 x of shape (3, 4)"),
        # float16 keeps ~3 significant digits, so a different but valid order of operations
        # may differ from the reference by a few units in the last place.
        Case(
            (torch.tensor([12.0, 0.0, -3.0], dtype=torch.float16),),
            label="float16 x = tensor([12., 0., -3.])",
            atol=2e-3,
            rtol=2e-3,
        ),
        Case((randn(g, 2, 5),), {"temperature": 0.7}, check_grad=True, label="gradients: x (2, 5), temperature=0.7"),
        # m is the maximum of the tempered scores x / T: subtracting max(x) instead leaves exponents
        # x / T - max(x) = 200 - 100 here, and exp(100.) overflows in float32.
        Case(
            (torch.tensor([[100.0, 90.0, 0.0], [3.0, 1.0, 2.0]]),),
            {"temperature": 0.5},
            label="large scores x = tensor([[100., 90., 0.], [3., 1., 2.]]), temperature=0.5",
        ),
        # Masked scores are -inf (lesson 05): exp(-inf) = 0 gives them weight 0 as long as the row has a
        # finite score; replacing infinities by a finite number gives them weight.
        Case(
            (torch.tensor([[2.0, -math.inf, 0.0, -math.inf], [-math.inf, 1.0, 1.0, 3.0]]),),
            label="some scores -inf (masked keys): x = tensor([[2., -inf, 0., -inf], [-inf, 1., 1., 3.]])",
        ),
    ]


SHIFT = "z = z - z.amax(dim=dim, keepdim=True)"
RESULT = "return exps / exps.sum(dim=dim, keepdim=True)"

register(
    Exercise(
        name="softmax",
        lesson=LESSON,
        reference=softmax,
        cases=_cases,
        mistakes=catalogue(
            LESSON,
            "softmax",
            (
                "no_max_subtraction",
                "subtract the maximum along `dim` before exp: exp(1000.) overflows to inf and inf/inf is NaN.",
                edit(SHIFT, "z = z"),
            ),
            (
                "normalises_whole_tensor",
                "normalise along `dim` only (.sum(dim=dim, keepdim=True)), not over the whole tensor.",
                edit(SHIFT, "z = z - z.max()"),
                edit(RESULT, "return exps / exps.sum()"),
            ),
            (
                "global_max",
                "subtract each row's own maximum (x.amax(dim=dim, keepdim=True)), not the maximum of the whole tensor: "
                "a row far below the global maximum underflows to all zeros and 0/0 is NaN.",
                edit(SHIFT, "z = z - z.max()"),
            ),
            (
                "ignores_dim",
                "use the `dim` argument for both the maximum and the sum; the code always works on the last axis.",
                edit(SHIFT, "z = z - z.amax(dim=-1, keepdim=True)"),
                edit(RESULT, "return exps / exps.sum(dim=-1, keepdim=True)"),
            ),
            (
                "max_of_untempered_scores",
                "subtract the maximum of the tempered scores, max(x / temperature), not max(x): with a temperature "
                "below 1 the exponents x / temperature - max(x) can still pass 88 and exp overflows.",
                edit(SHIFT, "z = z - x.amax(dim=dim, keepdim=True)"),
            ),
            (
                "temperature_multiplied",
                "divide the scores by the temperature (x / temperature): a higher temperature must flatten the weights.",
                edit("z = x / temperature", "z = x * temperature"),
            ),
            (
                "not_normalised",
                "divide the exponentials by their sum along `dim` so that the weights add up to 1.",
                edit(RESULT, "return exps"),
            ),
            (
                "max_without_keepdim",
                "keep the reduced axis (keepdim=True) so that the maximum broadcasts back along `dim`.",
                edit(SHIFT, "z = z - z.amax(dim=dim)"),
            ),
            (
                "sum_without_keepdim",
                "keep the reduced axis when summing (exps.sum(dim=dim, keepdim=True)): without it the sums broadcast "
                "along the wrong axis.",
                edit(RESULT, "return exps / exps.sum(dim=dim)"),
            ),
            (
                "max_returns_pair",
                "x.max(dim=...) returns a pair (values, indices): use x.amax(dim=dim, keepdim=True), or take .values.",
                edit(SHIFT, "z = z - z.max(dim=dim, keepdim=True)"),
            ),
            (
                "dtype_changed",
                "return the input's dtype: a float64 (or float16) x gives a float64 (float16) result; cast back with "
                ".to(x.dtype) if you compute in float32.",
                edit("z = x / temperature", "z = x.float() / temperature"),
            ),
            (
                "in_place_on_exp_output",
                "the check also takes gradients through your softmax, and exp's backward needs its output: "
                "dividing it in place (exps /= ..., .div_(...)) breaks autograd; write exps / exps.sum(...) "
                "out of place.",
                edit(RESULT, "exps /= exps.sum(dim=dim, keepdim=True)\nreturn exps"),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit(RESULT, "return (exps / exps.sum(dim=dim, keepdim=True)).detach()"),
            ),
        ),
    )
)
