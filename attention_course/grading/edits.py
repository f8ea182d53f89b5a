"""The catalogue style: every known mistake is a named edit of the exercise's solution cell.

A mistake is written as the solution function with one thing changed::

    mistake("04_softmax", "softmax", "no_max_subtraction",
            "subtract the maximum along `dim` before exp: ...",
            edit("z = z - z.amax(dim=dim, keepdim=True)", "z = z"))

The solution's function is read from ``solutions/NN_topic.py`` and normalised with
``ast.unparse`` (comments, docstring, type hints, line breaks, quotes and parentheses of the
author's layout all disappear); each edit's ``old`` and ``new`` snippets are normalised the same
way, then ``old`` is replaced where it occurs in the normalised source. So a formatter (``ruff
format``) or a re-wrapped line in the solution cannot break the catalogue, while a real change of
the code an edit is anchored on fails loudly (``CatalogueError``) instead of silently building a
mistake that is no longer the one its hint names.

The mistake's function runs in a namespace holding the solution notebook's imports, and its
source is registered with ``linecache``, so ``inspect.getsource`` works on it (the grader's tests
paste it into a copy of the solution notebook).

A learner's copy of the course may lack ``solutions/`` (an instructor holds it back until the
session ends). Then a lesson's catalogue is empty (``has_solutions``): the grader still compares
every case with the reference and says what is wrong, it only cannot name a catalogued mistake.
"""

from __future__ import annotations

import ast
import functools
import linecache
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import Mistake

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "solutions"


def has_solutions(lesson: str) -> bool:
    """Whether ``solutions/<lesson>.py``, which the lesson's mistakes are built from, is here."""
    return (SOLUTIONS / f"{lesson}.py").is_file()


