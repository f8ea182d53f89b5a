"""The grader against every exercise's reference, stub and catalogue of known mistakes.

Every registered exercise must: pass with its reference; grade "not done" as the generated stub;
fail with the mistake's own hint for every catalogued mistake, both when the mistake is called
directly and when it is pasted into a copy of the solution notebook and graded by the command
line grader (the rest of that notebook must still pass).

Every catalogued mistake is an edit of its solution cell (``grading/edits.py``): the catalogue must
build from a reformatted copy of the solutions too. A few mistakes are caught only by a Case
contract that the runner enforces (``check_grad``: a detached output; ``max_alloc_bytes``: the
dense algorithm where the exercise forbids it); while a runner does not enforce one, those tests
are reported as expected failures, not passes.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from grading_helpers import EXERCISES, SOLUTIONS, function_source, with_replacement

from attention_course.grading import Case, Exercise, Status, all_exercises, get_exercise, run_check
from attention_course.grading.edits import SPECS, CatalogueError, Edit, MistakeSpec, mutant_source
from attention_course.grading.grade import grade_notebooks
from attention_course.grading.notebook import parse_notebook

ALL = all_exercises()
MISTAKES = [(exercise, mistake) for exercise in ALL for mistake in exercise.mistakes]
# Mistakes that only a Case contract catches, and the contract.
CONTRACT_MISTAKES = {
    "detached_output": "check_grad",
    "dense_attention": "max_alloc_bytes",
    "visits_every_tile": "max_alloc_bytes",
}


@functools.cache
def _runner_enforces(contract: str) -> bool:
    """Probe the runner with a tiny exercise: does it apply this Case contract?"""
    if contract == "check_grad":
        probe = Exercise(
            name="probe_grad",
            lesson="probe",
            reference=lambda x: x * 2,
            cases=lambda: [Case((torch.ones(3),), check_grad=True)],
        )
        return not run_check(probe, lambda x: (x * 2).detach()).passed
    probe = Exercise(
        name="probe_alloc",
        lesson="probe",
        reference=lambda x: x * 2,
        cases=lambda: [Case((torch.ones(3),), max_alloc_bytes=1024)],
    )
    return not run_check(probe, lambda x: x * 2 + torch.zeros(100_000).sum()).passed


def _xfail_if_contract_not_enforced(mistake, passed: bool) -> None:
    contract = CONTRACT_MISTAKES.get(mistake.name)
    if passed and contract and not _runner_enforces(contract):
        pytest.xfail(f"caught only by Case.{contract}, which this runner does not enforce yet")


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
    assert exercise.name in names, f'{solution.name} has no check("{exercise.name}", ...) cell'


@pytest.mark.parametrize("exercise", ALL, ids=_id)
def test_reference_passes(exercise) -> None:
    result = run_check(exercise, exercise.reference)
    assert result.status is Status.PASSED, result.message


@pytest.mark.parametrize(("exercise", "mistake"), MISTAKES, ids=_id)
def test_mistake_fails_with_its_hint(exercise, mistake) -> None:
    result = run_check(exercise, mistake.impl)
    _xfail_if_contract_not_enforced(mistake, result.passed)
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
    _xfail_if_contract_not_enforced(mistake, by_name[exercise.name].passed)
    assert by_name[exercise.name].status is Status.FAILED, by_name[exercise.name].message
    assert mistake.hint in by_name[exercise.name].message, by_name[exercise.name].message
    others = [r for r in grade.results if r.exercise != exercise.name]
    assert all(r.passed for r in others), [r.message for r in others if not r.passed]


def _loose_mistakes(exercise) -> list[str]:
    built = {(spec.function, spec.name) for spec in SPECS}
    return [m.name for m in exercise.mistakes if (exercise.name, m.name) not in built]


@pytest.mark.parametrize("exercise", ALL, ids=_id)
def test_every_mistake_is_an_edit_of_its_solution(exercise) -> None:
    loose = _loose_mistakes(exercise)
    assert not loose, f"mistakes not written as edits of the solution (grading/edits.py): {loose}"


def test_catalogue_survives_reformatting(tmp_path) -> None:
    """``ruff format`` (here with short lines and single quotes) on the solutions changes no mistake."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    for solution in SOLUTIONS.glob("*.py"):
        shutil.copy(solution, tmp_path / solution.name)
    subprocess.run(
        [ruff, "format", "--isolated", "--line-length", "40", "--config", "format.quote-style='single'", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    changed = [p.name for p in tmp_path.glob("*.py") if p.read_text() != (SOLUTIONS / p.name).read_text()]
    assert len(changed) >= 10, f"the formatter changed too little to prove anything: {changed}"
    assert SPECS, "no catalogued edit was registered"
    for spec in SPECS:
        assert mutant_source(spec, tmp_path) == mutant_source(spec), f"{spec.function}.{spec.name} changed"


def test_edit_that_no_longer_matches_fails_loudly() -> None:
    spec = MistakeSpec("04_softmax", "softmax", "probe", "hint", (Edit("z = x * temperature", "z = x"),))
    with pytest.raises(CatalogueError, match="occurs 0 times"):
        mutant_source(spec)
    twice = MistakeSpec("04_softmax", "softmax", "probe", "hint", (Edit("dim=dim", "dim=0"),))
    with pytest.raises(CatalogueError, match="occurs 2 times"):
        mutant_source(twice)


def test_fully_masked_rows_are_what_the_hints_say() -> None:
    """Exercise 04 leaves all -inf rows out (its solution gives NaN there, no case has one); lesson 05's
    hints send the learner to nan_to_num or attention_course.softmax, which does give zeros."""
    from attention_course import softmax

    for case in get_exercise("softmax").cases():
        for value in case.args:
            if isinstance(value, torch.Tensor):
                assert not torch.isneginf(value).all(dim=-1).any(), case.label
    assert torch.equal(softmax(torch.full((2, 3), float("-inf"))), torch.zeros(2, 3))
    solution_05 = (SOLUTIONS / "05_masking.py").read_text()
    assert not re.search(r"softmax from exercise 04 handles", solution_05)
    assert "attention_course.softmax" in solution_05
    nan_hint = next(m.hint for m in get_exercise("masked_attention").mistakes if m.name == "nan_on_fully_masked")
    assert "attention_course.softmax" in nan_hint and "exercise 04" not in nan_hint


def test_a_copy_without_solutions_still_grades(tmp_path) -> None:
    # An instructor may hand out the course without solutions/ (the catalogues are built from it).
    # check() must still compare with the reference and say what is wrong, only without a hint.
    package = Path(__file__).resolve().parent.parent / "attention_course"
    shutil.copytree(package, tmp_path / "attention_course", ignore=shutil.ignore_patterns("__pycache__"))
    script = (
        "import torch\n"
        "from attention_course.grading import check, get_exercise\n"
        "def softmax(x, dim=-1):\n"
        "    return torch.exp(x) / torch.exp(x).sum(dim, keepdim=True)\n"
        "check('softmax', softmax)\n"
        "print('mistakes', len(get_exercise('softmax').mistakes), len(get_exercise('tiled_attention').mistakes))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FAIL softmax: returned NaN" in result.stdout and "catalogue" not in result.stdout, result.stdout
    assert "mistakes 0 0" in result.stdout
