"""Grade notebooks outside Jupyter, one learner or a whole class.

Learner code runs only in a worker process (``worker.py``) started in a throwaway folder that holds
a copy of the notebooks, with a stripped environment, resource limits, no network where the
system allows it, and an audit hook; its process group is killed at the end. This process never
imports learner code: it sends the case inputs, reads back plain tensors and values
(``torch.load(weights_only=True)``) and computes every verdict itself (``runner.judge``).
"""

from __future__ import annotations

import ast
import contextlib
import csv
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cloudpickle
import torch

from . import MARKS
from .guard import MEMORY_LIMIT_BYTES, protected_folders
from .notebook import CELL_TIME_LIMIT, CheckCall, parse_notebook
from .registry import get_exercise
from .runner import ALLOC_SLOWDOWN, CallPlan, CallRecord, _first_line, judge, plan_cases, reference_message, run_check
from .spec import Case, Exercise, Result, Status
from .worker import read_frames

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding attention_course/ (and solutions/)


@dataclass
class NotebookGrade:
    path: Path
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    complete: bool = True  # False when the notebook could not be read or its code stopped the grader


def find_notebooks(paths: list[str | Path]) -> list[Path]:
    """Notebooks named, or found (not recursively) in the folders named."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.glob("*.ipynb")))
        elif path.suffix == ".ipynb" and path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither a notebook (.ipynb) nor a folder")
    return found


# ------------------------------------------------------------------ planning, in the grader's process


@dataclass
class _Check:
    """One ``check(...)`` call of a notebook, as the grader plans and judges it."""

    index: int
    call: CheckCall
    exercise: Exercise | None = None
    plan: _Plan | None = None
    result: Result | None = None


@dataclass(frozen=True)
class _Plan:
    cases: list[Case]
    plans: list[CallPlan]
    expected: list[CallRecord]


@dataclass
class _Notebook:
    number: int
    grade: NotebookGrade
    cells: list[tuple[int, str]] = field(default_factory=list)
    checks: list[_Check] = field(default_factory=list)

    def open_checks(self) -> list[_Check]:
        return [c for c in self.checks if c.result is None]


_PLANS: dict[str, _Plan | str] = {}
_PLANS_LOCK = threading.Lock()


def _plan_for(exercise: Exercise) -> _Plan | str:
    """Cases, inputs to send and the reference's records for ``exercise`` (or why they cannot be made).

    Computed once per exercise and process: a class of learners shares them.
    """
    with _PLANS_LOCK:
        if exercise.name not in _PLANS:
            try:
                cases = exercise.cases()
                plans, expected = plan_cases(exercise, cases)
                _PLANS[exercise.name] = _Plan(cases, plans, expected)
            except Exception as error:
                _PLANS[exercise.name] = f"the check itself failed ({_first_line(error)}); please report this"
        return _PLANS[exercise.name]


def _prepare(number: int, path: Path) -> _Notebook:
    notebook = _Notebook(number, NotebookGrade(path))
    try:
        parsed = parse_notebook(path)
    except Exception as error:
        notebook.grade.notes.append(f"cannot read the notebook: {_first_line(error)}")
        notebook.grade.complete = False
        return notebook
    notebook.cells = parsed.code_cells
    for index, call in enumerate(parsed.checks):
        check = _Check(index, call)
        notebook.checks.append(check)
        try:
            check.exercise = get_exercise(call.exercise)
        except KeyError as error:
            check.result = Result(call.exercise, Status.FAILED, error.args[0])
            continue
        if not _is_kernel(check.exercise):
            plan = _plan_for(check.exercise)
            if isinstance(plan, str):
                check.result = Result(call.exercise, Status.FAILED, plan)
            else:
                check.plan = plan
    return notebook


def _is_kernel(exercise: Exercise) -> bool:
    """A Triton kernel exercise: graded from the kernel's source, by its own custom check, here."""
    from .triton_sandbox import is_jitted

    return exercise.custom_check is not None and is_jitted(exercise.reference)


