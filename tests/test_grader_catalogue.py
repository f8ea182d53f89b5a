"""The grader against every exercise's reference, stub and catalogue of known mistakes.

Every registered exercise must: pass with its reference; grade "not done" as the generated stub;
fail with the mistake's own hint for every catalogued mistake, both when the mistake is called
directly and when it is pasted into a copy of the solution notebook and graded by the command
line grader (the rest of that notebook must still pass).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from grading_helpers import EXERCISES, SOLUTIONS, function_source, with_replacement

from attention_course.grading import Status, all_exercises, run_check
from attention_course.grading.grade import grade_notebooks
from attention_course.grading.notebook import parse_notebook

ALL = all_exercises()
MISTAKES = [(exercise, mistake) for exercise in ALL for mistake in exercise.mistakes]


def _id(value: object) -> str:
    return getattr(value, "name", str(value))


def test_catalogue_is_not_empty() -> None:
    assert ALL, "no exercise is registered"
    assert all(exercise.mistakes for exercise in ALL), [e.name for e in ALL if not e.mistakes]


@pytest.mark.parametrize("exercise", ALL, ids=_id)
def test_solution_notebook_checks_the_exercise(exercise) -> None:
    solution = SOLUTIONS / f"{exercise.lesson}.ipynb"
    assert solution.exists(), f"{exercise.name}: no solution notebook {solution.name}"
    names = [call.exercise for call in parse_notebook(solution).checks]
    assert exercise.name in names, f"{solution.name} has no check(\"{exercise.name}\", ...) cell"


@pytest.mark.parametrize("exercise", ALL, ids=_id)
def test_reference_passes(exercise) -> None:
    result = run_check(exercise, exercise.reference)
    assert result.status is Status.PASSED, result.message


@pytest.mark.parametrize(("exercise", "mistake"), MISTAKES, ids=_id)
def test_mistake_fails_with_its_hint(exercise, mistake) -> None:
    result = run_check(exercise, mistake.impl)
    assert result.status is Status.FAILED, f"{mistake.name} was not caught: {result.message}"
    assert mistake.hint in result.message, f"{mistake.name} got another hint: {result.message}"


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[Path, object]:
    """Grade, in one batch: every solution, every generated stub, every mistake pasted into a solution copy."""
    folder = tmp_path_factory.mktemp("mistakes")
    notebooks = sorted(SOLUTIONS.glob("*.ipynb")) + sorted(EXERCISES.glob("*.ipynb"))
    for exercise, mistake in MISTAKES:
        if not (SOLUTIONS / f"{exercise.lesson}.ipynb").exists():
            continue  # reported by test_solution_notebook_checks_the_exercise
        target = folder / f"{exercise.name}__{mistake.name}.ipynb"
        source = function_source(mistake.impl, exercise.name)
        nbformat.write(with_replacement(SOLUTIONS / f"{exercise.lesson}.ipynb", exercise.name, source), target)
        notebooks.append(target)
    return {grade.path: grade for grade in grade_notebooks(notebooks)}


@pytest.mark.parametrize("solution", sorted(SOLUTIONS.glob("*.ipynb")), ids=lambda p: p.name)
def test_solutions_grade_100_percent(graded, solution) -> None:
    grade = graded[solution]
    assert grade.results and all(r.passed for r in grade.results), [r.message for r in grade.results]
    assert not grade.notes, grade.notes


@pytest.mark.parametrize("stub", sorted(EXERCISES.glob("*.ipynb")), ids=lambda p: p.name)
def test_stubs_grade_not_done(graded, stub) -> None:
    grade = graded[stub]
    assert grade.results, f"{stub.name}: no exercise graded"
    assert all(r.status is Status.NOT_DONE for r in grade.results), [r.message for r in grade.results]
    assert not grade.notes, grade.notes


@pytest.mark.parametrize(("exercise", "mistake"), MISTAKES, ids=_id)
def test_mistake_in_notebook_fails_only_that_exercise(graded, exercise, mistake) -> None:
    grades = [g for path, g in graded.items() if path.name == f"{exercise.name}__{mistake.name}.ipynb"]
    assert grades, f"no solution notebook {exercise.lesson}.ipynb to paste {mistake.name} into"
    grade = grades[0]
    by_name = {r.exercise: r for r in grade.results}
    assert by_name[exercise.name].status is Status.FAILED, by_name[exercise.name].message
    assert mistake.hint in by_name[exercise.name].message, by_name[exercise.name].message
    others = [r for r in grade.results if r.exercise != exercise.name]
    assert all(r.passed for r in others), [r.message for r in others if not r.passed]
