"""Grade one exercise in two halves that never share a process in ``attention-course grade``.

- :func:`call_cases` runs the learner's function on each case and records what happened in plain
  data (:class:`CallRecord`: output, exception, inputs after the call, gradients, largest
  allocation, whether the course's own reference was called). In ``attention-course grade`` it runs
  in the worker, next to the learner's code; the records travel back as plain tensors and values.
- :func:`judge` turns the records into a verdict: it computes the reference's outputs, compares,
  checks the contracts and names a catalogued mistake. It runs in the grader's process, where
  no learner code runs, so nothing the learner patches can change it.

``run_check(exercise, fn)`` does both in one process (``check()`` in a notebook, and the tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from types import CodeType
from typing import Any, TypedDict

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves, tree_map

from .compare import clone, difference, from_wire, plain, same, short, to_wire
from .spec import Case, Exercise, Mistake, Result, Status

RETURNED, RAISED, NOT_DONE, TIMED_OUT = "returned", "raised", "not done", "timed out"
REFERENCE_TIME_LIMIT = 60.0  # seconds for the reference (or a catalogued mistake) on one case
ALLOC_SLOWDOWN = 3.0  # a case that measures the largest allocation gets this many times its time limit


class TimeLimitExceeded(BaseException):
    """Raised inside the learner's code when a check runs out of time (BaseException so that a
    learner's ``except Exception`` cannot swallow it; a bare ``except:`` can, which is why the
    grader also watches the worker from outside)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (main thread only; elsewhere, no limit is set here and
    the grader's watch on the worker is the guard)."""
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


def error_signature(error: BaseException) -> tuple[str, str]:
    """(exception type's name, first line of its message): what two raising codes must share."""
    text = str(error).strip().splitlines()
    return type(error).__name__, _clip(text[0] if text else "")


def _clip(text: str, limit: int = 160) -> str:
    """``text`` cut to at most ``limit`` characters, at a space, with an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


class _BackwardFailed(Exception):
    """The learner's function returned, but differentiating through its output raised ``__cause__``."""


def backward_signature(error: BaseException) -> tuple[str, str]:
    """``error_signature`` of an error raised while the check differentiated through the learner's output."""
    kind, text = error_signature(error)
    if "modified by an inplace operation" in str(error):
        saved_by = re.search(r"output \d+ of (\w+?)(?:Backward\d*)?,", str(error))
        operation = f" for the backward of `{saved_by.group(1).lower()}`" if saved_by else ""
        text = (
            f"a tensor that autograd saved{operation} was changed in place (`x /= s`, `x.exp_()`, "
            "`x[...] = 0`, `out=`); compute it out of place (`x = x / s`)"
        )
    return kind, f"in the backward pass (the check differentiates through your function): {text}"


# ------------------------------------------------------------------ the tripwire on the reference


def reference_codes(reference: Any) -> frozenset[int]:
    """Ids of the code objects that make up ``reference`` (its function, or a class's methods)."""
    codes: set[int] = set()
    inner = getattr(reference, "fn", reference)  # a Triton JITFunction keeps its function in .fn
    code = getattr(inner, "__code__", None)
    if isinstance(code, CodeType):
        codes.add(id(code))
    if isinstance(inner, type):
        for attribute in vars(inner).values():
            code = getattr(attribute, "__code__", None)
            if isinstance(code, CodeType):
                codes.add(id(code))
    return frozenset(codes)


@contextlib.contextmanager
def _tripwire(codes: frozenset[int]) -> Iterator[list[bool]]:
    """While active, ``hit[0]`` becomes True when any function whose code is in ``codes`` starts.

    A global trace function sees each Python frame start (not C calls, and it asks for no line
    events), so the learner's torch operations run at full speed.
    """
    hit = [False]
    if not codes:
        yield hit
        return

    def tracer(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and id(frame.f_code) in codes:
            hit[0] = True

    previous = sys.gettrace()
    set_trace(tracer)
    threading.settrace(tracer)
    try:
        yield hit
    finally:
        set_trace(previous)
        threading.settrace(None)  # type: ignore[arg-type]


def set_trace(tracer: Any) -> None:
    """``sys.settrace``, called from this one code object (the worker's audit hook allows no other)."""
    sys.settrace(tracer)


# ------------------------------------------------------------------ calling a function on one case


@dataclass
class CallRecord:
    """What one call of a function did, in plain data (what the worker sends back)."""

    outcome: str  # RETURNED, RAISED, NOT_DONE or TIMED_OUT
    output: Any = None
    error: tuple[str, str] | None = None  # error_signature of what it raised
    inputs_after: Any = None  # (args, kwargs) after the call, to see whether it changed them
    grads: list[Tensor | None] | None = None  # gradients of the case's loss w.r.t. grad_leaves()
    largest_alloc: int | None = None  # bytes of the largest tensor allocated during the call
    called_reference: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "output": to_wire(self.output),
            "error": list(self.error) if self.error else None,
            "inputs_after": to_wire(self.inputs_after),
            "grads": to_wire(self.grads),
            "largest_alloc": self.largest_alloc,
            "called_reference": bool(self.called_reference),
        }

    @classmethod
    def from_wire(cls, data: Any) -> CallRecord:
        """Rebuild a record from the worker's plain data, refusing anything malformed."""
        if not isinstance(data, dict) or data.get("outcome") not in (RETURNED, RAISED, NOT_DONE, TIMED_OUT):
            raise ValueError("malformed record")
        error = data.get("error")
        if error is not None and not (
            isinstance(error, list) and len(error) == 2 and all(isinstance(e, str) for e in error)
        ):
            raise ValueError("malformed error")
        grads = from_wire(data.get("grads"))
        if grads is not None and not (
            isinstance(grads, list) and all(g is None or isinstance(g, Tensor) for g in grads)
        ):
            raise ValueError("malformed gradients")
        alloc = data.get("largest_alloc")
        if alloc is not None and (not isinstance(alloc, int) or isinstance(alloc, bool)):
            raise ValueError("malformed allocation")
        return cls(
            str(data["outcome"]),
            from_wire(data.get("output")),
            (error[0], error[1]) if error else None,
            from_wire(data.get("inputs_after")),
            grads,
            alloc,
            data.get("called_reference") is True,
        )


@dataclass(frozen=True)
class CallPlan:
    """One case as the worker needs it: inputs, and for contract checks the loss's weights."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    cotangent: Any = None  # with check_grad: weights of the loss sum(output * cotangent), zero outside select
    measure_alloc: bool = False
    label: str = ""
    expects_error: bool = False  # the reference raises here: the instructions ask for an exception


def grad_leaves(value: Any) -> list[Tensor]:
    """The tensors whose gradients a check_grad case compares: floating inputs and module parameters."""
    leaves: list[Tensor] = []

    def walk(item: Any) -> None:
        if isinstance(item, Tensor):
            if item.is_floating_point() and all(item is not seen for seen in leaves):
                leaves.append(item)
        elif isinstance(item, torch.nn.Module):
            for parameter in item.parameters():
                walk(parameter)
        elif isinstance(item, tuple | list):
            for element in item:
                walk(element)
        elif isinstance(item, dict):
            for element in item.values():
                walk(element)
        elif is_dataclass(item) and not isinstance(item, type):
            for f in fields(item):
                walk(getattr(item, f.name, None))

    walk(value)
    return leaves


def _loss(output: Any, cotangent: Any) -> Tensor | None:
    """sum(output * cotangent) over matching tensors (None when nothing in the output can carry a gradient)."""
    if isinstance(cotangent, Tensor):
        if (
            isinstance(output, Tensor)
            and output.shape == cotangent.shape
            and output.is_floating_point()
            and output.requires_grad
        ):
            return (output * cotangent.to(output.dtype)).sum()
        return None
    if isinstance(cotangent, tuple | list) and isinstance(output, tuple | list) and len(output) == len(cotangent):
        terms = [t for t in (_loss(o, c) for o, c in zip(output, cotangent, strict=True)) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None
    if isinstance(cotangent, dict) and isinstance(output, dict):
        terms = [t for t in (_loss(output[k], c) for k, c in cotangent.items() if k in output) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None
    return None


def call_case(
    fn: Callable[..., Any], plan: CallPlan, seconds: float, forbidden: frozenset[int] = frozenset()
) -> CallRecord:
    """Call ``fn`` on fresh copies of the plan's inputs under a time limit, printing nothing."""
    from ..measure import largest_allocation

    args, kwargs = clone(plan.args), clone(plan.kwargs)
    leaves: list[Tensor] = []
    if plan.cotangent is not None:
        leaves = grad_leaves((args, kwargs))
        for leaf in leaves:
            if leaf.is_leaf:
                leaf.requires_grad_(True)
                leaf.grad = None
    record = CallRecord(RETURNED)
    with _tripwire(forbidden) as hit:
        try:
            # The allocation spy sees every operator: give its calls room (it can be several times slower).
            limit = seconds * ALLOC_SLOWDOWN if plan.measure_alloc else seconds
            with time_limit(limit), contextlib.redirect_stdout(_Discard()), contextlib.redirect_stderr(_Discard()):
                if plan.measure_alloc:
                    record.output, record.largest_alloc = largest_allocation(fn, *args, **kwargs)
                else:
                    record.output = fn(*args, **kwargs)
                if plan.cotangent is not None:
                    loss = _loss(record.output, plan.cotangent)
                    if loss is None or not loss.requires_grad:
                        record.grads = [None] * len(leaves)
                    else:
                        try:
                            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
                        except Exception as error:
                            raise _BackwardFailed from error
                        record.grads = [None if g is None else g.detach() for g in grads]
        except _BackwardFailed as failed:
            assert failed.__cause__ is not None
            record = CallRecord(RAISED, error=backward_signature(failed.__cause__))
        except NotImplementedError:
            record = CallRecord(NOT_DONE)
        except TimeLimitExceeded:
            record = CallRecord(TIMED_OUT)
        except (Exception, SystemExit, KeyboardInterrupt) as error:  # exit() in a function is an error too
            record = CallRecord(RAISED, error=error_signature(error))
        record.called_reference = hit[0]
    if record.outcome == RETURNED:  # plain data from here on, as if it had come from the worker
        record.output, record.inputs_after = plain(record.output), plain((args, kwargs))
    return record


def call_cases(
    fn: Callable[..., Any],
    plans: list[CallPlan],
    seconds: float,
    forbidden: frozenset[int] = frozenset(),
    on_case: Callable[[int], None] | None = None,
) -> list[CallRecord]:
    """Records for the plans in order, stopping after the first call that does not return (or raise where it should)."""
    records = []
    for index, plan in enumerate(plans):
        if on_case is not None:
            on_case(index)
        record = call_case(fn, plan, seconds, forbidden)
        records.append(record)
        if record.outcome != RETURNED and not (record.outcome == RAISED and plan.expects_error):
            break
    return records


# ------------------------------------------------------------------ the parent's half: the verdict


class Tolerances(TypedDict):
    atol: float
    rtol: float


def _tolerances(exercise: Exercise, case: Case) -> Tolerances:
    return {
        "atol": exercise.atol if case.atol is None else case.atol,
        "rtol": exercise.rtol if case.rtol is None else case.rtol,
    }


def _where(case: Case) -> str:
    return f"for {case.label}" if case.label else "on one of the test cases"


def _selected(case: Case, value: Any) -> Any:
    if case.select is None:
        return value
    try:
        return case.select(value)
    except Exception:
        return value  # a learner's output of the wrong structure: compare it whole, the message says why


def _cotangent(case: Case, expected: Any) -> Any:
    """Seeded weights shaped like the reference's output, zero where ``select`` drops entries."""
    generator = torch.Generator().manual_seed(1234)

    def weights(value: Any) -> Any:
        if isinstance(value, Tensor):
            if not value.is_floating_point():
                return None
            return torch.randn(value.shape, generator=generator, dtype=torch.float64).to(value.dtype)
        if isinstance(value, tuple | list):
            return type(value)(weights(v) for v in value)
        if isinstance(value, dict):
            return {k: weights(v) for k, v in value.items()}
        return None

    cotangent = weights(expected)
    if case.select is None:
        return cotangent
    try:  # the entries select keeps: the gradient of sum(select(ones)) is 1 there and 0 elsewhere
        ones = _map_tensors(
            expected,
            lambda t: torch.ones_like(t, dtype=torch.float64).requires_grad_(True) if t.is_floating_point() else t,
        )
        picked = [t for t in _tensors(case.select(ones)) if t.requires_grad]
        total = torch.stack([t.sum() for t in picked]).sum()
        leaves = [t for t in _tensors(ones) if t.requires_grad]
        indicators = torch.autograd.grad(total, leaves, allow_unused=True)
    except Exception:
        return cotangent
    masks = iter(indicators)
    return _map_tensors(
        cotangent,
        lambda t: t * (0 if (m := next(masks)) is None else (m != 0)).to(t.dtype) if t.is_floating_point() else t,
    )


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _map_tensors(value: Any, fn: Callable[[Tensor], Any]) -> Any:
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, tuple | list):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def plan_cases(exercise: Exercise, cases: list[Case]) -> tuple[list[CallPlan], list[CallRecord]]:
    """The plans to send to the worker and the reference's own records on them (computed here)."""
    plans, expected = [], []
    for case in cases:
        bare = CallPlan(case.args, case.kwargs, measure_alloc=False, label=case.label)
        reference = call_case(exercise.reference, bare, max(exercise.time_limit, REFERENCE_TIME_LIMIT))
        cotangent = _cotangent(case, reference.output) if case.check_grad and reference.outcome == RETURNED else None
        plan = CallPlan(case.args, case.kwargs, cotangent, case.max_alloc_bytes is not None, case.label)
        if cotangent is not None:
            with_grads = call_case(exercise.reference, plan, max(exercise.time_limit, REFERENCE_TIME_LIMIT))
            if with_grads.outcome == RETURNED:
                reference = with_grads
            else:  # the reference is not differentiable here: gradients are compared where it is
                plan = CallPlan(case.args, case.kwargs, None, case.max_alloc_bytes is not None, case.label)
        plans.append(dataclasses.replace(plan, expects_error=reference.outcome == RAISED))
        expected.append(reference)
    return plans, expected