def _custom_kind(exercise: Exercise | None) -> str | None:
    if exercise is None or exercise.custom_check is None:
        return None
    return "kernel" if _is_kernel(exercise) else "worker"


# ------------------------------------------------------------------ running the worker


_GRACE = 5.0  # seconds past a limit before the worker is stopped from outside
_STARTUP_LIMIT = 120.0  # seconds for the worker to start Python and torch (on a loaded machine)


@cache
def _network_prefix() -> tuple[str, ...]:
    """``unshare`` arguments that give the worker no network, where the system allows it; else ()."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return ()
    for flags in (("--user", "--map-root-user", "--net"), ("--net",)):
        try:
            done = subprocess.run([unshare, *flags, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return (unshare, *flags)
    return ()


def _environment(workdir: Path) -> dict[str, str]:
    """What the lessons need, and no more: the package on PYTHONPATH, a home and temp folder inside ``workdir``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "PYTHONPATH": str(PACKAGE_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(workdir / ".matplotlib"),
        "LANG": "C.UTF-8",
    }
    for key, value in os.environ.items():
        if key.startswith(("CUDA_", "TRITON_", "OMP_", "MKL_")) or key in ("LD_LIBRARY_PATH", "VIRTUAL_ENV"):
            env[key] = value
    return env


def _phase_limit(notebooks: dict[int, _Notebook], event: dict[str, Any]) -> float:
    kind = event.get("event")
    if kind == "cell":
        return CELL_TIME_LIMIT + _GRACE
    if kind == "case":
        notebook = notebooks.get(event.get("nb"))  # type: ignore[arg-type]
        checks = {c.index: c for c in notebook.checks} if notebook else {}
        check = checks.get(event.get("check"))  # type: ignore[arg-type]
        if check is None or check.exercise is None or not isinstance(event.get("case"), int) or event["case"] < 0:
            return CELL_TIME_LIMIT + _GRACE
        case = event.get("case")
        measured = (
            check.plan is not None
            and isinstance(case, int)
            and 0 <= case < len(check.plan.plans)
            and check.plan.plans[case].measure_alloc
        )
        return check.exercise.time_limit * (ALLOC_SLOWDOWN if measured else 1.0) + _GRACE
    return _STARTUP_LIMIT


def _round_budget(notebooks: list[_Notebook]) -> float:
    seconds = _STARTUP_LIMIT
    for notebook in notebooks:
        seconds += len(notebook.cells) * (CELL_TIME_LIMIT + _GRACE)
        for check in notebook.open_checks():
            cases = len(check.plan.plans) if check.plan else 1
            limit = check.exercise.time_limit if check.exercise else 10.0
            seconds += CELL_TIME_LIMIT + cases * (limit * ALLOC_SLOWDOWN + _GRACE)
    return seconds


@dataclass
class _Round:
    """What one worker process did: the events and data it sent, and how it ended."""

    events: list[dict[str, Any]] = field(default_factory=list)
    data: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    exit_code: int | None = None
    stopped_at: dict[str, Any] | None = None  # the event whose limit ran out, when stopped from outside
    damaged: str | None = None
    verdicts: dict[tuple[int, int], Future[Result]] = field(default_factory=dict)
    results: dict[tuple[int, int], Result] = field(default_factory=dict)


def _take(round_: _Round, kind: bytes, payload: bytes) -> dict[str, Any] | None:
    if kind == b"J":
        event = json.loads(payload)
        if isinstance(event, dict):
            round_.events.append(event)
            return event
        return None
    record = torch.load(io.BytesIO(payload), weights_only=True)  # plain tensors and values: runs no code
    if isinstance(record, dict) and isinstance(record.get("nb"), int) and isinstance(record.get("check"), int):
        round_.data.setdefault((record["nb"], record["check"]), record)
    return None


