"""Make exercise notebooks from solution notebooks: the single source is ``solutions/``."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")
STUB = 'raise NotImplementedError("your code here")'


def strip_solution(source: str, where: str = "cell") -> str:
    """Replace each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block by a stub at its indent."""
    out: list[str] = []
    inside = False
    for line in source.splitlines():
        begin = BEGIN.match(line)
        if begin:
            if inside:
                raise ValueError(f"{where}: nested '### BEGIN SOLUTION'")
            inside = True
            out.append(begin.group(1) + STUB)
        elif END.match(line):
            if not inside:
                raise ValueError(f"{where}: '### END SOLUTION' without BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '### BEGIN SOLUTION' without END")
    return "\n".join(out)


def exercise_notebook(solution_path: Path) -> nbformat.NotebookNode:
    """The learner's copy of a solution notebook: solutions stubbed, outputs dropped."""
    notebook = copy.deepcopy(nbformat.read(solution_path, as_version=4))
    for number, cell in enumerate(notebook.cells, start=1):
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.source = strip_solution(cell.source, f"{solution_path} cell {number}")
            cell.outputs = []
            cell.execution_count = None
    notebook.metadata.pop("jupytext", None)
    notebook.metadata.pop("widgets", None)
    notebook.metadata["attention_course"] = {"generated_from": f"solutions/{solution_path.name}"}
    return notebook


def expected_exercises(solutions_dir: Path) -> dict[str, str]:
    """File name -> the exercise notebook's text, for every solution notebook."""
    return {
        path.name: nbformat.writes(exercise_notebook(path)) + "\n" for path in sorted(solutions_dir.glob("*.ipynb"))
    }


def make_exercises(solutions_dir: Path, exercises_dir: Path) -> list[Path]:
    """Write ``exercises/NN_topic.ipynb`` for every solution notebook; return the paths written."""
    exercises_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in expected_exercises(solutions_dir).items():
        target = exercises_dir / name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
