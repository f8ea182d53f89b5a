"""A notebook cannot write its own grade: learner code runs apart from the verdict (issue 22).

Each forging attempt is graded in one batch with an honest notebook of another lesson, whose
grade must not change, and no file outside the grader's throwaway folder may change (the tree's
hash before and after).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from grading_helpers import ROOT, SOLUTIONS, with_replacement

from attention_course.cli import main
from attention_course.grading import Status, get_exercise, run_check
from attention_course.grading.grade import NotebookGrade, grade_notebooks

SOFTMAX = get_exercise("softmax")
SIGNATURE = "def softmax(x, dim=-1, temperature=1.0):\n"


def _tree_hash(*extra: Path) -> str:
    """Hash of every file git tracks in the repository, plus every file under ``extra``."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [ROOT / p for p in tracked.decode().split("\0") if p]
    for folder in extra:
        paths += sorted(p for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()


def _softmax_notebook(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.ipynb"
    nbformat.write(with_replacement(SOLUTIONS / "04_softmax.ipynb", "softmax", SIGNATURE + body), path)
    return path


def _forgeries(folder: Path) -> dict[str, str]:
    outside = folder / "outside.txt"
    report = folder / "grades.md"
    return {
        "patch_comparison": (
            "    import attention_course.grading.runner as r\n"
            "    import attention_course.grading.compare as c\n"
            "    r.difference = c.difference = lambda *a, **k: None\n"
            "    r.same = c.same = lambda *a, **k: True\n"
            "    return x\n"
        ),
        "patch_reference": (
            "    import attention_course\n"
            "    import attention_course.softmax as s\n"
            "    s.softmax = attention_course.softmax = lambda x, dim=-1, temperature=1.0: x\n"
            "    return x\n"
        ),
        "patch_registry": (
            "    from attention_course.grading import registry\n"
            "    for exercise in list(registry._EXERCISES.values()):\n"
            "        object.__setattr__(exercise, 'reference', lambda x, *a, **k: x)\n"
            "    registry.get_exercise = lambda name: None\n"
            "    return x\n"
        ),
        "calls_the_reference": (
            "    import attention_course\n    return attention_course.softmax(x, dim=dim, temperature=temperature)\n"
        ),
        "calls_the_reference_by_another_name": (
            "    from attention_course import softmax as course_softmax\n"
            "    helper = course_softmax.__wrapped__ if hasattr(course_softmax, '__wrapped__') else course_softmax\n"
            "    return helper(x, dim, temperature)\n"
        ),
        "writes_outside": (
            f"    try:\n        open({str(outside)!r}, 'w').write('forged')\n    except OSError:\n        pass\n"
            "    return torch.softmax(x / temperature, dim=dim)\n"
        ),
        "reads_solutions": (
            f"    text = open({str(SOLUTIONS / '04_softmax.py')!r}).read()\n"
            "    return torch.softmax(x / temperature, dim=dim)\n"
        ),
        "overwrites_report": (
            f"    try:\n        open({str(report)!r}, 'w').write('| forged | passed |')\n    except OSError:\n        pass\n"
            "    return torch.softmax(x / temperature, dim=dim)\n"
        ),
        "starts_a_program": (
            f"    import os\n    os.system('touch {outside}')\n    return torch.softmax(x / temperature, dim=dim)\n"
        ),
    }


@pytest.fixture(scope="module")
def forged(tmp_path_factory) -> tuple[dict[str, NotebookGrade], NotebookGrade, Path, str, str]:
    folder = tmp_path_factory.mktemp("forgeries")
    paths = {name: _softmax_notebook(folder, name, body) for name, body in _forgeries(folder).items()}
    honest = folder / "05_masking.ipynb"
    nbformat.write(nbformat.read(SOLUTIONS / "05_masking.ipynb", as_version=4), honest)
    before = _tree_hash(folder)
    grades = grade_notebooks([*paths.values(), honest])
    after = _tree_hash(folder)
    by_name = dict(zip(paths, grades, strict=False))
    return by_name, grades[-1], folder, before, after


@pytest.mark.parametrize("name", ["patch_comparison", "patch_reference", "patch_registry"])
def test_patching_the_grader_in_the_worker_changes_nothing(forged, name) -> None:
    grades, *_ = forged
    result = grades[name].results[0]
    assert result.status is Status.FAILED, result.message
    assert "wrong values" in result.message


@pytest.mark.parametrize("name", ["calls_the_reference", "calls_the_reference_by_another_name"])
def test_calling_the_course_reference_fails_with_its_hint(forged, name) -> None:
    grades, *_ = forged
    result = grades[name].results[0]
    assert result.status is Status.FAILED
    assert "this exercise asks you to write `softmax`; your function calls the course's" in result.message


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("writes_outside", "outside its working folder"),
        ("reads_solutions", "tried to read"),
        ("overwrites_report", "outside its working folder"),
        ("starts_a_program", "start another program"),
    ],
)
def test_file_and_program_attempts_are_refused_and_noted(forged, name, words) -> None:
    grades, _, folder, *_ = forged
    grade = grades[name]
    assert any(words in note and "refused" in note for note in grade.notes), grade.notes
    assert not (folder / "outside.txt").exists()
    assert not (folder / "grades.md").exists()


