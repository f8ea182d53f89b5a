"""Run one exercise's checks against a learner's function; never let the learner's code crash us."""

from __future__ import annotations

import contextlib
import io
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

from .compare import clone, difference, same, short
from .spec import Case, Exercise, Mistake, Result, Status


class TimeLimitExceeded(BaseException):
    """Raised inside the learner's code when a check runs out of time (BaseException so that a
    learner's ``except Exception`` cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (main thread only; elsewhere, no limit is set here and
    the grader's subprocess time-out is the guard)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise TimeLimitExceeded

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def _call_quietly(fn: Callable[..., Any], case: Case, seconds: float) -> Any:
    """Call ``fn`` on a fresh copy of the case's inputs, discarding whatever it prints."""
    with time_limit(seconds), contextlib.redirect_stdout(_Discard()), contextlib.redirect_stderr(_Discard()):
        return fn(*clone(case.args), **clone(case.kwargs))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


def _diagnose(exercise: Exercise, case: Case, got: Any = None, error: BaseException | None = None) -> Mistake | None:
    """The first catalogued mistake that behaves like the learner's code on this case."""
    for mistake in exercise.mistakes:
        try:
            theirs = _call_quietly(mistake.impl, case, exercise.time_limit)
        except TimeLimitExceeded:
            continue
        except Exception as mistake_error:  # the mistake itself raises on this case
            if error is not None and type(mistake_error) is type(error):
                return mistake
            continue
        if error is None and difference(got, theirs, **_tolerances(exercise, case), equal_nan=True) is None:
            return mistake
    return None


class _Tolerances(TypedDict):
    atol: float
    rtol: float


def _tolerances(exercise: Exercise, case: Case) -> _Tolerances:
    return {"atol": exercise.atol if case.atol is None else case.atol,
            "rtol": exercise.rtol if case.rtol is None else case.rtol}


def _where(case: Case) -> str:
    return f"for {case.label}" if case.label else "on one of the test cases"


def run_check(exercise: Exercise, fn: Any) -> Result:
    """Grade ``fn`` as the learner's version of ``exercise``: passed, not done, or failed + hint."""
    name = exercise.name
    if not callable(fn):
        return Result(name, Status.FAILED, f"`{name}` should be a function, but it is {short(fn)}")
    if exercise.custom_check is not None:
        try:
            status, message = exercise.custom_check(fn)
        except Exception as error:  # a checker bug must not take the grader down
            return Result(name, Status.FAILED, f"the check itself failed ({_first_line(error)}); please report this")
        return Result(name, status, message)

    cases = exercise.cases()
    for case in cases:
        inputs = clone((case.args, case.kwargs))
        try:
            with time_limit(exercise.time_limit), contextlib.redirect_stdout(_Discard()), contextlib.redirect_stderr(_Discard()):
                got = fn(*inputs[0], **inputs[1])
        except NotImplementedError:
            return Result(name, Status.NOT_DONE, f"not done yet: replace `raise NotImplementedError` in `{name}` with your code")
        except TimeLimitExceeded:
            return Result(name, Status.FAILED,
                          f"stopped after {exercise.time_limit:g} s {_where(case)}: is there an endless loop?")
        except Exception as error:
            mistake = _diagnose(exercise, case, error=error)
            hint = f" Hint: {mistake.hint}" if mistake else ""
            return Result(name, Status.FAILED, f"raised {_first_line(error)} {_where(case)}.{hint}")
        if not same(inputs, (case.args, case.kwargs)):
            return Result(name, Status.FAILED,
                          f"changed its inputs in place {_where(case)}: use out-of-place operations "
                          "(x.masked_fill(...), not x.masked_fill_(...); y = x - m, not x -= m)")
        expected = _call_quietly(exercise.reference, case, max(exercise.time_limit, 60.0))
        problem = difference(got, expected, **_tolerances(exercise, case))
        if problem is None:
            continue
        mistake = _diagnose(exercise, case, got=got)
        lines = [f"{problem} {_where(case)}."]
        if mistake:
            lines.append(f"Hint: {mistake.hint}")
        shown_expected, shown_got = short(expected), short(got)
        if "tensor of shape" not in shown_expected + shown_got:  # small enough to read
            lines += [f"expected {shown_expected}", f"got      {shown_got}"]
        return Result(name, Status.FAILED, "\n   ".join(lines))
    return Result(name, Status.PASSED, f"passed ({len(cases)} cases)")
