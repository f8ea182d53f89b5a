"""The grader never crashes and never lies: misbehaving learner code gets one clear line."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import nbformat
import pytest
import torch
from grading_helpers import SOLUTIONS, with_replacement

from attention_course.cli import main
from attention_course.grading import Case, Exercise, Mistake, Status, check, get_exercise, run_check
from attention_course.grading.generate import strip_solution
from attention_course.grading.grade import grade_notebooks

SOFTMAX = get_exercise("softmax")


def _reference(x, dim=-1, temperature=1.0):
    return torch.softmax(x / temperature, dim=dim)


def test_a_correct_function_passes() -> None:
    assert run_check(SOFTMAX, _reference).status is Status.PASSED


def test_not_implemented_is_not_done_without_traceback() -> None:
    def stub(x, dim=-1, temperature=1.0):
        raise NotImplementedError("your code here")

    result = run_check(SOFTMAX, stub)
    assert result.status is Status.NOT_DONE
    assert "Traceback" not in result.message


@pytest.mark.parametrize(
    ("learner", "expected_words"),
    [
        (lambda x, dim=-1, temperature=1.0: 1 / 0, "raised ZeroDivisionError"),
        (lambda x, dim=-1, temperature=1.0: _reference(x, dim, temperature).tolist(), "returned a list"),
        (lambda x, dim=-1, temperature=1.0: _reference(x, dim, temperature)[..., :1], "returned shape"),
        (lambda x, dim=-1, temperature=1.0: _reference(x, dim, temperature).double(), "returned dtype torch.float64"),
        (lambda x, dim=-1, temperature=1.0: _reference(x, dim, temperature) * float("nan"), "returned NaN"),
        (lambda x, dim=-1, temperature=1.0: None, "returned a NoneType"),
        (42, "should be a function"),
    ],
    ids=["raises", "wrong-type", "wrong-shape", "wrong-dtype", "nan", "none", "not-callable"],
)
def test_wrong_results_get_one_clear_line(learner, expected_words) -> None:
    result = run_check(SOFTMAX, learner)
    assert result.status is Status.FAILED
    assert expected_words in result.message
    assert "Traceback" not in result.message


def test_changing_inputs_in_place_is_reported() -> None:
    def in_place(x, dim=-1, temperature=1.0):
        x -= x.amax(dim=dim, keepdim=True)
        return torch.softmax(x / temperature, dim=dim)

    result = run_check(SOFTMAX, in_place)
    assert result.status is Status.FAILED and "in place" in result.message


def test_an_endless_loop_is_stopped_within_the_time_limit() -> None:
    def forever(x, dim=-1, temperature=1.0):
        while True:
            time.sleep(0.05)

    quick = dataclasses.replace(SOFTMAX, time_limit=1.0)
    start = time.perf_counter()
    result = run_check(quick, forever)
    assert time.perf_counter() - start < 5.0
    assert result.status is Status.FAILED and "stopped after 1 s" in result.message


def test_printing_is_hidden_and_does_not_affect_the_grade(capsys) -> None:
    def chatty(x, dim=-1, temperature=1.0):
        for _ in range(10_000):
            print("debugging...")
        return _reference(x, dim, temperature)

    assert run_check(SOFTMAX, chatty).status is Status.PASSED
    assert "debugging" not in capsys.readouterr().out


def test_check_prints_one_line_and_survives_unknown_names(capsys) -> None:
    assert check("softmax", _reference) is None  # nothing for a notebook to echo as Out[...]
    check("no_such_exercise", _reference)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("PASS softmax")
    assert lines[1].startswith("FAIL no_such_exercise") and "known exercises" in lines[1]


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("x = 1\n### END SOLUTION\n", "without BEGIN"),
        ("### BEGIN SOLUTION\nx = 1\n", "without END"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n", "nested"),
    ],
)
def test_unbalanced_solution_markers_are_refused(source, error) -> None:
    with pytest.raises(ValueError, match=error):
        strip_solution(source)


def test_stub_keeps_signature_docstring_and_indent() -> None:
    source = 'def f(x):\n    """Doc."""\n    y = 1  # hint stays\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n'
    assert (
        strip_solution(source)
        == 'def f(x):\n    """Doc."""\n    y = 1  # hint stays\n    raise NotImplementedError("your code here")'
    )


# ---------------------------------------------------------------- whole notebooks, out of process


def _notebook_with(tmp_path: Path, name: str, softmax_source: str) -> Path:
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(with_replacement(SOLUTIONS / "04_softmax.ipynb", "softmax", softmax_source), path)
    return path


def test_broken_notebooks_are_reported_not_raised(tmp_path: Path) -> None:
    syntax = _notebook_with(tmp_path, "syntax", "def softmax(x, dim=-1, temperature=1.0):\n    return (\n")
    missing = tmp_path / "missing.ipynb"
    notebook = nbformat.read(SOLUTIONS / "04_softmax.ipynb", as_version=4)
    notebook.cells = [c for c in notebook.cells if "def softmax" not in c.source]
    nbformat.write(notebook, missing)
    crash = _notebook_with(
        tmp_path, "crash", "def softmax(x, dim=-1, temperature=1.0):\n    import os\n    os._exit(3)\n"
    )
    healthy = SOLUTIONS / "04_softmax.ipynb"

    syntax_grade, missing_grade, crash_grade, healthy_grade = grade_notebooks([syntax, missing, crash, healthy])

    assert any("syntax error" in note for note in syntax_grade.notes)
    assert syntax_grade.results[0].status is Status.PASSED  # the solution cell before it still defines softmax
    assert missing_grade.results[0].status is Status.FAILED
    assert "is not defined" in missing_grade.results[0].message
    assert crash_grade.results[0].status is Status.FAILED
    assert "crashed Python (exit code 3)" in crash_grade.results[0].message
    assert healthy_grade.results[0].passed, "a crash in one notebook must not cost the others"


def test_a_sleeping_function_is_stopped_and_reported_by_the_command(tmp_path: Path, capsys) -> None:
    sleeper = _notebook_with(
        tmp_path, "sleeper", "def softmax(x, dim=-1, temperature=1.0):\n    import time\n    time.sleep(10_000)\n"
    )
    start = time.perf_counter()
    code = main(["grade", str(sleeper)])
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    assert code == 1
    assert f"stopped after {SOFTMAX.time_limit:g} s" in out
    assert elapsed < SOFTMAX.time_limit + 45  # the limit plus starting Python and torch on a loaded machine


def test_grade_command_exit_codes_and_score(tmp_path: Path, capsys) -> None:
    assert main(["grade", str(SOLUTIONS / "04_softmax.ipynb")]) == 0
    assert "Score: 1/1 exercises passed (100%)" in capsys.readouterr().out
    wrong = _notebook_with(tmp_path, "wrong", "def softmax(x, dim=-1, temperature=1.0):\n    return torch.exp(x)\n")
    assert main(["grade", str(wrong)]) == 1
    out = capsys.readouterr().out
    assert "FAIL softmax" in out and "Score: 0/1" in out
    assert main(["grade", str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize("report", ["grades.md", "grades.csv"])
def test_class_report(tmp_path: Path, report: str, capsys) -> None:
    (tmp_path / "class" / "ada").mkdir(parents=True)
    (tmp_path / "class" / "bob").mkdir(parents=True)
    nbformat.write(
        nbformat.read(SOLUTIONS / "04_softmax.ipynb", as_version=4), tmp_path / "class" / "ada" / "04_softmax.ipynb"
    )
    nbformat.write(
        with_replacement(
            SOLUTIONS / "04_softmax.ipynb",
            "softmax",
            "def softmax(x, dim=-1, temperature=1.0):\n    raise NotImplementedError\n",
        ),
        tmp_path / "class" / "bob" / "04_softmax.ipynb",
    )
    target = tmp_path / report
    assert main(["grade", "--class", str(tmp_path / "class"), "--report", str(target)]) == 1
    table = target.read_text()
    if report.endswith(".csv"):
        assert table.splitlines() == ["learner,softmax,score", "ada,passed,1/1", "bob,not done,0/1"]
    else:
        assert "| ada | passed | 1/1 |" in table and "| bob | not done | 0/1 |" in table


def test_inputs_inside_dataclasses_are_copied_and_watched() -> None:
    from attention_course.grading.compare import clone, same

    @dataclasses.dataclass(frozen=True)
    class Weights:
        w: torch.Tensor
        n_heads: int

    original = Weights(torch.ones(2), 2)
    copy = clone(original)
    copy.w.add_(1.0)  # what a learner's in-place edit of a weight would do
    assert torch.equal(original.w, torch.ones(2)), "the case's own tensors must stay untouched"
    assert not same(original, copy) and same(original, clone(original))


# ---------------------------------------------------------------- contracts beyond values (spec.Case fields)


def _linear(x, w):
    return x @ w


def _linear_cases():
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 4, generator=generator), torch.randn(4, 2, generator=generator)
    return [Case((x, w), label="x (3, 4), w (4, 2)", check_grad=True)]


def _detached(x, w):
    return (x @ w).detach()


LINEAR = Exercise(
    "linear_demo",
    "00_demo",
    _linear,
    _linear_cases,
    mistakes=(Mistake("detached", "do not detach the output: gradients must reach x and w.", _detached),),
)


def test_gradients_must_reach_every_input() -> None:
    assert run_check(LINEAR, lambda x, w: torch.einsum("ld,dk->lk", x, w)).passed
    result = run_check(LINEAR, lambda x, w: (x @ w).detach())
    assert result.status is Status.FAILED and "no gradient reaches `argument 1`" in result.message
    assert "Hint: do not detach the output" in result.message
    half = run_check(LINEAR, lambda x, w: x @ w.detach())
    assert half.status is Status.FAILED and "no gradient reaches `argument 2`" in half.message
    assert "Hint" not in half.message  # the catalogued mistake cuts both, this code only one


def test_wrong_gradients_are_reported() -> None:
    class Twice(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return x @ w

        @staticmethod
        def backward(ctx, grad):
            x, w = ctx.saved_tensors
            return 2 * grad @ w.T, x.T @ grad

    result = run_check(LINEAR, Twice.apply)
    assert result.status is Status.FAILED and "gradient w.r.t. `argument 1`" in result.message


def _row_sums(q, k):
    out = torch.empty(q.shape[0])
    for start in range(0, k.shape[0], 2):  # two keys at a time: never the full (L, S) matrix
        part = q @ k[start : start + 2].T
        out = out + part.sum(-1) if start else part.sum(-1)
    return out


def _alloc_cases():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, 8, generator=generator), torch.randn(16, 8, generator=generator)
    return [Case((q, k), label="q, k (16, 8)", max_alloc_bytes=16 * 2 * 4, atol=1e-4)]


def test_the_largest_allocation_is_bounded() -> None:
    exercise = Exercise("row_sums_demo", "00_demo", _row_sums, _alloc_cases)
    assert run_check(exercise, _row_sums, forbid_reference=False).passed
    result = run_check(exercise, lambda q, k: (q @ k.T).sum(-1))
    assert result.status is Status.FAILED and "must not build a tensor that grows with both L and S" in result.message


def test_select_compares_only_what_the_exercise_defines() -> None:
    def reference(x):
        return torch.cat([x[:2] * 2, torch.zeros_like(x[2:])])

    cases = lambda: [Case((torch.arange(4.0),), label="x = arange(4)", select=lambda out: out[:2])]  # noqa: E731
    exercise = Exercise("select_demo", "00_demo", reference, cases)
    assert run_check(exercise, lambda x: x * 2).passed  # rows 2 and 3 are undefined: anything goes there
    assert run_check(exercise, lambda x: x * 3).status is Status.FAILED


def test_a_list_changed_in_place_is_reported() -> None:
    def reference(blocks):
        return torch.stack(list(blocks)).sum(0)

    def pops(blocks):
        total = blocks.pop()
        for block in blocks:
            total = total + block
        return total

    cases = lambda: [Case(([torch.ones(2), torch.ones(2) * 2],), label="two blocks")]  # noqa: E731
    exercise = Exercise("list_demo", "00_demo", reference, cases)
    result = run_check(exercise, pops)
    assert result.status is Status.FAILED and "changed its inputs in place" in result.message


def test_a_hint_for_code_that_raises_needs_the_same_message() -> None:
    def mistake(x, dim=-1, temperature=1.0):
        raise ValueError("temperature must be positive")

    exercise = dataclasses.replace(SOFTMAX, mistakes=(Mistake("raises", "the catalogued hint.", mistake),))

    def same_error(x, dim=-1, temperature=1.0):
        raise ValueError("temperature must be positive")

    def other_error(x, dim=-1, temperature=1.0):
        raise ValueError("dim out of range")

    assert "Hint: the catalogued hint." in run_check(exercise, same_error).message
    assert "Hint" not in run_check(exercise, other_error).message


def test_calling_the_reference_in_process_fails() -> None:
    from attention_course.softmax import softmax as course_softmax

    result = run_check(SOFTMAX, lambda x, dim=-1, temperature=1.0: course_softmax(x, dim, temperature))
    assert result.status is Status.FAILED and "your function calls the course's" in result.message
    assert run_check(SOFTMAX, SOFTMAX.reference).passed  # the reference itself (the catalogue tests grade it)


def test_exit_inside_a_function_is_an_error() -> None:
    import sys

    result = run_check(SOFTMAX, lambda x, dim=-1, temperature=1.0: sys.exit(0))
    assert result.status is Status.FAILED and "raised SystemExit" in result.message


def test_a_case_where_the_instructions_ask_for_an_exception() -> None:
    # The reference raises on the middle case: code raising the same type passes (and the cases
    # after it still run); code that returns, or raises another type, fails and is told what to raise.
    def reference(x):
        if (x < 0).any():
            raise ValueError("x must be non-negative")
        return x.sqrt()

    def cases() -> list[Case]:
        return [
            Case((torch.tensor([4.0]),)),
            Case((torch.tensor([-1.0]),), label="negative"),
            Case((torch.ones(3) * 9,)),
        ]

    exercise = Exercise("sqrt_demo", "00_demo", reference, cases)

    def raises_too(x):
        if x.min() < 0:
            raise ValueError("negative input")
        return torch.sqrt(x)

    def wrong_after(x):
        if x.min() < 0:
            raise ValueError("negative input")
        return x.sqrt() if x.numel() == 1 else x

    assert run_check(exercise, raises_too).passed
    assert "wrong value" in run_check(exercise, wrong_after).message  # the last case was graded
    returned = run_check(exercise, lambda x: x.sqrt()).message
    assert "returned tensor([nan]) for negative: the instructions ask for a ValueError here." in returned
    assert "raised TypeError for negative: the instructions ask for a ValueError" in (
        run_check(exercise, lambda x: x.sqrt() if x.min() >= 0 else x + "").message
    )


def test_an_error_in_the_backward_pass_says_so_and_names_the_in_place_write() -> None:
    def exp_divided_in_place(x, dim=-1, temperature=1.0):
        z = x / temperature
        z = (z - z.amax(dim=dim, keepdim=True)).exp()
        z /= z.sum(dim, keepdim=True)  # exp's backward needs its output
        return z

    message = run_check(SOFTMAX, exp_divided_in_place).message
    assert "in the backward pass (the check differentiates through your function)" in message
    assert "saved for the backward of `exp` was changed in place" in message


def test_nan_where_a_catalogued_mistake_has_zeros_gets_that_mistakes_hint() -> None:
    # torch.softmax leaves NaN in a fully masked row where the course's softmax gives 0: a learner
    # making a catalogued mistake that way still gets its hint; NaN everywhere matches nothing.
    def reference(x):
        return x * 2

    def zeroes_negatives(x):
        return torch.where(x < 0, torch.zeros_like(x), x * 2)

    exercise = Exercise(
        "double_demo",
        "00_demo",
        reference,
        lambda: [Case((torch.tensor([1.0, -2.0, 3.0]),))],
        mistakes=(Mistake("zeroes_negatives", "negative entries must be doubled too.", zeroes_negatives),),
    )
    nan_instead = run_check(exercise, lambda x: torch.where(x < 0, torch.full_like(x, float("nan")), x * 2))
    assert (
        "returned NaN" in nan_instead.message and "Hint: negative entries must be doubled too." in nan_instead.message
    )
    assert "Hint" not in run_check(exercise, lambda x: torch.full_like(x, float("nan"))).message
