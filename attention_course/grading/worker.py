"""Subprocess that grades notebooks: ``python -m attention_course.grading.worker OUT NOTEBOOK...``.

It writes one JSON line per result to OUT as soon as it has it, so that when a learner's code
crashes the process or hangs, the parent still has every result before that point.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from .registry import get_exercise
from .runner import _first_line, run_check
from .spec import Status


def _emit(out: TextIO, **record: Any) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def grade_into(out: TextIO, notebook: Path) -> None:
    from .notebook import execute_cells, parse_notebook

    _emit(out, notebook=str(notebook), event="start")
    try:
        parsed = parse_notebook(notebook)
    except Exception as error:
        _emit(out, notebook=str(notebook), event="note", message=f"cannot read the notebook: {_first_line(error)}")
        return
    namespace: dict[str, Any] = {"__name__": "__learner__"}
    for problem in execute_cells(parsed, namespace):
        _emit(out, notebook=str(notebook), event="note", message=problem)
    for call in parsed.checks:
        try:
            exercise = get_exercise(call.exercise)
        except KeyError as error:
            _emit(out, notebook=str(notebook), event="result", exercise=call.exercise,
                  status=Status.FAILED.value, message=error.args[0])
            continue
        try:
            fn = eval(call.function_expr, namespace)  # the learner's function, e.g. `softmax`
        except Exception as error:
            _emit(out, notebook=str(notebook), event="result", exercise=call.exercise, status=Status.FAILED.value,
                  message=f"`{call.function_expr}` is not defined ({_first_line(error)}): did its cell run without errors?")
            continue
        result = run_check(exercise, fn)
        _emit(out, notebook=str(notebook), event="result", exercise=result.exercise,
              status=result.status.value, message=result.message)
    _emit(out, notebook=str(notebook), event="done")


def main(argv: list[str]) -> int:
    out_path, notebooks = argv[0], argv[1:]
    os.environ["MPLBACKEND"] = "Agg"  # learners' plots draw off screen (this process only)
    # The learner's prints go nowhere; results go to OUT only.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    with open(out_path, "a", encoding="utf-8") as out:
        for notebook in notebooks:
            grade_into(out, Path(notebook))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