def _leaf_names(case: Case) -> list[str]:
    """Readable names of grad_leaves((args, kwargs)), in the same order."""
    names: list[str] = []
    seen: list[Tensor] = []

    def walk(item: Any, name: str) -> None:
        if isinstance(item, Tensor):
            if item.is_floating_point() and all(item is not s for s in seen):
                seen.append(item)
                names.append(name)
        elif isinstance(item, torch.nn.Module):
            for parameter_name, parameter in item.named_parameters():
                walk(parameter, f"{name}.{parameter_name}")
        elif isinstance(item, tuple | list):
            for i, element in enumerate(item):
                walk(element, f"{name}[{i}]")
        elif isinstance(item, dict):
            for key, element in item.items():
                walk(element, f"{key}" if name == "" else f"{name}[{key!r}]")
        elif is_dataclass(item) and not isinstance(item, type):
            for f in fields(item):
                walk(getattr(item, f.name, None), f"{name}.{f.name}")

    for i, arg in enumerate(case.args):
        walk(arg, f"argument {i + 1}")
    walk(case.kwargs, "")
    return names


def _grad_problem(exercise: Exercise, case: Case, got: CallRecord, expected: CallRecord) -> str | None:
    if expected.grads is None:
        return None
    names = _leaf_names(case)
    theirs = got.grads or [None] * len(expected.grads)
    for i, reference_grad in enumerate(expected.grads):
        if reference_grad is None:
            continue
        name = names[i] if i < len(names) else f"input {i + 1}"
        grad = theirs[i] if i < len(theirs) else None
        if grad is None:
            return (
                f"no gradient reaches `{name}` {_where(case)}: the output does not depend on it (is it used?), "
                "or is cut off from autograd (.detach(), .item(), .data, torch.no_grad() or a tensor rebuilt from numbers)"
            )
        problem = difference(grad, reference_grad, **_tolerances(exercise, case), where=f"gradient w.r.t. `{name}`")
        if problem:
            return f"{problem} {_where(case)}"
    return None


