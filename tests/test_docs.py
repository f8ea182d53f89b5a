"""What CONTRIBUTING.md and README.md name exists: every path, module, make target and tree entry.

Placeholders count as patterns: ``NN`` is a lesson number, ``topic`` a name, ``<concept>`` any
name; so ``attention_course/grading/exercises/lessonNN.py`` must match at least one real file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from grading_helpers import ROOT

DOCS = ["CONTRIBUTING.md", "README.md"]
SUFFIXES = (".py", ".md", ".toml", ".cfg", ".yml", ".ipynb", ".json")
TARGETS = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def _inline_code(text: str) -> list[str]:
    without_blocks = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return re.findall(r"`([^`\n]+)`", without_blocks)


def _pattern(path: str) -> str:
    path = re.sub(r"<[^>]+>", "*", path).replace("NN_topic", "[0-9]*_*").replace("NN", "[0-9]*")
    return path.rstrip("/")


def _exists(path: str) -> bool:
    """At the repository root, in the package, or (a bare file name like ``html_build.py``) anywhere in
    the package or the tests."""
    pattern = _pattern(path)
    if any(any(base.glob(pattern)) for base in (ROOT, ROOT / "attention_course")):
        return True
    return any(any(base.rglob(pattern)) for base in (ROOT / "attention_course", ROOT / "tests"))


def named_paths(doc: str) -> list[str]:
    paths = []
    for span in _inline_code((ROOT / doc).read_text()):
        for token in re.split(r"[\s,()]+", span):
            token = token.strip("'\"")
            if "://" in token or token.startswith((".venv", "-", "$", "/", "~")) or "=" in token:
                continue
            if token.startswith(("build/", "lab/tree/")):  # written by `make html` and the tests; a JupyterLab URL
                continue
            if "/" in token and re.fullmatch(r"[\w./<>*-]+", token) or token.endswith(SUFFIXES):
                paths.append(token)
    return paths


def named_modules(doc: str) -> list[str]:
    return sorted(set(re.findall(r"\battention_course(?:\.\w+)+", (ROOT / doc).read_text())))


def named_targets(doc: str) -> list[str]:
    return sorted(
        {
            target
            for span in _inline_code((ROOT / doc).read_text())
            for target in re.findall(r"(?:^|\s)make ([a-z][a-z-]*)", span)
        }
    )


@pytest.mark.parametrize("doc", DOCS)
def test_every_named_path_exists(doc: str) -> None:
    paths = named_paths(doc)
    assert len(paths) >= 5, paths  # the extraction works (else this test proves nothing)
    missing = [path for path in paths if not _exists(path)]
    assert not missing, f"{doc} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_named_module_exists(doc: str) -> None:
    missing = []
    for dotted in named_modules(doc):
        parts = dotted.split(".")
        # attention_course.x.y: the longest prefix that is a module or package must go past the package itself
        found = any(
            (ROOT.joinpath(*parts[:n]).with_suffix(".py")).exists()
            or (ROOT.joinpath(*parts[:n]) / "__init__.py").exists()
            for n in range(2, len(parts) + 1)
        )
        if not found:
            missing.append(dotted)
    assert not missing, f"{doc} names modules that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_named_make_target_exists(doc: str) -> None:
    targets = named_targets(doc)
    assert {"test", "lab"} <= set(targets) or doc != "README.md"
    missing = [target for target in targets if target not in TARGETS]
    assert not missing, f"{doc} names make targets the Makefile lacks: {missing}"


def test_contributing_names_the_everyday_targets_and_the_layout_tree_exists() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    assert {"test-fast", "lint", "nbval", "notebook", "test", "exercises"} <= set(named_targets("CONTRIBUTING.md"))
    tree = re.search(r"```\nattention_course/\n(.*?)```", text, re.DOTALL)
    assert tree, "CONTRIBUTING.md's Layout section opens its tree with attention_course/"
    entries = [
        token
        for line in tree.group(1).splitlines()
        for token in line.split()[:8]
        if re.fullmatch(r"[\w/]+\.py|\w+/", token) and not line.strip().startswith(("1.", "2."))
    ]
    missing = [entry for entry in entries if not _exists(entry)]
    assert len(entries) >= 20 and not missing, (entries, missing)
    modules = {path.stem for path in (ROOT / "attention_course").glob("*.py")}
    unlisted = sorted(modules - {Path(entry).stem for entry in entries})
    assert not unlisted, f"modules missing from CONTRIBUTING.md's tree: {unlisted}"


def test_the_checks_catch_a_path_that_points_nowhere(tmp_path: Path) -> None:
    assert not _exists("tests/test_exercises_generated.py") and not _exists(
        "attention_course/grading/exercises/NN_topic.py"
    )
    assert _exists("attention_course/grading/exercises/lessonNN.py") and _exists("notebooks/NN_topic.ipynb")
    assert "nbval" in TARGETS and "no-such-target" not in TARGETS
