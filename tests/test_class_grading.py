"""A small class with one learner of every kind a real class hands in: ``grade --class`` gives each a
row that says what their work deserves, and never crashes (the class of a hundred is
``benchmarks/bench_class_grading.py``)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from attention_course.grading.notebook import parse_notebook
from attention_course.grading.sample_class import KINDS, make_sample_class, must_not_pass

REPO = Path(__file__).resolve().parent.parent
SOLUTION = REPO / "solutions" / "02_queries_keys_values.ipynb"  # two exercises: "partial" does one


def test_every_kind_of_learner_gets_a_true_row(tmp_path: Path) -> None:
    learners = make_sample_class(tmp_path / "class", [SOLUTION], len(KINDS), KINDS)
    report = tmp_path / "grades.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "attention_course.cli",
            "grade",
            "--class",
            str(tmp_path / "class"),
            "--jobs",
            "2",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr  # not everyone passed
    assert "Traceback" not in done.stderr
    with open(report, newline="") as handle:
        rows = {row["learner"]: row for row in csv.DictReader(handle)}
    exercises = [call.exercise for call in parse_notebook(SOLUTION).checks]
    assert sorted(rows) == sorted(learner.name for learner in learners)
    for learner in learners:
        row = rows[learner.name]
        if learner.kind == "complete":
            assert [row[e] for e in exercises] == ["passed"] * len(exercises), learner
        wrong = must_not_pass(learner.kind, exercises)
        assert all(row[e] in {"failed", "not done", "missing"} for e in wrong), (learner, row)
        assert all(row[e] == "passed" for e in exercises if e not in wrong), (learner, row)
        assert wrong or learner.kind == "complete", learner  # every broken kind costs something here
