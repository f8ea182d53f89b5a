"""The course's exercises, each loaded only when asked for.

Exercise catalogues live in ``attention_course/grading/exercises/lessonNN*.py``, one module per
lesson. ``get_exercise(name)`` imports only the module that registers ``name``: an index of
``name -> module`` is read from the modules' source (``register(Exercise(name="...", ...))``)
without importing them, so lesson 04's check never imports lesson 11b's Triton. A catalogue that
cannot be loaded raises :class:`CatalogueError` with a one-line message.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from functools import cache
from pathlib import Path

from . import exercises as _exercise_modules
from .spec import Exercise

_EXERCISES: dict[str, Exercise] = {}


class CatalogueError(KeyError):
    """An exercise is unknown or its lesson's catalogue cannot be loaded; ``args[0]`` is one line."""


def register(exercise: Exercise) -> Exercise:
    """Add an exercise; its ``name`` must be unique across the course."""
    if exercise.name in _EXERCISES and _EXERCISES[exercise.name] is not exercise:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    _EXERCISES[exercise.name] = exercise
    return exercise


def _module_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(_exercise_modules.__path__) if m.name.startswith("lesson"))


def _registered_names(source: str) -> list[str] | None:
    """Names in ``register(Exercise(name=...))`` calls of a module's source; None if one is not a constant."""
    tree = ast.parse(source)
    constants: dict[str, str] = {}
    for statement in tree.body:
        if (
            isinstance(statement, ast.Assign)
            and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str)
        ):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = statement.value.value
    names: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Exercise"):
            continue
        value = next((k.value for k in node.keywords if k.arg == "name"), node.args[0] if node.args else None)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            names.append(value.value)
        elif isinstance(value, ast.Name) and value.id in constants:
            names.append(constants[value.id])
        else:
            return None
    return names


@cache
def _index() -> tuple[dict[str, str], tuple[str, ...]]:
    """(exercise name -> module, modules whose names could not be read statically)."""
    index: dict[str, str] = {}
    unreadable: list[str] = []
    folder = Path(_exercise_modules.__file__).parent
    for module in _module_names():
        try:
            names = _registered_names((folder / f"{module}.py").read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            names = None
        if names is None:
            unreadable.append(module)
            continue
        for name in names:
            index.setdefault(name, module)
    return index, tuple(unreadable)


def _import(module: str) -> None:
    try:
        importlib.import_module(f"{_exercise_modules.__name__}.{module}")
    except Exception as error:
        text = str(error).strip().splitlines()
        detail = f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__
        raise CatalogueError(
            f"the grader's catalogue {module}.py cannot be loaded ({detail}); please report this"
        ) from None


def get_exercise(name: str) -> Exercise:
    """The exercise called ``name``, importing only its lesson's catalogue (CatalogueError if none)."""
    if name in _EXERCISES:
        return _EXERCISES[name]
    index, unreadable = _index()
    if name in index:
        _import(index[name])
    for module in unreadable:
        if name in _EXERCISES:
            break
        _import(module)
    if name not in _EXERCISES:
        known = ", ".join(sorted(set(index) | set(_EXERCISES)))
        raise CatalogueError(f"no exercise named {name!r}; known exercises: {known}")
    return _EXERCISES[name]


def all_exercises() -> list[Exercise]:
    """Every exercise of the course (imports every lesson's catalogue)."""
    for module in _module_names():
        _import(module)
    return sorted(_EXERCISES.values(), key=lambda e: (e.lesson, e.name))
