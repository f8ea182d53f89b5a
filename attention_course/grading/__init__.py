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


def check(name: str, fn: Callable[..., Any]) -> Result:
    """Check the learner's ``fn`` for exercise ``name`` and print one or two lines about it."""
    try:
        exercise = get_exercise(name)
    except KeyError as error:
        print(f"FAIL {name}: {error.args[0]}")
        return Result(name, Status.FAILED, error.args[0])
    result = run_check(exercise, fn)
    print(format_result(result))
    return result


__all__ = [
    "Case", "Exercise", "Mistake", "Result", "Status",
    "all_exercises", "check", "format_result", "get_exercise", "register", "run_check",
]
