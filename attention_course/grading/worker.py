"""The process where learner code runs: ``python -m attention_course.grading.worker STREAM``.

The grader (``grade.py``) sends a job on stdin (``torch.save``): for each notebook, its code cells
and, for each check, the case inputs. This process runs the cells, calls the learner's functions on those
inputs (``runner.call_cases``) and writes what happened to STREAM as frames: small JSON events
(which cell or case is running, notes) and ``torch.save`` blobs of plain tensors and values, which
the grader reads with ``torch.load(weights_only=True)``. It decides no verdict and imports no
exercise catalogue: whatever the learner patches here cannot change a grade.

Before the first learner cell runs, an audit hook (which Python cannot remove) refuses, and
records for the report: opening a file for writing, or deleting, renaming or creating one,
outside the working folder; reading the course's ``solutions/``; starting programs; loading
native libraries through ctypes; and replacing the tracer that notices a call of the course's
own reference. When everything is written, the process ends itself with ``os._exit`` so that
threads the learner started cannot delay the grade.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import os
import struct
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import torch

from .guard import install_guard, limit_resources
from .notebook import CELL_TIME_LIMIT, run_cells
from .runner import CallPlan, _first_line, call_cases, reference_codes, time_limit

# ------------------------------------------------------------------ the stream back to the grader


def write_frame(stream: BinaryIO, kind: bytes, payload: bytes) -> None:
    stream.write(kind + struct.pack("<Q", len(payload)) + payload)
    stream.flush()


def read_frames(data: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """Whole frames in ``data`` and how many bytes they use (a frame being written is left for later)."""
    frames, at = [], 0
    while at + 9 <= len(data):
        kind, (size,) = data[at : at + 1], struct.unpack("<Q", data[at + 1 : at + 9])
        if kind not in (b"J", b"T") or size > 1 << 34:
            raise ValueError("the worker's stream is damaged")
        if at + 9 + size > len(data):
            break
        frames.append((kind, data[at + 9 : at + 9 + size]))
        at += 9 + size
    return frames, at


def _case_event(out: _Stream, number: int, index: int, case: int) -> None:
    out.event(event="case", nb=number, check=index, case=case)


class _Stream:
    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def event(self, **record: Any) -> None:
        write_frame(self.stream, b"J", json.dumps(record).encode())

    def data(self, record: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(record, buffer)
        write_frame(self.stream, b"T", buffer.getvalue())


# ------------------------------------------------------------------ grading one notebook's code


def _resolve(dotted: tuple[str, str] | None) -> Any:
    if dotted is None:
        return None
    module, qualname = dotted
    value: Any = importlib.import_module(module)
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


def _kernel_payload(fn: Any) -> dict[str, Any]:
    from .triton_sandbox import is_jitted, kernel_module_source

    inner = fn.fn if is_jitted(fn) else fn
    try:
        return {"kernel_source": kernel_module_source(fn), "kernel_name": inner.__name__}
    except (TypeError, OSError) as error:
        return {"kernel_error": _first_line(error)}


def _custom(custom_check: Callable[[Any], tuple[Any, str]], fn: Any) -> tuple[str, str]:
    """An exercise's own extra check, run here because it needs the learner's function."""
    try:
        with (
            time_limit(CELL_TIME_LIMIT),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            status, message = custom_check(fn)
        return str(getattr(status, "value", status)), str(message)
    except BaseException as error:  # noqa: BLE001 - the learner's code ran inside it
        return "failed", f"raised {_first_line(error)} in the exercise's own check"


def grade_notebook(
    out: _Stream, notebook: dict[str, Any], references: dict[str, Any], customs: dict[str, Any], attempts: list[str]
) -> None:
    number = notebook["id"]
    shown = 0

    def notes(problems: tuple[str, ...] | list[str] = ()) -> None:
        nonlocal shown
        for line in [*problems, *attempts[shown:]]:
            out.event(event="note", nb=number, message=line)
        shown = len(attempts)

    out.event(event="notebook", nb=number)
    namespace: dict[str, Any] = {"__name__": "__learner__"}
    on_cell: Callable[[int], None] = lambda cell: out.event(event="cell", nb=number, cell=cell)  # noqa: E731
    notes(run_cells(notebook["cells"], notebook["name"], namespace, on_cell))
    for check in notebook["checks"]:
        index = check["index"]
        out.event(event="case", nb=number, check=index, case=-1)
        record: dict[str, Any] = {"nb": number, "check": index}
        try:
            with time_limit(CELL_TIME_LIMIT):
                fn = eval(check["expr"], namespace)  # the learner's function, e.g. `softmax`
        except BaseException as error:  # noqa: BLE001 - exit() or anything else: the name is not usable
            record["undefined"] = _first_line(error)
            out.data(record)
            notes()
            continue
        reference = references.get(check["exercise"])
        if check["custom"] == "kernel":
            record.update(_kernel_payload(fn))
        elif not callable(fn):
            record["not_callable"] = f"{type(fn).__name__}"
        elif reference is not None and fn is reference["object"]:
            record["is_reference"] = True
        else:
            plans = [CallPlan(**plan) for plan in check["plans"]]
            forbidden = reference["codes"] if reference else frozenset()
            records = call_cases(
                fn, plans, check["time_limit"], forbidden, on_case=functools.partial(_case_event, out, number, index)
            )
            record["records"] = [r.to_wire() for r in records]
            custom = customs.get(check["exercise"])
            if check["custom"] == "worker" and custom is not None and all(r.outcome == "returned" for r in records):
                out.event(event="case", nb=number, check=index, case=-2)
                record["custom_status"], record["custom_message"] = _custom(custom, fn)
        try:
            out.data(record)
        except Exception as error:
            out.event(
                event="note",
                nb=number,
                message=f"the results of `{check['exercise']}` could not be sent back ({_first_line(error)})",
            )
        notes()
    out.event(event="notebook_done", nb=number)


def main(argv: list[str]) -> None:
    (stream_path,) = argv
    import attention_course  # noqa: F401 - the concept modules load while the grader plans the cases

    # The job comes from the grader on stdin, read before any learner code runs.
    job = torch.load(io.BytesIO(sys.stdin.buffer.read()), weights_only=False)
    stream = open(stream_path, "ab", buffering=0)  # noqa: SIM115 - open for the process's life
    out = _Stream(stream)
    # The learner's prints go nowhere; results go to STREAM only.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.chdir(job["workdir"])
    limit_resources(job["limits"])
    # The reference of every exercise, looked up before any learner code can replace it.
    references = {}
    for notebook in job["notebooks"]:
        for check in notebook["checks"]:
            if check["reference"] is not None and check["exercise"] not in references:
                try:
                    obj = _resolve(check["reference"])
                    others = [_resolve(dotted) for dotted in check["also_forbidden"] if dotted is not None]
                except Exception:  # a reference that cannot be looked up by name: no tripwire for it
                    continue
                codes = reference_codes(obj).union(*map(reference_codes, others))
                references[check["exercise"]] = {"object": obj, "codes": codes}
    # Exercises with an extra check of their own (e.g. a spy on the operators): their catalogue
    # loads here, before any learner code.
    customs: dict[str, Any] = {}
    for notebook in job["notebooks"]:
        for check in notebook["checks"]:
            if check["custom"] == "worker" and check["exercise"] not in customs:
                try:
                    from .registry import get_exercise

                    customs[check["exercise"]] = get_exercise(check["exercise"]).custom_check
                except Exception:
                    customs[check["exercise"]] = None
    from ..measure import largest_allocation

    largest_allocation(torch.add, torch.ones(2), torch.ones(2))  # its first call is slow: once, before the forks

    # One forked child per notebook: each starts from this clean state (torch imported, nothing of
    # the learner's run yet), so one notebook's patches cannot reach the next.
    for notebook in job["notebooks"]:
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                attempts = install_guard(job["workdir"], job["protected"])
                grade_notebook(out, notebook, references, customs, attempts)
                code = 0
            finally:
                os._exit(code)  # threads the learner started must not keep this process alive
        _, status = os.waitpid(pid, 0)
        out.event(event="ended", nb=notebook["id"], code=os.waitstatus_to_exitcode(status))
    out.event(event="finished")
    stream.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
