"""A small class with one learner of every kind a real class hands in: ``grade --class`` gives each a
row that says what their work deserves, and never crashes (the class of a hundred is
``benchmarks/bench_class_grading.py``)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from attention_course.grading.notebook import parse_notebook
from attention_course.grading.sample_class import KINDS, make_sample_class

REPO = Path(__file__).resolve().parent.parent
SOLUTION = REPO / "solutions" / "02_queries_keys_values.ipynb"  # two exercises: "partial" does one


def test_every_kind_of_learner_gets_a_true_row(tmp_path: Path) -> None:
    learners = make_sample_class(tmp_path / "class", [SOLUTION], len(KINDS), KINDS)
    report = tmp_path / "grades.csv"
    done = subprocess.run(
        [sys.executable, "-m", "attention_course.cli", "grade", "--class", str(tmp_path / "class"), "--jobs", "2",
         "--report", str(report)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr  # not everyone passed
    assert "Traceback" not in done.stderr
    with open(report, newline="") as handle:
        rows = {row["learner"]: row for row in csv.DictReader(handle)}
    exercises = [call.exercise for call in parse_notebook(SOLUTION).checks]
    assert sorted(rows) == sorted(learner.name for learner in learners)
    for learner in learners:
        cells = [rows[learner.name].get(e) for e in exercises]
        if learner.kind == "complete":
            assert cells == ["passed"] * len(exercises), learner
        elif learner.kind == "partial":
            assert cells == ["passed", "not done"], learner
        elif learner.kind in ("wrong", "hanging"):  # their first function is broken, the second is fine
            assert cells == ["failed", "passed"], learner
        else:  # the notebook never ran or cannot be read
            assert "passed" not in cells, (learner, cells)
            assert all(cell in {"failed", "missing"} for cell in cells), (learner, cells)


def test_unknown_kinds_and_empty_classes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kinds must be among"):
        make_sample_class(tmp_path, [SOLUTION], 1, ["lazy"])
    with pytest.raises(ValueError, match="n_learners >= 1"):
        make_sample_class(tmp_path, [SOLUTION], 0)
