"""Read a learner's notebook without Jupyter: find its check cells and run the rest of its code."""

from __future__ import annotations

import ast
import contextlib
import linecache
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from .runner import TimeLimitExceeded, _Discard, _first_line, time_limit

CELL_TIME_LIMIT = 120.0  # seconds for one set-up or exercise cell (the checks have their own limits)


@dataclass(frozen=True)
class CheckCall:
    """A ``check("name", expr)`` call found in a check cell."""

    exercise: str
    function_expr: str


@dataclass
class ParsedNotebook:
    path: Path
    code_cells: list[tuple[int, str]] = field(default_factory=list)  # (cell number, source) to execute
    checks: list[CheckCall] = field(default_factory=list)


def _strip_magics(source: str) -> str:
    """Drop IPython-only lines (``%magic``, ``!shell``), which plain Python cannot run."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def check_calls(source: str) -> list[CheckCall] | None:
    """The ``check(...)`` calls of a cell made only of such calls, else ``None``."""
    try:
        tree = ast.parse(_strip_magics(source))
    except SyntaxError:
        return None
    calls = []
    for statement in tree.body:
        call = statement.value if isinstance(statement, ast.Expr) else None
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "check"
            and len(call.args) == 2
            and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str)
        ):
            return None
        calls.append(CheckCall(call.args[0].value, ast.unparse(call.args[1])))
    return calls or None


def parse_notebook(path: str | Path) -> ParsedNotebook:
    """Split a notebook into the code to execute and the check calls (raises on unreadable files)."""
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    parsed = ParsedNotebook(path)
    for number, cell in enumerate(notebook.cells, start=1):
        if cell.cell_type != "code":
            continue
        calls = check_calls(cell.source)
        if calls:
            parsed.checks.extend(calls)
        else:
            parsed.code_cells.append((number, _strip_magics(cell.source)))
    return parsed


def execute_cells(
    parsed: ParsedNotebook, namespace: dict[str, Any], on_cell: Callable[[int], None] | None = None
) -> list[str]:
    """Run the notebook's code cells in ``namespace``; return one line per cell that failed."""
    return run_cells(parsed.code_cells, parsed.path.name, namespace, on_cell)


def run_cells(
    cells: list[tuple[int, str]],
    notebook_name: str,
    namespace: dict[str, Any],
    on_cell: Callable[[int], None] | None = None,
) -> list[str]:
    """Run ``(cell number, source)`` pairs in ``namespace``; one line per cell that failed.

    ``exit()``/``sys.exit()`` in a cell ends that cell only (a notebook that stops early is not a
    notebook that finished); ``on_cell(number)`` is called as each cell starts.
    """
    problems = []
    for number, source in cells:
        if on_cell is not None:
            on_cell(number)
        filename = f"<{notebook_name} cell {number}>"
        # Register the cell's text like IPython does, so inspect.getsource works on what it defines
        # (a Triton kernel needs its own source).
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        try:
            code = compile(source, filename, "exec")
        except (SyntaxError, ValueError) as error:
            line = getattr(error, "lineno", None)
            problems.append(f"cell {number} has a syntax error (line {line}): {getattr(error, 'msg', error)}")
            continue
        try:
            with (
                time_limit(CELL_TIME_LIMIT),
                contextlib.redirect_stdout(_Discard()),
                contextlib.redirect_stderr(_Discard()),
            ):
                exec(code, namespace)
        except TimeLimitExceeded:
            problems.append(f"cell {number} ran longer than {CELL_TIME_LIMIT:g} s and was stopped")
        except SystemExit:
            problems.append(f"cell {number} called exit(): the grader ignored it and ran the next cells")
        except (Exception, KeyboardInterrupt) as error:
            problems.append(f"cell {number} raised {_first_line(error)}")
    return problems


def load_functions(path: str | Path, names: list[str]) -> dict[str, Any]:
    """Execute a notebook's code (not its check cells) and return the named objects it defined.

    Missing names are left out of the result, so callers can fall back to the reference.
    """
    parsed = parse_notebook(path)
    namespace: dict[str, Any] = {"__name__": "__learner__"}
    execute_cells(parsed, namespace)
    return {name: namespace[name] for name in names if name in namespace}
