"""Grade a made-up class of a hundred learners with ``attention-course grade --class``.

    .venv/bin/python benchmarks/bench_class_grading.py [--learners 100] [--lessons 02 03 04 05 06] [--jobs 1 2]

The class comes from the solutions (``attention_course.grading.sample_class``): most learners
complete, the rest half done, wrong, crashing Python, looping for ever, corrupt JSON or empty, as a
real class hands in. For each ``--jobs`` value it grades the whole class in a subprocess, as an
instructor would, and prints the wall time, the peak memory of the grader's whole process tree
(sampled every 0.2 s), and whether every learner got a row whose cells say what their work deserves:
complete learners pass everything, every broken notebook's exercises show as not passed. It exits
non-zero when any of that fails or the grader crashed.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from attention_course.grading.notebook import parse_notebook
from attention_course.grading.sample_class import Learner, make_sample_class, must_not_pass

REPO = Path(__file__).resolve().parent.parent
GRADER = Path(sys.executable).parent / "attention-course"


def tree_peak(process: subprocess.Popen[bytes], every: float = 0.2) -> tuple[int, float]:
    """Wait for ``process``; return (its exit code, the peak resident memory of it and its descendants)."""
    peak = 0
    root = psutil.Process(process.pid)
    while process.poll() is None:
        total = 0
        try:
            for member in [root, *root.children(recursive=True)]:
                try:
                    total += member.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        except psutil.NoSuchProcess:
            break
        peak = max(peak, total)
        time.sleep(every)
    return process.wait(), peak


def exercises_of(notebook: Path) -> list[str]:
    return [call.exercise for call in parse_notebook(notebook).checks]


def problems(rows: dict[str, dict[str, str]], learners: list[Learner], solutions: dict[str, Path]) -> list[str]:
    """What the table gets wrong: a learner without a row, a complete learner not passing, a broken one passing."""
    found = []
    everything = [e for path in solutions.values() for e in exercises_of(path)]
    for learner in learners:
        row = rows.get(learner.name)
        if row is None:
            found.append(f"{learner.name} ({learner.kind}) has no row")
            continue
        if learner.broken_notebook is None:
            wrong = [e for e in everything if row.get(e) != "passed"]
            if wrong:
                found.append(f"{learner.name} (complete) not passed: {', '.join(wrong)}")
            continue
        unearned = [
            e
            for e in must_not_pass(learner.kind, exercises_of(solutions[learner.broken_notebook]))
            if row.get(e) == "passed"
        ]
        if unearned:
            found.append(f"{learner.name} ({learner.kind} {learner.broken_notebook}) passed {', '.join(unearned)}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=100)
    parser.add_argument("--lessons", nargs="+", default=["02", "03", "04", "05", "06"])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    solutions = {p.name: p for n in args.lessons for p in sorted((REPO / "solutions").glob(f"{n}_*.ipynb"))}
    n_exercises = sum(len(exercises_of(p)) for p in solutions.values())
    failed = False
    with tempfile.TemporaryDirectory(prefix="class-") as tmp:
        class_dir = Path(tmp) / "submissions"
        learners = make_sample_class(class_dir, list(solutions.values()), args.learners)
        kinds: dict[str, int] = {}
        for learner in learners:
            kinds[learner.kind] = kinds.get(learner.kind, 0) + 1
        print(
            f"{len(learners)} learners x {len(solutions)} notebooks ({n_exercises} exercises each): "
            + ", ".join(f"{k} {v}" for k, v in kinds.items())
        )
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
        print(f"{'jobs':>4} | {'wall s':>7} | {'s/learner':>9} | {'peak MiB':>8} | {'rows':>5} | exit | problems")
        for jobs in args.jobs:
            report = Path(tmp) / f"grades-{jobs}.csv"
            started = time.perf_counter()
            with open(Path(tmp) / f"stderr-{jobs}.txt", "w+b") as stderr:
                process = subprocess.Popen(
                    [str(GRADER), "grade", "--class", str(class_dir), "--jobs", str(jobs), "--report", str(report)],
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
                code, peak = tree_peak(process)
                stderr.seek(0)
                errors = stderr.read().decode(errors="replace")
            wall = time.perf_counter() - started
            rows: dict[str, dict[str, str]] = {}
            if report.exists():
                with open(report, newline="") as handle:
                    rows = {row["learner"]: row for row in csv.DictReader(handle)}
            found = problems(rows, learners, solutions)
            if code not in (0, 1) or "Traceback" in errors:
                found.append(f"the grader crashed (exit {code}): {errors[-500:]}")
            failed |= bool(found)
            print(
                f"{jobs:>4} | {wall:>7.1f} | {wall / len(learners):>9.2f} | {peak / 2**20:>8.0f} | "
                f"{len(rows):>5} | {code:>4} | {len(found)}"
            )
            for line in found:
                print(f"       {line}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