def test_other_grades_and_every_file_are_unchanged(forged) -> None:
    _, honest, _, before, after = forged
    assert honest.results and all(r.passed for r in honest.results), [r.message for r in honest.results]
    assert not honest.notes
    assert before == after, "a file outside the throwaway folder changed during the grade"


def test_the_function_being_the_reference_fails(tmp_path: Path) -> None:
    notebook = with_replacement(SOLUTIONS / "04_softmax.ipynb", "softmax", "from attention_course import softmax\n")
    path = tmp_path / "alias.ipynb"
    nbformat.write(notebook, path)
    (grade,) = grade_notebooks([path])
    assert grade.results[0].status is Status.FAILED
    assert "your function calls the course's" in grade.results[0].message


def test_the_class_report_cannot_be_overwritten(tmp_path: Path, capsys) -> None:
    report = tmp_path / "grades.md"
    learner = tmp_path / "class" / "mallory"
    learner.mkdir(parents=True)
    body = (
        f"    try:\n        open({str(report)!r}, 'w').write('| mallory | passed | 1/1 |')\n    except OSError:\n"
        "        pass\n    return x\n"
    )
    _softmax_notebook(learner, "04_softmax", body)
    copier = tmp_path / "class" / "eve"  # reads another learner's notebook while being graded
    copier.mkdir()
    _softmax_notebook(
        copier,
        "04_softmax",
        f"    open({str(learner / '04_softmax.ipynb')!r}).read()\n    return torch.softmax(x / temperature, dim=dim)\n",
    )
    before = _tree_hash(tmp_path / "class")
    assert main(["grade", "--class", str(tmp_path / "class"), "--report", str(report)]) == 1
    table = report.read_text()
    assert "| mallory | failed | 0/1 |" in table
    out = capsys.readouterr().out
    assert "mallory/04_softmax.ipynb: note:" in out and "outside its working folder" in out
    assert "eve/04_softmax.ipynb: note:" in out and "tried to read" in out
    assert _tree_hash(tmp_path / "class") == before


def test_check_prints_the_verdict_the_command_gives(tmp_path: Path, capsys) -> None:
    from attention_course.grading import check

    body = "    return torch.exp(x)\n"
    namespace: dict = {}
    exec("import torch\n" + SIGNATURE + body, namespace)
    check("softmax", namespace["softmax"])
    in_notebook = capsys.readouterr().out.strip()
    main(["grade", str(_softmax_notebook(tmp_path, "wrong", body))])
    from_command = capsys.readouterr().out
    assert in_notebook.startswith("FAIL softmax")
    first_line = in_notebook.splitlines()[0]
    assert first_line.replace("FAIL softmax", "  FAIL softmax") in from_command


