"""All exercises of the course, collected from ``attention_course.grading.exercises.*``."""

from __future__ import annotations

import importlib
import pkgutil

from . import exercises as _exercise_modules
from .spec import Exercise

_EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add an exercise; its ``name`` must be unique across the course."""
    if exercise.name in _EXERCISES and _EXERCISES[exercise.name] is not exercise:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    _EXERCISES[exercise.name] = exercise
    return exercise


def _load_all() -> None:
    for module in pkgutil.iter_modules(_exercise_modules.__path__):
        importlib.import_module(f"{_exercise_modules.__name__}.{module.name}")


def get_exercise(name: str) -> Exercise:
    _load_all()
    if name not in _EXERCISES:
        known = ", ".join(sorted(_EXERCISES))
        raise KeyError(f"no exercise named {name!r}; known exercises: {known}")
    return _EXERCISES[name]


def all_exercises() -> list[Exercise]:
    _load_all()
    return sorted(_EXERCISES.values(), key=lambda e: (e.lesson, e.name))
