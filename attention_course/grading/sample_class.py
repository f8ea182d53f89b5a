"""A made-up class of learners, built from the solutions, to rehearse ``grade --class`` before the day.

Every learner hands in the same lessons' exercise notebooks; most are complete, some are what a real
class hands in: half done, wrong, crashing Python, looping for ever, corrupt JSON, empty. The
benchmark ``benchmarks/bench_class_grading.py`` grades a class of a hundred; the tests grade one
learner of each kind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .generate import BEGIN, exercise_notebook, strip_solution

# How a class of 100 splits, in this order; ``make_sample_class`` repeats it for other sizes.
MIX: tuple[tuple[str, int], ...] = (
    ("complete", 60),
    ("partial", 15),
    ("wrong", 10),
    ("crashing", 5),
    ("hanging", 4),
    ("corrupt_json", 3),
    ("empty", 3),
)
KINDS = tuple(kind for kind, _ in MIX)

_DEF = re.compile(r"^def (\w+)\(", re.MULTILINE)

# Appended to an exercise cell: the learner's function returns a slightly wrong answer.
_WRONG = """

_right_{name} = {name}


def {name}(*args, **kwargs):
    def off(x):
        if hasattr(x, "dtype"):
            return ~x if x.dtype == torch.bool else x * 1.5 + 0.1
        if isinstance(x, (tuple, list)):
            return type(x)(off(item) for item in x)
        return x
    return off(_right_{name}(*args, **kwargs))
"""


@dataclass(frozen=True)
class Learner:
    """One made-up learner: their folder, what is wrong with their work, and in which notebook."""

    name: str
    kind: str
    broken_notebook: str | None  # file name, or None for a complete learner


def must_not_pass(kind: str, exercises: Sequence[str]) -> list[str]:
    """Which of a broken notebook's ``exercises`` (in notebook order) a learner of ``kind`` must not pass."""
    if kind == "complete":
        return []
    if kind == "partial":
        return list(exercises[1:])  # only the first one is done
    if kind in ("wrong", "hanging"):
        return list(exercises[:1])  # the first function is broken
    return list(exercises)  # crashing, corrupt JSON, empty: nothing of it can pass


def kind_of(index: int, n_learners: int) -> str:
    """The kind of learner ``index`` in a class of ``n_learners`` (the MIX, scaled)."""
    position = index * 100 / n_learners
    edge = 0.0
    for kind, share in MIX:
        edge += share
        if position < edge:
            return kind
    return MIX[-1][0]


def _exercise_cells(notebook: nbformat.NotebookNode) -> list[int]:
    return [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and any(BEGIN.match(line) for line in cell.source.splitlines())
    ]


def _broken(solution: Path, kind: str) -> str:
    """The text of ``solution``'s notebook as a learner of ``kind`` hands it in."""
    if kind == "corrupt_json":
        text = nbformat.writes(exercise_notebook(solution))
        return text[: len(text) // 2]  # the file was cut off while saving
    if kind == "empty":
        return nbformat.writes(nbformat.v4.new_notebook())
    notebook = exercise_notebook(solution)  # outputs dropped, as a learner's copy has none
    solved = nbformat.read(solution, as_version=4)
    cells = _exercise_cells(solved)
    for i in cells:
        notebook.cells[i].source = solved.cells[i].source
    first = cells[0]
    name = _DEF.search(solved.cells[first].source)
    if kind == "partial":  # only the first exercise done
        for i in cells[1:]:
            notebook.cells[i].source = strip_solution(solved.cells[i].source)
    elif kind == "wrong" and name:
        notebook.cells[first].source += _WRONG.format(name=name.group(1))
    elif kind == "crashing":  # a set-up cell that ends the Python process
        notebook.cells.insert(first, nbformat.v4.new_code_cell("import os\n\nos._exit(3)"))
    elif kind == "hanging" and name:  # the learner's function never returns
        notebook.cells[first].source += f"\n\n\ndef {name.group(1)}(*args, **kwargs):\n    while True:\n        pass\n"
    return nbformat.writes(notebook)


def make_sample_class(
    root: Path, solutions: Sequence[Path], n_learners: int, kinds: Sequence[str] | None = None
) -> list[Learner]:
    """Write ``root/learnerNNN/`` folders, one per learner, with their copies of ``solutions``' notebooks.

    Learner ``i`` is of kind ``kinds[i % len(kinds)]`` when ``kinds`` is given, else as ``MIX``
    spreads a class; their broken notebook (if any) is ``solutions[i % len(solutions)]``'s.
    """
    unknown = sorted(set(kinds or ()) - set(KINDS))
    if unknown:
        raise ValueError(f"kinds must be among {', '.join(KINDS)}, got {', '.join(unknown)}")
    if n_learners < 1 or not solutions:
        raise ValueError(
            f"need n_learners >= 1 and at least one solution notebook, got {n_learners} and {len(solutions)}"
        )
    learners = []
    for index in range(n_learners):
        kind = kinds[index % len(kinds)] if kinds else kind_of(index, n_learners)
        broken = None if kind == "complete" else solutions[index % len(solutions)].name
        folder = root / f"learner{index:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for solution in solutions:
            text = _broken(solution, kind if solution.name == broken else "complete")
            (folder / solution.name).write_text(text, encoding="utf-8")
        learners.append(Learner(folder.name, kind, broken))
    (root / "manifest.json").write_text(json.dumps([vars(learner) for learner in learners], indent=1))
    return learners