def _alloc_problem(case: Case, got: CallRecord) -> str | None:
    if case.max_alloc_bytes is None or got.largest_alloc is None or got.largest_alloc <= case.max_alloc_bytes:
        return None
    return (
        f"allocated a tensor of {got.largest_alloc:,} bytes {_where(case)}; this exercise allows "
        f"{case.max_alloc_bytes:,}. It must not build a tensor that grows with both L and S (the full "
        "L x S score matrix, or one row of tiles against every key): work on one block of keys at a time"
    )


def _inputs_problem(exercise: Exercise, case: Case, got: CallRecord, expected: CallRecord) -> str | None:
    """How the call changed its inputs in a way a correct solution may not, or None.

    An input named by ``exercise.updates_in_place`` may be left as it was or hold its updated value.
    """
    original = plain((case.args, case.kwargs))
    if same(got.inputs_after, original):
        return None
    updated = (
        {} if exercise.updates_in_place is None else exercise.updates_in_place(case.args, case.kwargs, expected.output)
    )
    after_args, after_kwargs = got.inputs_after
    if updated and same(after_kwargs, original[1]) and len(after_args) == len(original[0]):
        changed = [
            i for i, (after, before) in enumerate(zip(after_args, original[0], strict=True)) if not same(after, before)
        ]
        if set(changed) <= updated.keys():
            for index in changed:
                if difference(after_args[index], plain(updated[index]), **_tolerances(exercise, case)):
                    return (
                        f"wrote into argument {index + 1} in place {_where(case)}, but not what it must hold "
                        "after this step: the new tokens' entries where the reference puts them, nothing else"
                    )
            return None
    return (
        f"changed its inputs in place {_where(case)}: use out-of-place operations "
        "(x.masked_fill(...), not x.masked_fill_(...); y = x - m, not x -= m; a new list, not .append)"
    )