def _job(notebooks: list[_Notebook], workdir: Path, budget: float, protected: list[Path]) -> bytes:
    job = {
        "workdir": str(workdir),
        "protected": protected_folders(protected),
        "limits": {
            "cpu_seconds": int(budget) + 60,
            "memory_bytes": None if torch.cuda.is_available() else MEMORY_LIMIT_BYTES,
        },
        "notebooks": [
            {
                "id": notebook.number,
                "name": notebook.grade.path.name,
                "cells": notebook.cells,
                "checks": [
                    {
                        "index": check.index,
                        "exercise": check.call.exercise,
                        "expr": check.call.function_expr,
                        "custom": _custom_kind(check.exercise),
                        "time_limit": check.exercise.time_limit if check.exercise else 10.0,
                        "reference": _dotted(check.exercise.reference) if check.exercise and check.plan else None,
                        "also_forbidden": [_dotted(f) for f in check.exercise.also_forbidden] if check.exercise else [],
                        "plans": [vars(plan) for plan in check.plan.plans] if check.plan else [],
                    }
                    for check in notebook.open_checks()
                    if check.plan is not None or _custom_kind(check.exercise) == "kernel"
                ],
            }
            for notebook in notebooks
        ],
    }
    buffer = io.BytesIO()
    torch.save(job, buffer, pickle_module=cloudpickle)  # cases may hold lambdas
    return buffer.getvalue()


def _feed(process: subprocess.Popen[bytes], job: bytes) -> None:
    assert process.stdin is not None
    with contextlib.suppress(OSError):
        process.stdin.write(job)
        process.stdin.close()


def _run_worker(
    paths: list[Path], tmp: Path, plan: Callable[[], list[_Notebook]], protected: list[Path]
) -> tuple[list[_Notebook], _Round]:
    """Run one worker in the throwaway folder ``tmp``, watching its every phase.

    The worker starts (Python, torch) while ``plan()`` builds the cases here; it then receives the
    notebooks' cells and case inputs on its stdin. Verdicts are judged here as the answers arrive.
    """
    workdir = tmp / "work"
    (workdir / "tmp").mkdir(parents=True)
    for path in paths:  # the learner's code sees a copy of its notebooks, nothing else
        with contextlib.suppress(OSError):
            shutil.copyfile(path, workdir / path.name)
    stream_path = tmp / "stream.bin"
    stream_path.touch()
    command = [
        *_network_prefix(),
        sys.executable,
        "-s",
        "-P",
        "-m",
        "attention_course.grading.worker",
        str(stream_path),
    ]
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env=_environment(workdir),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # so the whole group can be stopped
    round_ = _Round()
    try:
        notebooks = plan()
        budget = _round_budget(notebooks)
        feeder = threading.Thread(
            target=_feed, args=(process, _job(notebooks, workdir, budget, protected)), daemon=True
        )
        feeder.start()
    except BaseException:
        _stop(process)
        process.wait()
        raise
    by_number = {n.number: n for n in notebooks}
    checks = {(n.number, c.index): (n, c) for n in notebooks for c in n.checks}
    started = phase_start = time.monotonic()
    phase: dict[str, Any] = {"event": "start"}
    buffer = b""
    with open(stream_path, "rb") as stream, ThreadPoolExecutor(max_workers=1) as judges:
        while True:
            code = process.poll()
            buffer += stream.read()
            try:
                frames, used = read_frames(buffer)
                buffer = buffer[used:]
                for kind, payload in frames:
                    event = _take(round_, kind, payload)
                    if event is not None and event.get("event") in ("notebook", "cell", "case"):
                        phase, phase_start = event, time.monotonic()
            except Exception as error:  # a stream the learner's code wrote into
                round_.damaged = _first_line(error)
                _stop(process)
                break
            for key, record in round_.data.items():  # judge while the worker goes on
                if key not in round_.verdicts and key in checks and checks[key][1].result is None:
                    notebook, check = checks[key]
                    round_.verdicts[key] = judges.submit(_verdict, check, record, notebook.grade.path)
            if code is not None:
                round_.exit_code = code
                break
            now = time.monotonic()
            if now - phase_start > _phase_limit(by_number, phase) or now - started > budget:
                round_.stopped_at = phase
                _stop(process)
                break
            time.sleep(0.02)
        round_.exit_code = process.wait() if round_.exit_code is None else round_.exit_code
        _stop(process)  # children the learner's code started
        for key, record in round_.data.items():
            if key not in round_.verdicts and key in checks and checks[key][1].result is None:
                notebook, check = checks[key]
                round_.verdicts[key] = judges.submit(_verdict, check, record, notebook.grade.path)
        round_.results = {key: future.result() for key, future in round_.verdicts.items()}
    return notebooks, round_


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _dotted(obj: Any) -> tuple[str, str] | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return (module, qualname) if isinstance(module, str) and isinstance(qualname, str) else None


