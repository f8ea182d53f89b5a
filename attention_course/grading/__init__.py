"""Feedback for learners: ``check(name, fn)`` in a notebook, ``attention-course grade`` outside.

    from attention_course.grading import check
    check("softmax", softmax)   # prints: passed / not done yet / what is wrong, with a hint

``check()`` runs the same comparison code as ``attention-course grade`` (so it prints the same
verdict), but in the learner's own kernel: only the command line's verdict, computed in a process
that never runs learner code, counts for a grade.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .registry import CatalogueError, all_exercises, get_exercise, register
from .runner import _first_line, reference_message, run_check
from .spec import Case, Exercise, Mistake, Result, Status

MARKS = {Status.PASSED: "PASS", Status.NOT_DONE: "TODO", Status.FAILED: "FAIL"}


def format_result(result: Result) -> str:
    return f"{MARKS[result.status]} {result.exercise}: {result.message}"


def check(name: str, fn: Callable[..., Any]) -> None:
    """Check the learner's ``fn`` for exercise ``name`` and print what the grader says about it.

    Returns nothing, so a notebook shows only the printed lines (``run_check`` returns the Result).
    """
    try:
        exercise = get_exercise(name)
    except CatalogueError as error:
        print(f"FAIL {name}: {error.args[0]}")
        return
    if fn is exercise.reference:
        result = Result(name, Status.FAILED, reference_message(exercise))
    else:
        try:
            result = run_check(exercise, fn)
        except Exception as error:  # a grader bug: one line, never a traceback
            result = Result(name, Status.FAILED, f"the check itself failed ({_first_line(error)}); please report this")
    print(format_result(result))


__all__ = [
    "Case",
    "CatalogueError",
    "Exercise",
    "Mistake",
    "Result",
    "Status",
    "all_exercises",
    "check",
    "format_result",
    "get_exercise",
    "register",
    "run_check",
]