def _verdict_for_case(exercise: Exercise, case: Case, got: CallRecord, expected: CallRecord) -> str | None:
    """What is wrong with ``got`` on this case (one line), or None; outcomes other than RETURNED excluded."""
    problem = _inputs_problem(exercise, case, got, expected)
    if problem:
        return problem
    expected_output = plain(expected.output)
    problem = difference(_selected(case, got.output), _selected(case, expected_output), **_tolerances(exercise, case))
    if problem:
        return f"{problem} {_where(case)}."
    problem = _alloc_problem(case, got) or _grad_problem(exercise, case, got, expected)
    return f"{problem}." if problem else None


def _behaves_alike(
    exercise: Exercise, case: Case, learner: CallRecord, mistake: CallRecord, expected: CallRecord, whole: bool = False
) -> bool:
    """Whether a catalogued mistake does on this case what the learner's code does (``whole``: on the
    whole output, including what ``select`` leaves out)."""
    if learner.outcome != mistake.outcome:
        return False
    if learner.outcome == RAISED:
        return learner.error == mistake.error  # same type AND same first line, or it may be another mistake
    if learner.outcome != RETURNED:
        return False
    if (_inputs_problem(exercise, case, learner, expected) is None) != (
        _inputs_problem(exercise, case, mistake, expected) is None
    ):
        return False  # one changes its inputs in place where it may not, the other does not
    tolerances = _tolerances(exercise, case)
    pick = (lambda value: value) if whole else (lambda value: _selected(case, value))
    if difference(pick(learner.output), pick(plain(mistake.output)), **tolerances, equal_nan=True):
        return False
    if case.max_alloc_bytes is not None and learner.largest_alloc is not None and mistake.largest_alloc is not None:
        if (learner.largest_alloc > case.max_alloc_bytes) != (mistake.largest_alloc > case.max_alloc_bytes):
            return False
    if expected.grads is not None:
        ours, theirs = learner.grads or [], mistake.grads or []
        for i, reference_grad in enumerate(expected.grads):
            if reference_grad is None:
                continue
            a = ours[i] if i < len(ours) else None
            b = theirs[i] if i < len(theirs) else None
            if (a is None) != (b is None) or (a is not None and difference(a, b, **tolerances, equal_nan=True)):
                return False
    return True


