"""Build notebooks for grader tests: a solution notebook with one function replaced."""

from __future__ import annotations

import copy
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"


def function_source(impl: Any, name: str) -> str:
    """Source of ``impl`` (a function or a Triton JITFunction) with its def renamed to ``name``."""
    source = textwrap.dedent(inspect.getsource(getattr(impl, "fn", impl)))
    return re.sub(r"^def \w+\(", f"def {name}(", source, count=1, flags=re.MULTILINE)


def with_replacement(solution: Path, name: str, source: str) -> nbformat.NotebookNode:
    """A copy of ``solution`` where a cell right after the one defining ``name`` redefines it."""
    notebook = copy.deepcopy(nbformat.read(solution, as_version=4))
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and re.search(rf"^def {re.escape(name)}\(", cell.source, re.MULTILINE):
            cell_source = (
                "import math\n\nimport torch\nimport torch.nn.functional as F\n\nimport attention_course as ac\n\n"
                + source
            )
            notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(cell_source))
            return notebook
    raise AssertionError(f"{solution.name} has no cell defining {name}()")