class CatalogueError(RuntimeError):
    """A catalogued edit no longer matches its solution (the solution changed what the edit is anchored on)."""


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` by ``new`` (both Python snippets, normalised) ``count`` times in the solution function."""

    old: str
    new: str
    count: int = 1


@dataclass(frozen=True)
class MistakeSpec:
    """What a catalogue entry is before it is built: where its solution is, its name, hint and edits."""

    lesson: str
    function: str
    name: str
    hint: str
    edits: tuple[Edit, ...]


DETACHED_HINT = (
    "the result is cut off from autograd (.detach(), torch.tensor(...), .numpy() or .item()): "
    "compute it with tensor operations on the inputs so that gradients reach them."
)

SPECS: list[MistakeSpec] = []  # every catalogued edit, in registration order (the tests rebuild them)


def edit(old: str, new: str, count: int = 1) -> Edit:
    return Edit(old, new, count)


def _forms(snippet: str) -> list[tuple[str, str]]:
    """The ways ``snippet`` can be written as ``ast.unparse`` writes it: (kind, text), most likely first.

    ``dim=dim`` is both a statement (``dim = dim``) and keyword arguments (``dim=dim``); the edit uses
    whichever occurs in the solution.
    """
    text = textwrap.dedent(snippet).strip()
    forms: list[tuple[str, str]] = []
    try:
        forms.append(("statements", ast.unparse(ast.parse(text))))
    except SyntaxError:
        pass
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        assert isinstance(call, ast.Call)
        forms.append(("arguments", ast.unparse(call)[2:-1]))
    except (SyntaxError, AssertionError):
        pass
    forms.append(("as written", text))
    return forms


def normalise(snippet: str, kind: str = "statements") -> str:
    """``snippet`` as ``ast.unparse`` writes it, read as ``kind`` (see ``_forms``); else as written."""
    return dict(_forms(snippet)).get(kind, textwrap.dedent(snippet).strip())


class _StripHints(ast.NodeTransformer):
    """Drop annotations and docstrings (of undecorated functions): they are not what a mistake changes."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        if node.decorator_list:  # e.g. @triton.jit reads its parameters' annotations (tl.constexpr)
            return node
        node.returns = None
        for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs, node.args.vararg, node.args.kwarg):
            if arg is not None:
                arg.annotation = None
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
        return node


def _solution_tree(lesson: str, solutions: Path | None) -> ast.Module:
    path = (solutions or SOLUTIONS) / f"{lesson}.py"
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CatalogueError(f"cannot read the solution {path}: {error}") from error


@functools.lru_cache(maxsize=256)
def solution_function(lesson: str, function: str, solutions: Path | None = None) -> str:
    """The normalised source of ``def function`` in ``solutions/<lesson>.py`` (decorators kept)."""
    tree = _solution_tree(lesson, solutions)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return ast.unparse(_StripHints().visit(node))
    raise CatalogueError(f"solutions/{lesson}.py defines no function {function}()")


@functools.lru_cache(maxsize=64)
def solution_imports(lesson: str, solutions: Path | None = None) -> str:
    """The solution notebook's top-level import statements (also those inside a try block)."""
    tree = _solution_tree(lesson, solutions)
    statements: list[ast.stmt] = []
    for node in tree.body:
        for inner in [node] if not isinstance(node, ast.Try) else node.body:
            if isinstance(inner, ast.Import | ast.ImportFrom):
                statements.append(inner)
    return "\n".join(ast.unparse(statement) for statement in statements)


def _hits(source: str, old: str) -> list[tuple[int, str, str]]:
    """Where ``old`` starts in ``source``: (offset, the text matched, the indentation of its line)."""
    first, *rest = old.split("\n")
    hits: list[tuple[int, str, str]] = []
    start = 0
    while (at := source.find(first, start)) >= 0:
        start = at + 1
        line_start = source.rfind("\n", 0, at) + 1
        line_end = source.find("\n", at)
        line = source[line_start : line_end if line_end >= 0 else len(source)]
        indent = line[: len(line) - len(line.lstrip())]
        if rest and source[line_start:at].strip():
            continue  # a multi-line snippet starts a line
        whole = ("\n" + indent).join([first, *rest])
        if source.startswith(whole, at):
            hits.append((at, whole, indent))
    return hits


def _replace(source: str, change: Edit, where: str) -> str:
    forms = _forms(change.old)
    kind, old = next(((kind, text) for kind, text in forms if _hits(source, text)), forms[0])
    hits = _hits(source, old)
    if len(hits) != change.count:
        raise CatalogueError(f"{where}: {old!r} occurs {len(hits)} times in the solution, expected {change.count}")
    new = normalise(change.new, kind)
    for at, whole, indent in reversed(hits):
        source = source[:at] + ("\n" + indent).join(new.split("\n")) + source[at + len(whole) :]
    return source


def mutant_source(spec: MistakeSpec, solutions: Path | None = None) -> str:
    """The solution function with the spec's edits applied, normalised (raises ``CatalogueError``)."""
    source = solution_function(spec.lesson, spec.function, solutions)
    where = f"mistake {spec.name} of {spec.function}"
    for change in spec.edits:
        source = _replace(source, change, where)
    try:
        return ast.unparse(ast.parse(source))
    except SyntaxError as error:
        raise CatalogueError(f"{where}: the edited solution does not parse ({error})") from error


def load_function(source: str, name: str, label: str, imports: str = "") -> Callable[..., Any]:
    """Execute ``imports`` and ``source`` as a module named ``label``; return its ``name``.

    The source is registered with ``linecache`` (as IPython does for notebook cells) so that
    ``inspect.getsource`` and Triton can read it later.
    """
    text = (imports + "\n\n" if imports else "") + source + "\n"
    filename = f"<{label}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": label}
    exec(compile(text, filename, "exec"), namespace)
    return namespace[name]


def build(spec: MistakeSpec, solutions: Path | None = None) -> Callable[..., Any]:
    """The mistake's function, in a namespace holding the solution notebook's imports."""
    label = f"mistake {spec.lesson} {spec.function} {spec.name}"
    return load_function(mutant_source(spec, solutions), spec.function, label, solution_imports(spec.lesson, solutions))


def mistake(lesson: str, function: str, name: str, hint: str, *edits: Edit) -> Mistake:
    """A catalogued mistake: the solution of ``function`` with ``edits`` applied, and its hint."""
    spec = MistakeSpec(lesson, function, name, hint, tuple(edits))
    SPECS.append(spec)
    return Mistake(name, hint, build(spec))


def catalogue(lesson: str, function: str, *entries: tuple[Any, ...]) -> tuple[Mistake, ...]:
    """Several mistakes of one function: entries ``(name, hint, edit, edit, ...)``; none without ``solutions/``."""
    if not has_solutions(lesson):
        return ()
    return tuple(mistake(lesson, function, name, hint, *edits) for name, hint, *edits in entries)