def _diagnose(exercise: Exercise, case: Case, plan: CallPlan, got: CallRecord, expected: CallRecord) -> Mistake | None:
    """The first catalogued mistake that behaves like the learner's code on this case.

    Where the case selects part of the output, a mistake that matches the whole output is preferred
    (two mistakes may agree on the rows the exercise defines and differ elsewhere).
    """
    records = []
    for mistake in exercise.mistakes:
        theirs = call_case(mistake.impl, plan, max(exercise.time_limit, REFERENCE_TIME_LIMIT))
        if _behaves_alike(exercise, case, got, theirs, expected, whole=True):
            return mistake
        records.append((mistake, theirs))
    if case.select is not None:
        match = next((m for m, theirs in records if _behaves_alike(exercise, case, got, theirs, expected)), None)
        if match is not None:
            return match
    floats = [t for t in tree_leaves(got.output) if isinstance(t, Tensor) and t.is_floating_point()]
    if got.outcome == RETURNED and any(t.isnan().any() for t in floats) and not all(t.isnan().all() for t in floats):
        # Code that leaves NaN where a catalogued mistake has 0 (torch.softmax on a fully masked row,
        # where the mistake uses the course's softmax) makes the same mistake.
        zeroed = dataclasses.replace(got, output=tree_map(_nan_as_zero, got.output))
        return next(
            (m for m, theirs in records if _behaves_alike(exercise, case, zeroed, theirs, expected, True)), None
        )
    return None


