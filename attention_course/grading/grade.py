"""Grade notebooks outside Jupyter, one learner or a whole class, in sandboxed subprocesses."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import MARKS
from .notebook import CELL_TIME_LIMIT, parse_notebook
from .registry import get_exercise
from .spec import Result, Status


@dataclass
class NotebookGrade:
    path: Path
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def _budget(notebook: Path) -> float:
    """Seconds a worker may spend on one notebook before it is stopped from outside."""
    try:
        checks = parse_notebook(notebook).checks
    except Exception:
        return 30.0
    seconds = 2 * CELL_TIME_LIMIT
    for call in checks:
        try:
            seconds += max(60.0, 6 * get_exercise(call.exercise).time_limit)
        except KeyError:
            continue
    return seconds


def _run_worker(notebooks: list[Path], out_path: str) -> str | None:
    """Run the worker; return why it stopped early (crash or time-out), or None."""
    process = subprocess.Popen(
        [sys.executable, "-m", "attention_course.grading.worker", out_path, *map(str, notebooks)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # so a time-out can stop the learner's child processes too
    )
    limit = sum(_budget(nb) for nb in notebooks)
    try:
        code = process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return f"the grader stopped this notebook's code after {limit:g} s in total"
    if code != 0:
        return f"this notebook's code crashed Python (exit code {code})"
    return None


def grade_notebooks(notebooks: list[Path]) -> list[NotebookGrade]:
    """Grade each notebook in a fresh namespace; a crash or hang costs only that notebook's rest."""
    grades = {nb: NotebookGrade(nb) for nb in notebooks}
    pending = list(notebooks)
    while pending:
        with tempfile.TemporaryDirectory() as tmp:
            out_path = os.path.join(tmp, "results.jsonl")
            stopped = _run_worker(pending, out_path)
            records = []
            if os.path.exists(out_path):
                with open(out_path, encoding="utf-8") as out:
                    records = [json.loads(line) for line in out if line.strip()]
        started, done = [], set()
        for record in records:
            grade = grades[Path(record["notebook"])]
            if record["event"] == "start":
                started.append(grade.path)
            elif record["event"] == "done":
                done.add(grade.path)
            elif record["event"] == "note":
                grade.notes.append(record["message"])
            else:
                grade.results.append(Result(record["exercise"], Status(record["status"]), record["message"]))
        unfinished = [nb for nb in started if nb not in done]
        for notebook in unfinished:
            grade = grades[notebook]
            graded = {r.exercise for r in grade.results}
            reason = stopped or "the grader stopped unexpectedly"
            for call in parse_notebook(notebook).checks:
                if call.exercise not in graded:
                    grade.results.append(Result(call.exercise, Status.FAILED, f"not graded: {reason}"))
        pending = [nb for nb in pending if nb not in started]
        if stopped is None and pending:  # the worker ended without starting them: give up loudly
            for notebook in pending:
                grades[notebook].notes.append("not graded: the grader's worker ended early")
            pending = []
    return [grades[nb] for nb in notebooks]


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
        graded = pool.map(lambda folder: grade_notebooks(find_notebooks([folder])), learners)
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
