"""Notebook housekeeping: exercises are generated from solutions, jupytext pairs agree,
and every exercise notebook runs top to bottom with its stubs, saying "not done yet"."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest
from grading_helpers import EXERCISES, ROOT, SOLUTIONS
from nbclient import NotebookClient

from attention_course.grading.generate import expected_exercises
from attention_course.grading.notebook import check_calls

PAIRED = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(SOLUTIONS.glob("*.ipynb"))


def test_every_solution_has_an_up_to_date_exercise() -> None:
    expected = expected_exercises(SOLUTIONS)
    actual = {p.name: p.read_text(encoding="utf-8") for p in EXERCISES.glob("*.ipynb")}
    assert sorted(actual) == sorted(expected), (
        "exercises/ and solutions/ hold different notebooks: run `make exercises`"
    )
    stale = [name for name in expected if actual[name] != expected[name]]
    assert not stale, f"exercises out of date (never edit exercises/ by hand; run `make exercises`): {stale}"


def _cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize("notebook", PAIRED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_jupytext_pair_agrees(notebook: Path) -> None:
    script = notebook.with_suffix(".py")
    assert script.exists(), f"{notebook.name} has no paired {script.name}: run `make sync`"
    assert _cells(nbformat.read(notebook, as_version=4)) == _cells(jupytext.read(script)), (
        f"{notebook.name} and {script.name} differ: run `make sync` (then re-execute the notebook)"
    )


@pytest.mark.parametrize("notebook", sorted(EXERCISES.glob("*.ipynb")), ids=lambda p: p.name)
def test_exercise_notebook_runs_with_stubs(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    ).execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"], "it must run with its stubs"
    checks = [cell for cell in code if check_calls(cell.source)]
    assert checks, f"{notebook.name} has no check cell"
    for cell in checks:
        said = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        assert said.startswith("TODO ") and said.count("\n") == said.count("TODO "), (
            f"a stub should be 'not done yet': {said}"
        )