def _nan_as_zero(value: Any) -> Any:
    return value.nan_to_num(nan=0.0) if isinstance(value, Tensor) and value.is_floating_point() else value


def judge(
    exercise: Exercise, cases: list[Case], plans: list[CallPlan], expected: list[CallRecord], records: list[CallRecord]
) -> Result:
    """The verdict on the learner's records (from ``call_cases``), computed with our code only."""
    name = exercise.name
    called_reference = False
    for index, case in enumerate(cases):
        if index >= len(records):
            return Result(name, Status.FAILED, f"not graded: no result came back {_where(case)}")
        got = records[index]
        called_reference = called_reference or got.called_reference
        if got.outcome == NOT_DONE:
            return Result(
                name, Status.NOT_DONE, f"not done yet: replace `raise NotImplementedError` in `{name}` with your code"
            )
        if got.outcome == TIMED_OUT:
            return Result(
                name,
                Status.FAILED,
                f"stopped after {exercise.time_limit:g} s {_where(case)}: is there an endless loop?",
            )
        wanted = expected[index].error if expected[index].outcome == RAISED else None
        if wanted is not None:  # the instructions ask for an exception on this input: its type must match
            if got.outcome == RAISED and got.error is not None and got.error[0] == wanted[0]:
                continue
            shown = f"raised {got.error[0]}" if got.error is not None else f"returned {short(got.output)}"
            return Result(name, Status.FAILED, f"{shown} {_where(case)}: the instructions ask for a {wanted[0]} here.")
        if got.outcome == RAISED and got.error is not None:
            mistake = _diagnose(exercise, case, plans[index], got, expected[index])
            hint = f" Hint: {mistake.hint}" if mistake else ""
            kind, text = got.error
            shown = f"{kind}: {text}" if text else kind
            return Result(name, Status.FAILED, f"raised {shown} {_where(case)}.{hint}")
        problem = _verdict_for_case(exercise, case, got, expected[index])
        if problem is None:
            continue
        lines = [problem]
        mistake = _diagnose(exercise, case, plans[index], got, expected[index])
        if mistake:
            lines.append(f"Hint: {mistake.hint}")
        shown_expected, shown_got = short(plain(expected[index].output)), short(got.output)
        if problem.startswith(("wrong value", "returned")) and "tensor of shape" not in shown_expected + shown_got:
            lines += [f"expected {shown_expected}", f"got      {shown_got}"]
        return Result(name, Status.FAILED, "\n   ".join(lines))
    if called_reference:
        return Result(name, Status.FAILED, reference_message(exercise))
    return Result(name, Status.PASSED, f"passed ({len(cases)} cases)")


def reference_message(exercise: Exercise) -> str:
    module = getattr(exercise.reference, "__module__", "attention_course")
    others = [f"`{f.__module__}.{f.__qualname__}`" for f in exercise.also_forbidden]
    also = f" or a function that computes the same ({', '.join(others)})" if others else ""
    return (
        f"this exercise asks you to write `{exercise.name}`; your function calls the course's "
        f"(`{module}.{exercise.name}`){also}. Write it yourself: functions of earlier lessons may be used."
    )


def run_check(exercise: Exercise, fn: Any, *, forbid_reference: bool = True) -> Result:
    """Grade ``fn`` as the learner's version of ``exercise`` in this process: passed, not done, or failed + hint.

    With ``forbid_reference`` (the default), a ``fn`` that calls the course's own reference for this
    exercise fails (``fn`` being the reference itself is allowed: the tests grade the references).
    """
    name = exercise.name
    if not callable(fn):
        return Result(name, Status.FAILED, f"`{name}` should be a function, but it is {short(fn)}")
    if exercise.custom_check is not None:
        try:
            status, message = exercise.custom_check(fn)
        except Exception as error:  # a checker bug must not take the grader down
            return Result(name, Status.FAILED, f"the check itself failed ({_first_line(error)}); please report this")
        return Result(name, status, message)
    try:
        cases = exercise.cases()
        plans, expected = plan_cases(exercise, cases)
    except Exception as error:
        return Result(name, Status.FAILED, f"the check itself failed ({_first_line(error)}); please report this")
    forbidden: frozenset[int] = frozenset()
    if forbid_reference and fn is not exercise.reference:
        forbidden = reference_codes(exercise.reference).union(*map(reference_codes, exercise.also_forbidden))
    records = call_cases(fn, plans, exercise.time_limit, forbidden)
    return judge(exercise, cases, plans, expected, records)