# ------------------------------------------------------------------ the verdicts, in the grader's process


def _verdict(check: _Check, record: dict[str, Any], path: Path) -> Result:
    exercise, name = check.exercise, check.call.exercise
    assert exercise is not None
    if "undefined" in record:
        return Result(
            name,
            Status.FAILED,
            f"`{check.call.function_expr}` is not defined ({record['undefined']}): did its cell run without errors?",
        )
    if "not_callable" in record:
        return Result(name, Status.FAILED, f"`{name}` should be a function, but it is a {record['not_callable']}")
    if record.get("is_reference") is True:
        return Result(name, Status.FAILED, reference_message(exercise))
    if _custom_kind(exercise) == "kernel":
        return _custom_verdict(exercise, record, path)
    assert check.plan is not None
    try:
        records = [CallRecord.from_wire(r) for r in record.get("records", [])]
    except ValueError as error:
        return Result(name, Status.FAILED, f"not graded: the worker's answer was malformed ({error})")
    result = judge(exercise, check.plan.cases, check.plan.plans, check.plan.expected, records)
    if result.passed and _custom_kind(exercise) == "worker":
        # The exercise's own extra check ran next to the learner's code: it can only take a pass away.
        status, message = record.get("custom_status"), record.get("custom_message")
        if status in (Status.FAILED.value, Status.NOT_DONE.value) and isinstance(message, str):
            return Result(name, Status(status), message[:4000])
        if status != Status.PASSED.value:
            return Result(name, Status.FAILED, "not graded: the exercise's own check gave no answer")
    return result


def _custom_verdict(exercise: Exercise, record: dict[str, Any], path: Path) -> Result:
    """A kernel's check, run here on the kernel's source (the learner's notebook does not run here)."""
    assert exercise.custom_check is not None
    source, kernel_name = record.get("kernel_source"), record.get("kernel_name")
    if not isinstance(source, str) or not isinstance(kernel_name, str):
        return Result(
            exercise.name,
            Status.FAILED,
            f"cannot read the kernel's source ({record.get('kernel_error', 'nothing came back')}): "
            "define it in a notebook cell",
        )
    problem = kernel_module_problem(source)
    if problem:
        return Result(exercise.name, Status.FAILED, problem)
    try:
        from .triton_sandbox import load_kernel

        kernel = load_kernel(source, kernel_name, f"{path.name}: {kernel_name}")
    except Exception as error:
        return Result(exercise.name, Status.FAILED, f"cannot load the kernel's source ({_first_line(error)})")
    return run_check(exercise, kernel)


_KERNEL_IMPORTS = ("math", "triton", "torch")