def test_check_loads_only_its_lesson_and_answers_fast() -> None:
    script = (
        "import sys, time, torch\n"
        "from attention_course.grading import check\n"
        "f = lambda x, dim=-1, temperature=1.0: torch.softmax(x / temperature, dim=dim)\n"
        "check('softmax', f)\n"
        "start = time.perf_counter(); check('softmax', f); took = time.perf_counter() - start\n"
        "lessons = sorted(m for m in sys.modules if '.grading.exercises.lesson' in m)\n"
        "print('triton' in sys.modules, lessons, took)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("PASS softmax") and lines[1].startswith("PASS softmax")
    triton_loaded, lessons, took = lines[2].split(" ", 1)[0], lines[2].split("] ")[0], float(lines[2].split("] ")[1])
    assert triton_loaded == "False"
    assert lessons.endswith("['attention_course.grading.exercises.lesson04'")
    assert took <= 1.0, f"a warm check() took {took:.2f} s"


def test_a_broken_catalogue_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from attention_course.grading import check, registry
    from attention_course.grading import exercises as package

    (tmp_path / "lesson99_broken.py").write_text(
        'from attention_course.grading import Exercise, register\nraise ImportError("boom")\n'
        'register(Exercise(name="broken_one", lesson="99", reference=print, cases=list))\n'
    )
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    registry._index.cache_clear()
    try:
        check("broken_one", print)
    finally:
        registry._index.cache_clear()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("FAIL broken_one: the grader's catalogue lesson99_broken.py")
    assert "Traceback" not in out


# ---------------------------------------------------------------- robustness (issue 16.7)


def _grade_timed(paths: list[Path]) -> tuple[list[NotebookGrade], float]:
    start = time.perf_counter()
    grades = grade_notebooks(paths)
    return grades, time.perf_counter() - start


def test_exits_never_count_as_a_clean_finish(tmp_path: Path) -> None:
    exits = _softmax_notebook(tmp_path, "a_exit", "    import sys\n    sys.exit(0)\n")
    hard = _softmax_notebook(tmp_path, "b_os_exit", "    import os\n    os._exit(0)\n")
    scratch = tmp_path / "c_scratch.ipynb"  # exit() in a cell: that cell ends, the checks still run
    notebook = nbformat.read(SOLUTIONS / "04_softmax.ipynb", as_version=4)
    notebook.cells.insert(1, nbformat.v4.new_code_cell("exit()"))
    nbformat.write(notebook, scratch)
    honest = SOLUTIONS / "05_masking.ipynb"
    (a, b, c, d), _ = _grade_timed([exits, hard, scratch, honest])
    assert a.results[0].status is Status.FAILED and "raised SystemExit" in a.results[0].message
    assert b.results[0].status is Status.FAILED and "ended Python early" in b.results[0].message
    assert c.results[0].passed and any("called exit()" in note for note in c.notes)
    assert d.results and all(r.passed for r in d.results), "a later notebook must still be graded"
    assert main(["grade", str(hard), str(honest)]) == 1


def test_a_bare_except_cannot_swallow_the_time_limit(tmp_path: Path) -> None:
    body = "    import time\n    while True:\n        try:\n            time.sleep(0.05)\n        except:\n            pass\n"
    stubborn = _softmax_notebook(tmp_path, "stubborn", body)
    honest = SOLUTIONS / "05_masking.ipynb"
    (grade, other), took = _grade_timed([stubborn, honest])
    assert grade.results[0].status is Status.FAILED
    assert f"stopped after {SOFTMAX.time_limit:g} s" in grade.results[0].message
    assert other.results and all(r.passed for r in other.results)
    assert took < SOFTMAX.time_limit + 60  # the limit, the grace, and two Python starts on a loaded machine


def test_a_thread_that_never_ends_does_not_delay_the_grade(tmp_path: Path) -> None:
    notebook = nbformat.read(SOLUTIONS / "04_softmax.ipynb", as_version=4)
    notebook.cells.insert(
        1,
        nbformat.v4.new_code_cell(
            "import threading, time\nthreading.Thread(target=lambda: time.sleep(10_000)).start()"
        ),
    )
    path = tmp_path / "threads.ipynb"
    nbformat.write(notebook, path)
    (grade,), took = _grade_timed([path])
    assert grade.results[0].passed
    assert took < 45


def test_memory_is_capped(tmp_path: Path) -> None:
    body = "    big = torch.ones(64 << 30, dtype=torch.uint8)\n    return torch.softmax(x / temperature, dim=dim)\n"
    (grade,), _ = _grade_timed([_softmax_notebook(tmp_path, "greedy", body)])
    assert grade.results[0].status is Status.FAILED
    assert "raised RuntimeError" in grade.results[0].message or "stopped by the system" in grade.results[0].message


def test_calling_a_package_function_that_computes_the_exercise_fails_in_both_paths(tmp_path: Path) -> None:
    # masked_attention is one call of the course's scaled_dot_product_attention: calling that
    # (named in the exercise's also_forbidden) fails like calling the reference, in the notebook's
    # check and in the command-line grader's worker.
    source = (
        "def masked_attention(q, k, v, mask=None):\n"
        "    import attention_course as ac\n"
        "    return ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)\n"
    )
    path = tmp_path / "borrowed.ipynb"
    nbformat.write(with_replacement(SOLUTIONS / "05_masking.ipynb", "masked_attention", source), path)
    (grade,) = grade_notebooks([path])
    (result,) = [r for r in grade.results if r.exercise == "masked_attention"]
    assert result.status is Status.FAILED
    assert "or a function that computes the same (`attention_course.attention.scaled_dot_product_attention`" in (
        result.message
    )
    namespace: dict[str, object] = {}
    exec(source, namespace)
    assert "computes the same" in run_check(get_exercise("masked_attention"), namespace["masked_attention"]).message
