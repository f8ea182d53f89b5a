"""The package's dependencies point one way, read from the source with ``ast`` (nothing is imported).

Layers, lowest first (CONTRIBUTING.md, "Layout"): core concepts <- efficient attention (kernels
and the KV cache) <- models <- inference <- course tooling (``teaching``) <- grading <- the command
line (``cli``). A module may import from its own layer or a lower one, never a higher one. No two
modules import each other, directly or through others (an import inside a function counts too).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "attention_course"

# Each concept module, by layer; a new module must be placed here (a test fails until it is).
CORE = {"_validation", "_environment", "softmax", "qkv", "masking", "attention", "multihead", "positional", "measure"}
EFFICIENT = {
    "kv_cache",
    "rolling_cache",
    "paged_cache",
    "mla",
    "sparse",
    "flex",
    "flash",
    "io_model",
    "triton_compile",
    "triton_flash",
}
MODELS = {"cross_attention", "decoder", "pretrained"}
INFERENCE = {"generation", "heads"}  # running and probing a model: decoding, what trained heads do
LAYERS = [("core", CORE), ("efficient", EFFICIENT), ("models", MODELS), ("inference", INFERENCE)]
ORDER = ["core", "efficient", "models", "inference", "teaching", "grading", "cli"]
# What each layer must never import: every layer above it. attention_course/__init__.py (what
# `import attention_course` loads) must not pull in course tooling.
FORBIDDEN = {layer: set(ORDER[i + 1 :]) for i, layer in enumerate(ORDER)} | {"package": {"teaching", "grading", "cli"}}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``attention_course.grading.spec`` for ``attention_course/grading/spec.py``; packages by their folder."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """The package's modules that the file ``path`` imports (anywhere in it), resolved to names in ``modules``."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:  # `from .x import function`: x is the module
            name = name.rpartition(".")[0]
        if name and name != here:
            found.add(name)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from . import sparse` imports the module sparse
                add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = sorted(root.rglob("*.py"))
    modules = {module_name(path, root) for path in files}
    return {module_name(path, root): imported_modules(path, modules, root) for path in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None. Depth-first search with three colours."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts == ["attention_course"]:
        return "package"
    if parts[1] in ("teaching", "grading", "cli"):
        return parts[1]
    return next((name for name, members in LAYERS if parts[1] in members), "unplaced")


def violations(graph: dict[str, set[str]]) -> Iterable[str]:
    for module, imports in sorted(graph.items()):
        for target in sorted(imports):
            if layer_of(target) in FORBIDDEN.get(layer_of(module), set()):
                yield f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"


GRAPH = import_graph()


def test_the_graph_sees_the_imports_it_should() -> None:
    """The parser resolves relative, absolute and function-level imports (else the checks below prove nothing)."""
    assert "attention_course.softmax" in GRAPH["attention_course.attention"]  # from .softmax import softmax
    assert "attention_course.grading.spec" in GRAPH["attention_course.grading.exercises.lesson04"]  # from ..spec
    assert "attention_course.triton_flash" in GRAPH["attention_course.grading.triton_sandbox"]  # inside a function
    assert "attention_course.generation" in GRAPH or "attention_course.decoder" in GRAPH


def test_no_import_cycles() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_concept_module_has_a_layer() -> None:
    unplaced = sorted(module for module in GRAPH if layer_of(module) == "unplaced")
    assert not unplaced, f"place these modules in a layer in tests/test_layers.py (and CONTRIBUTING.md): {unplaced}"


def test_dependencies_point_one_way() -> None:
    found = list(violations(GRAPH))
    assert not found, "imports against the layers:\n" + "\n".join(found)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "attention_course"


def test_the_checks_catch_a_cycle_and_a_concept_module_importing_grading(tmp_path: Path) -> None:
    """A made-up package with both faults: the same functions that pass the real package flag it."""
    root = _write(
        tmp_path,
        {
            "attention_course/__init__.py": "",
            "attention_course/softmax.py": "def f():\n    from .grading import spec\n",
            "attention_course/attention.py": "from .softmax import f\nfrom . import qkv\n",
            "attention_course/qkv.py": "import attention_course.attention\n",
            "attention_course/grading/__init__.py": "",
            "attention_course/grading/spec.py": "from attention_course.teaching.plotting import plot\n",
            "attention_course/teaching/__init__.py": "",
            "attention_course/teaching/plotting.py": "from ..grading.spec import Case\n",
        },
    )
    graph = import_graph(root)
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) >= {"attention_course.attention", "attention_course.qkv"}
    assert sorted(violations(graph)) == [
        "attention_course.softmax (core) imports attention_course.grading.spec (grading)",
        "attention_course.teaching.plotting (teaching) imports attention_course.grading.spec (grading)",
    ]  # grading.spec importing teaching.plotting is allowed (grading sits above teaching), yet still a cycle


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if layer_of(m) not in ("teaching", "grading", "cli")))
def test_concept_modules_never_import_course_tooling(module: str) -> None:
    assert not {layer_of(target) for target in GRAPH[module]} & {"teaching", "grading", "cli"}, GRAPH[module]
