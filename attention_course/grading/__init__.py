"""Feedback for learners: ``check(name, fn)`` in a notebook, ``attention-course grade`` outside.

    from attention_course.grading import check
    check("softmax", softmax)   # prints: passed / not done yet / what is wrong, with a hint
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .registry import all_exercises, get_exercise, register
from .runner import run_check
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
    except KeyError as error:
        print(f"FAIL {name}: {error.args[0]}")
        return
    print(format_result(run_check(exercise, fn)))


__all__ = [
    "Case", "Exercise", "Mistake", "Result", "Status",
    "all_exercises", "check", "format_result", "get_exercise", "register", "run_check",
]
