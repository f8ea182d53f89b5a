"""What an exercise is, for the grader: the function to write, its reference, cases and mistakes.

Each lesson with exercises registers them in ``attention_course/grading/exercises/NN_topic.py``::

    register(Exercise(
        name="softmax",                 # the function the learner defines (and the check() key)
        lesson="04_softmax",            # the notebook stem in solutions/ and exercises/
        reference=reference_softmax,    # the package's implementation, same signature
        cases=softmax_cases,            # () -> list[Case], deterministic (seeded inside)
        mistakes=(Mistake("no_max_subtraction", "Subtract the row maximum ...", _no_max), ...),
    ))

The grader calls the learner's function and the reference on every case, compares the results
(tensors, numbers, and tuples/lists/dicts of them), and when they differ, looks for a mistake in
the catalogue whose output matches the learner's, to name it in the hint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PASSED = "passed"
    NOT_DONE = "not done"
    FAILED = "failed"


@dataclass(frozen=True)
class Result:
    """One exercise's grade: a status and a message of one or two lines for the learner."""

    exercise: str
    status: Status
    message: str

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED


@dataclass(frozen=True)
class Case:
    """One call of the function under test. ``label`` is what the learner sees when it fails.

    ``atol``/``rtol`` override the exercise's tolerances for this case (e.g. a float16 case).
    ``select`` is applied to both the learner's and the reference's output (e.g. keep only the rows of
    real tokens, whose values the exercise defines).
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    atol: float | None = None
    rtol: float | None = None
    # Contracts beyond values (the runner enforces each one that is set):
    check_grad: bool = False  # gradients w.r.t. every float input (and module parameter) must equal the reference's
    max_alloc_bytes: int | None = None  # no single tensor the learner's call allocates may be larger than this
    select: Callable[[Any], Any] | None = None  # what the instructions define, taken from an output before comparing


@dataclass(frozen=True)
class Mistake:
    """A known wrong implementation and the hint that names it.

    ``impl`` has the exercise's signature and must be self-contained: it may use ``torch``,
    ``math`` and the ``attention_course`` package only, because the grader's own tests paste its
    source into a copy of the solution notebook.
    """

    name: str
    hint: str
    impl: Callable[..., Any]


@dataclass(frozen=True)
class Exercise:
    """An exercise: the learner writes ``name`` with the signature of ``reference``.

    ``custom_check``, when given, replaces the standard case-by-case comparison: it receives the
    learner's function and returns ``(Status, message)`` (used where the learner's code must run in
    a sandbox, e.g. a Triton kernel).

    ``updates_in_place``, when given, names the inputs a correct solution may write into (a cache
    with room for the new tokens): it receives a case's ``args``, ``kwargs`` and the reference's
    output and returns ``{argument index: what that input holds once correctly updated}``. Such an
    input must then be left unchanged or hold exactly that (within the tolerances); any other input
    changed in place still fails.

    ``also_forbidden`` lists other functions of the package that compute what the exercise asks
    (``masked_attention`` is one call of ``scaled_dot_product_attention``): code that calls one of
    them fails as code that calls the reference does.
    """

    name: str
    lesson: str
    reference: Callable[..., Any]
    cases: Callable[[], list[Case]]
    mistakes: tuple[Mistake, ...] = ()
    atol: float = 1e-5
    rtol: float = 1e-4
    time_limit: float = 10.0
    custom_check: Callable[[Callable[..., Any]], tuple[Status, str]] | None = None
    updates_in_place: Callable[[tuple[Any, ...], dict[str, Any], Any], dict[int, Any]] | None = None
    also_forbidden: tuple[Callable[..., Any], ...] = ()