def kernel_module_problem(source: str) -> str | None:
    """Why the grader will not load a kernel's module source here, or None.

    Loading runs only imports of math/triton/torch, ``@triton.jit`` definitions whose defaults and
    annotations are names or constants, and ``NAME = constant`` / ``tl.constexpr(constant)``: nothing
    of the learner's code runs until the sandbox runs the kernel.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        return f"the kernel's source has a syntax error: {error.msg}"
    simple = (ast.Name, ast.Attribute, ast.Constant, ast.Load, ast.UnaryOp, ast.USub, ast.UAdd)

    def plain(node: ast.AST | None) -> bool:
        return node is None or all(isinstance(n, simple) for n in ast.walk(node))

    for statement in tree.body:
        if isinstance(statement, ast.Import):
            if any(alias.name.split(".")[0] not in _KERNEL_IMPORTS for alias in statement.names):
                return "a kernel may use only math, triton and torch: the grader does not load other modules with it"
        elif isinstance(statement, ast.FunctionDef):
            arguments = statement.args
            nodes = [
                *statement.decorator_list,
                *arguments.defaults,
                *arguments.kw_defaults,
                statement.returns,
                *(a.annotation for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]),
            ]
            if not all(plain(node) for node in nodes):
                return "the kernel's decorators, defaults and annotations must be plain names or constants"
        elif (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            value = statement.value
            if isinstance(value, ast.Call) and len(value.args) == 1 and not value.keywords and plain(value.func):
                value = value.args[0]
            if not isinstance(value, ast.Constant):
                return "a kernel's global constants must be plain numbers (NAME = 16 or NAME = tl.constexpr(16))"
        else:
            return "the kernel's module holds code other than imports, kernels and constants"
    return None


def _reason(round_: _Round, code: int | None) -> str:
    if round_.damaged:
        return f"the notebook's code damaged the grader's results ({round_.damaged})"
    if code is not None and code < 0:
        return f"this notebook's code was stopped by the system (signal {-code}: out of memory or CPU time?)"
    if code == 0:
        return "this notebook's code ended Python early (exit code 0: os._exit?); a function must return, not exit"
    return f"this notebook's code crashed Python (exit code {code})"


def _settle(notebooks: list[_Notebook], round_: _Round) -> list[_Notebook]:
    """Turn one round's answers into results; return the notebooks to run again in a fresh worker."""
    started = {e["nb"] for e in round_.events if e.get("event") == "notebook"}
    finished = {e["nb"] for e in round_.events if e.get("event") == "notebook_done"}
    ended = {e["nb"]: e.get("code") for e in round_.events if e.get("event") == "ended"}
    again: list[_Notebook] = []
    for notebook in notebooks:
        number = notebook.number
        notebook.grade.notes.extend(
            e["message"]
            for e in round_.events
            if e.get("event") == "note" and e.get("nb") == number and isinstance(e.get("message"), str)
        )
        for check in notebook.open_checks():
            result = round_.results.get((number, check.index))
            if result is not None:
                check.result = result
        if number not in started:
            again.append(notebook)
            continue
        if number in finished:
            for check in notebook.open_checks():
                check.result = Result(check.call.exercise, Status.FAILED, "not graded: no result came back")
            continue
        # This notebook's code stopped the worker: say where, and grade its other checks afresh.
        last = next(
            (
                e
                for e in reversed(round_.events)
                if e.get("nb") == number and e.get("event") in ("notebook", "cell", "case")
            ),
            {"event": "notebook"},
        )
        if round_.stopped_at is not None and number not in ended:
            stopped = round_.stopped_at
            if stopped.get("event") == "case":
                looping = next((c for c in notebook.open_checks() if c.index == stopped.get("check")), None)
                if looping is not None:
                    case = stopped.get("case", -1)
                    limit = looping.exercise.time_limit if looping.exercise else CELL_TIME_LIMIT
                    where = "while looking up the function"
                    if looping.plan and isinstance(case, int) and 0 <= case < len(looping.plan.cases):
                        label = looping.plan.cases[case].label
                        where = f"for {label}" if label else "on one of the test cases"
                    else:
                        limit = CELL_TIME_LIMIT
                    looping.result = Result(
                        looping.call.exercise,
                        Status.FAILED,
                        f"stopped after {limit:g} s {where}: is there an endless loop? "
                        "(an `except:` that catches everything cannot stop the grader)",
                    )
                    again.append(notebook)
                    continue
            reason = (
                f"cell {stopped.get('cell')} ran past {CELL_TIME_LIMIT:g} s and was stopped"
                if stopped.get("event") == "cell"
                else "the grader stopped this notebook's code"
            )
        else:
            reason = _reason(round_, ended.get(number, round_.exit_code))
            if last.get("event") == "case":
                crashed = next((c for c in notebook.open_checks() if c.index == last.get("check")), None)
                if crashed is not None:
                    crashed.result = Result(crashed.call.exercise, Status.FAILED, reason)
                    again.append(notebook)
                    continue
            if last.get("event") == "cell":
                reason = f"{reason} in cell {last.get('cell')}"
        notebook.grade.complete = False
        for check in notebook.open_checks():
            check.result = Result(check.call.exercise, Status.FAILED, f"not graded: {reason}")
    return again


def grade_notebooks(notebooks: list[Path], protected: list[Path] | None = None) -> list[NotebookGrade]:
    """Grade each notebook: its code in throwaway worker processes, the verdicts here.

    A crash, an exit or a hang costs only the check (or, in a cell, the notebook) where it happened;
    the other checks and notebooks are graded in a fresh worker. The learner's code may not read
    ``protected`` folders (default: the notebooks' own folders) nor ``solutions/``.
    """
    if protected is None:
        protected = sorted({path.parent for path in notebooks})
    prepared: list[_Notebook] = []

    def plan() -> list[_Notebook]:
        prepared.extend(_prepare(number, path) for number, path in enumerate(notebooks))
        return [n for n in prepared if n.grade.complete and n.open_checks()]

    first = True
    pending: list[_Notebook] = []
    while first or pending:
        with tempfile.TemporaryDirectory(prefix="attention-course-grade-") as tmp:
            paths = list(notebooks) if first else [n.grade.path for n in pending]
            planner: Callable[[], list[_Notebook]] = plan if first else functools.partial(list, pending)
            pending, round_ = _run_worker(paths, Path(tmp), planner, protected)
        first = False
        again = _settle(pending, round_)
        if (
            again
            and len(again) == len(pending)
            and all(n.number not in {e.get("nb") for e in round_.events} for n in again)
        ):
            for notebook in again:  # no progress at all: report instead of trying forever
                notebook.grade.complete = False
                for check in notebook.open_checks():
                    check.result = Result(
                        check.call.exercise, Status.FAILED, f"not graded: {_reason(round_, round_.exit_code)}"
                    )
            again = []
        pending = again
    for notebook in prepared:
        notebook.grade.results = [c.result for c in notebook.checks if c.result is not None]
    return [n.grade for n in prepared]


def score(grades: list[NotebookGrade]) -> tuple[int, int]:
    results = [r for g in grades for r in g.results]
    return sum(r.passed for r in results), len(results)


def format_report(grades: list[NotebookGrade]) -> str:
    lines = []
    for grade in grades:
        lines.append(str(grade.path))
        lines.extend(f"  note: {note}" for note in grade.notes)
        if not grade.results:
            lines.append("  (no check cells found)")
        for result in grade.results:
            message = result.message.replace("\n", "\n" + " " * 6)
            lines.append(f"  {MARKS[result.status]} {result.exercise}: {message}")
    passed, total = score(grades)
    percent = 100.0 * passed / total if total else 0.0
    lines.append(f"Score: {passed}/{total} exercises passed ({percent:.0f}%)")
    return "\n".join(lines)


def grade_class(class_dir: Path, jobs: int = 2) -> dict[str, list[NotebookGrade]]:
    """Grade every learner's sub-folder of ``class_dir`` (one folder per learner)."""
    learners = sorted(p for p in class_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        graded = pool.map(lambda folder: grade_notebooks(find_notebooks([folder]), protected=[class_dir]), learners)
        return {folder.name: grades for folder, grades in zip(learners, graded, strict=True)}


def class_table(by_learner: dict[str, list[NotebookGrade]], fmt: str) -> str:
    """One row per learner, one column per exercise, and the total; ``fmt`` is "md" or "csv"."""
    exercises: list[str] = []
    for grades in by_learner.values():
        for result in (r for g in grades for r in g.results):
            if result.exercise not in exercises:
                exercises.append(result.exercise)
    rows = []
    for learner, grades in by_learner.items():
        status = {r.exercise: r.status.value for g in grades for r in g.results}
        passed, _ = score(grades)
        rows.append([learner, *(status.get(e, "missing") for e in exercises), f"{passed}/{len(exercises)}"])
    header = ["learner", *exercises, "score"]
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
        return buffer.getvalue()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines) + "\n"
