"""Run a learner's Triton flash kernel away from the grader, and say what is wrong with it.

Two kinds of subprocess, because one Python process cannot both interpret and compile Triton
(``@triton.jit`` picks one from ``TRITON_INTERPRET`` when it decorates):

* **numerics** (``TRITON_INTERPRET=1``, this module as ``-m attention_course.grading.triton_sandbox
  JOB_DIR``): the kernel runs on CPU tensors over ``FLASH_CASES`` and is
  compared with PyTorch's ``scaled_dot_product_attention``. The interpreter never checks memory
  bounds, so every input lies in a buffer whose gaps (between heads, after the last row, around
  the tensor) hold NaN, and the output in one whose gaps hold a sentinel: reading past a tensor
  puts NaN in the result, writing past it changes the sentinel. On the first failing case, the
  catalogued mistakes run on the same case; one that writes the same buffer names the mistake.
* **compile** (no interpreter): ``attention_course.triton_compile`` runs ``triton.compile`` for
  CUDA targets (sm_80, sm_90) without a GPU, which rejects what only the interpreter accepts
  (``break``, calls to plain Python functions). Its names are re-exported here for the grader.

A kernel that crashes (a wild pointer can kill the interpreter) or hangs ends its subprocess, not
the grader. The numerics child, where the learner's kernel body runs as Python, has the grading
worker's limits and guard (``guard.limit_resources``, ``guard.install_guard``): CPU time and
address space, no writes outside its job folder, no reading ``solutions/``, no programs started.
PyTorch is imported only inside the numerics child's functions.
"""

from __future__ import annotations

import ast
import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..triton_compile import (
    GpuBuild,
    GpuCompileError,
    compile_in_subprocess,
    describe_exit,
    is_jitted,
    kernel_module_source,
    load_module_file,
    run_child,
)

__all__ = [
    "FLASH_CASES",
    "FlashCase",
    "GpuBuild",
    "GpuCompileError",
    "Verdict",
    "check_flash_kernel",
    "compile_in_subprocess",
    "is_jitted",
    "kernel_module_source",
    "load_kernel",
    "unmasked_memory_ops",
]

SENTINEL = -10000.0  # fills the output's guard memory; exactly representable in float16


@dataclass(frozen=True)
class FlashCase:
    """One launch of the kernel: ``heads`` heads of ``n_queries`` queries over ``n_keys`` keys.

    ``layout`` ``"heads-first"`` stores each tensor as ``(heads, N, d)`` (with gap rows after each
    head); ``"tokens-first"`` stores ``(N, heads, d)`` and hands the kernel the transposed view,
    so the head stride is smaller than the position stride; ``"every-other-feature"`` stores
    ``(heads, N, 2 d)`` and hands the kernel every other column, so the feature stride is 2.
    ``layouts``, when given, sets the layout of q, k, v and out one by one (all four strides differ).
    """

    label: str
    heads: int
    n_queries: int
    n_keys: int
    causal: bool
    dtype: str = "float32"
    layout: str = "heads-first"
    block_m: int = 16
    block_n: int = 16
    d_head: int = 16
    layouts: tuple[str, str, str, str] | None = None
    q_offset: float = 0.0  # added to every entry of q (with k_offset < 0: every score far below 0)
    k_offset: float = 0.0

    def layout_of(self, tensor: str) -> str:
        """The layout of ``tensor`` (one of "q", "k", "v", "out")."""
        return self.layouts[("q", "k", "v", "out").index(tensor)] if self.layouts else self.layout

    @property
    def tolerance(self) -> tuple[float, float]:
        """(atol, rtol) against float32 SDPA. float32: rounding of a few dozen products stays
        below 1e-6, 1e-5 leaves room. float16: inputs, P and the output are rounded to 11-bit
        mantissas (about 5e-4 relative each) on outputs of size about 1; 5e-3 is ten such steps."""
        if self.q_offset or self.k_offset:  # scores of size ~150 keep float32's 6e-8 relative error: ~1e-5
            return (1e-4, 1e-3)
        return (1e-5, 1e-4) if self.dtype == "float32" else (5e-3, 1e-2)


FLASH_CASES = (
    FlashCase("1 head, N=16 queries and keys (exactly one 16×16 block), d=16", 1, 16, 16, False),
    FlashCase("1 head, N=16 (one block), causal", 1, 16, 16, True),
    FlashCase("2 heads, N=9 (below the block size), causal", 2, 9, 9, True),
    FlashCase("2 heads, N=40 (across blocks, 40 = 2×16 + 8)", 2, 40, 40, False),
    FlashCase("2 heads, N=40 (across blocks), causal", 2, 40, 40, True),
    FlashCase("3 heads, 21 queries over 47 keys (L != S)", 3, 21, 47, False),
    FlashCase(
        "2 heads, 33 queries over 20 keys, causal, BLOCK_M=32, BLOCK_N=16", 2, 33, 20, True, block_m=32, block_n=16
    ),
    FlashCase(
        "2 heads, N=24, stored (N, heads, d) so head stride < position stride, causal",
        2,
        24,
        24,
        True,
        layout="tokens-first",
    ),
    FlashCase(
        "2 heads, 20 queries over 28 keys, q, k, v and out each with other strides (q (heads, N, d), "
        "k (N, heads, d), v every other feature column, out (N, heads, d)), causal",
        2,
        20,
        28,
        True,
        layouts=("heads-first", "tokens-first", "every-other-feature", "tokens-first"),
    ),
    FlashCase(
        "2 heads, 24 queries over 40 keys whose scores are all about -150 (q near +6, k near -6)",
        2,
        24,
        40,
        False,
        q_offset=6.0,
        k_offset=-6.0,
    ),
    FlashCase("2 heads, N=40, causal, float16", 2, 40, 40, True, dtype="float16"),
    FlashCase("3 heads, 18 queries over 35 keys, float16", 3, 18, 35, False, dtype="float16"),
)


@dataclass(frozen=True)
class Verdict:
    """What the numerics subprocess concluded: passed, or a message and maybe a mistake's name."""

    passed: bool
    message: str
    mistake: str | None = None


# ---------------------------------------------------------------------------------------------
# Parent side: load a kernel from source, check its memory operations, start and read the numerics child.
# ---------------------------------------------------------------------------------------------


def load_kernel(source: str, kernel_name: str, label: str) -> Any:
    """Execute a module's ``source`` in memory and return its ``kernel_name``.

    The source is registered with ``linecache`` under ``<label>`` (as IPython does for notebook
    cells), so that ``inspect`` and Triton can read the kernel's source later.
    """
    import linecache

    filename = f"<{label}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": label}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[kernel_name]


# Where a mask may be passed without its keyword: tl.load(pointer, mask, other, boundary_check, ...)
# and tl.store(pointer, value, mask, boundary_check, ...).
_MASK_POSITIONS = {"load": (1, 3), "store": (2, 3)}


def _triton_language_names(tree: ast.Module) -> tuple[set[str], set[str], dict[str, str]]:
    """How ``source`` can name triton.language: module aliases (``tl``), names of ``triton`` itself,
    and functions imported from it (local name -> ``load``/``store``)."""
    modules, tritons, functions = set(), set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "triton.language":
                    if alias.asname:
                        modules.add(alias.asname)
                    else:
                        tritons.add("triton")
                elif alias.name == "triton":
                    tritons.add(alias.asname or "triton")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if node.module == "triton" and alias.name == "language":
                    modules.add(alias.asname or "language")
                elif node.module == "triton.language" and alias.name in _MASK_POSITIONS:
                    functions[alias.asname or alias.name] = alias.name
    return modules, tritons, functions


def _memory_op(call: ast.Call, modules: set[str], tritons: set[str], functions: dict[str, str]) -> str | None:
    """``"load"``/``"store"`` when ``call`` calls triton.language's, else None."""
    func = call.func
    if isinstance(func, ast.Name):
        return functions.get(func.id)
    if not (isinstance(func, ast.Attribute) and func.attr in _MASK_POSITIONS):
        return None
    owner = func.value
    if isinstance(owner, ast.Name) and owner.id in modules:
        return func.attr
    if (
        isinstance(owner, ast.Attribute)
        and owner.attr == "language"
        and isinstance(owner.value, ast.Name)
        and owner.value.id in tritons
    ):
        return func.attr
    return None


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def unmasked_memory_ops(source: str) -> list[str]:
    """The ``tl.load`` / ``tl.store`` calls in ``source`` that have neither a mask nor a boundary check.

    The mask counts whether it is passed by keyword (``mask=...``) or by position
    (``tl.load(ptr, mask, other)``, ``tl.store(ptr, value, mask)``); ``mask=None`` is no mask.
    ``tl.load(ptr, **options)`` is given the benefit of the doubt.

    Returns:
        the first source line of each such call, stripped.
    """
    tree = ast.parse(source)
    modules, tritons, functions = _triton_language_names(tree)
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        op = _memory_op(node, modules, tritons, functions)
        if op is None:
            continue
        if any(keyword.arg is None for keyword in node.keywords) or any(isinstance(a, ast.Starred) for a in node.args):
            continue  # **kwargs or *args: cannot tell
        guards = [keyword.value for keyword in node.keywords if keyword.arg in ("mask", "boundary_check")]
        guards += [arg for index, arg in enumerate(node.args) if index in _MASK_POSITIONS[op]]
        if not any(
            not _is_none(guard) and not (isinstance(guard, ast.Tuple | ast.List) and not guard.elts) for guard in guards
        ):
            found.append(lines[node.lineno - 1].strip())
    return found


def check_flash_kernel(
    source: str, kernel_name: str, mistakes: Mapping[str, str] | None = None, *, timeout: float = 120.0
) -> Verdict:
    """Run the kernel ``kernel_name`` defined in ``source`` over ``FLASH_CASES`` under the interpreter.

    Args:
        source: a module (see ``kernel_module_source``).
        kernel_name: the kernel's name in it.
        mistakes: catalogued wrong kernels, name -> module source, tried on the first failing case.
        timeout: seconds before the subprocess is killed.

    Returns:
        a ``Verdict``; a crash or a time-out is a failed verdict naming the case it happened in.
    """
    mistakes = dict(mistakes or {})
    with tempfile.TemporaryDirectory(prefix="flash_numerics_") as folder:
        job_dir = Path(folder)
        (job_dir / "learner_kernel.py").write_text(source, encoding="utf-8")
        for index, mistake_source in enumerate(mistakes.values()):
            (job_dir / f"mistake_{index}.py").write_text(mistake_source, encoding="utf-8")
        (job_dir / "job.json").write_text(
            json.dumps({"kernel": kernel_name, "mistakes": list(mistakes), **_limits(timeout)})
        )
        code, stderr = run_child(["-m", "attention_course.grading.triton_sandbox"], job_dir, timeout, interpret=True)
        verdict_file, progress_file = job_dir / "verdict.json", job_dir / "progress.txt"
        if verdict_file.exists():  # written before any diagnosis, so it survives a mistake that crashes
            return Verdict(**json.loads(verdict_file.read_text()))
        progress = progress_file.read_text().splitlines() if progress_file.exists() else []
        where = f" for {progress[-1]}" if progress else " before the first case"
        if code is None:
            return Verdict(False, f"did not finish within {timeout:g} s{where}: is there a loop that never ends?")
        if code == 0:
            return Verdict(False, f"the sandbox ended without a verdict{where}; please report this")
        last = stderr.strip().splitlines()[-1:] or [""]
        return Verdict(
            False,
            f"crashed the Triton interpreter ({describe_exit(code)}){where}: a load or store far outside "
            f"a tensor (check strides and offsets) can do that. {last[0][:200]}".strip(),
        )


def _limits(timeout: float) -> dict[str, Any]:
    """The numerics child's resource limits and protected folders, as the grading worker has them."""
    import torch

    from .guard import MEMORY_LIMIT_BYTES, protected_folders

    return {
        "limits": {
            "cpu_seconds": int(timeout) + 5,
            "memory_bytes": None if torch.cuda.is_available() else MEMORY_LIMIT_BYTES,
        },
        "protected": protected_folders([]),
    }


# ---------------------------------------------------------------------------------------------
# Child side: ``python -m attention_course.grading.triton_sandbox JOB_DIR`` (under TRITON_INTERPRET=1).
# ---------------------------------------------------------------------------------------------


def _guarded(case: FlashCase, n_rows: int, fill: float, dtype: Any, layout: str) -> tuple[Any, Any, Any]:
    """A ``(heads, n_rows, d)`` view into a flat buffer of ``fill`` with gaps around and between heads.

    Returns:
        (flat buffer, the view, a bool flat tensor that is True where the view lies).
    """
    import torch

    pad = max(case.block_m, case.block_n)  # a whole ragged block past the end stays inside the buffer
    if layout == "tokens-first":
        storage_shape = (n_rows + pad, case.heads, case.d_head)
    elif layout == "every-other-feature":
        storage_shape = (case.heads, n_rows + pad, 2 * case.d_head)
    else:
        storage_shape = (case.heads, n_rows + pad, case.d_head)
    size = storage_shape[0] * storage_shape[1] * storage_shape[2]
    guard = pad * case.heads * case.d_head * 2

    def view(flat: Any) -> Any:
        storage = flat[guard : guard + size].view(storage_shape)
        if layout == "tokens-first":
            return storage[:n_rows].transpose(0, 1)
        if layout == "every-other-feature":
            return storage[:, :n_rows, ::2]
        return storage[:, :n_rows]

    flat = torch.full((2 * guard + size,), fill, dtype=dtype)
    inside = torch.zeros(flat.shape, dtype=torch.bool)
    view(inside).fill_(True)
    return flat, view(flat), inside


def _inputs(case: FlashCase, seed: int) -> dict[str, Any]:
    import torch

    dtype = getattr(torch, case.dtype)
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    for name, rows in (("q", case.n_queries), ("k", case.n_keys), ("v", case.n_keys)):
        flat, view, _ = _guarded(case, rows, float("nan"), dtype, case.layout_of(name))
        offset = {"q": case.q_offset, "k": case.k_offset}.get(name, 0.0)
        view.copy_(torch.randn(view.shape, generator=generator) + offset)
        tensors[name], tensors[f"{name}_flat"] = view, flat
    return tensors


def _run_case(kernel: Any, case: FlashCase, inputs: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """Launch on fresh guarded output memory; return (flat output buffer, output view, inside mask)."""
    import torch

    from ..triton_flash import launch_flash_kernel

    flat, out, inside = _guarded(case, case.n_queries, SENTINEL, getattr(torch, case.dtype), case.layout_of("out"))
    launch_flash_kernel(
        kernel,
        inputs["q"],
        inputs["k"],
        inputs["v"],
        out,
        causal=case.causal,
        scale=case.d_head**-0.5,
        block_m=case.block_m,
        block_n=case.block_n,
    )
    return flat, out, inside


def _first_line(error: BaseException) -> str:
    original = error.__cause__ or error  # the interpreter wraps the kernel's own exception
    text = str(original).strip().splitlines()
    return f"{type(original).__name__}: {text[0][:160]}" if text else type(original).__name__


def _problem(
    case: FlashCase, inputs: Mapping[str, Any], before: Mapping[str, Any], flat: Any, out: Any, inside: Any
) -> str | None:
    """What is wrong with one launch's result, or None."""
    import torch

    for name in ("q", "k", "v"):
        if not torch.equal(inputs[f"{name}_flat"].view(torch.int8), before[name].view(torch.int8)):
            return f"changed the input {name} (or memory next to it): only out_ptr may be stored to"
    outside = flat[~inside]
    if not torch.all(outside == SENTINEL):
        return (
            "wrote outside the output (past its last row or between heads): mask tl.store with "
            "rows < n_queries and address rows through stride_on, heads through stride_oh"
        )
    got = out.float()
    if torch.isnan(got).any():
        rows = torch.isnan(got).any(dim=-1).nonzero()[0].tolist()
        return (
            f"NaN in the output (head {rows[0]}, query {rows[1]} first): a load past the end of k or v "
            "(the sandbox's guard memory holds NaN there), or a row whose scores are all -inf (0/0)"
        )
    expected = torch.nn.functional.scaled_dot_product_attention(
        inputs["q"].float(), inputs["k"].float(), inputs["v"].float(), is_causal=case.causal
    )
    atol, rtol = case.tolerance
    excess = (got - expected).abs() - (atol + rtol * expected.abs())
    if excess.max() <= 0:
        return None
    worst = divmod(int(excess.argmax()) // case.d_head, case.n_queries)
    error = float((got - expected).abs().max())
    return (
        f"the output differs from scaled_dot_product_attention by up to {error:.3g} "
        f"(worst at head {worst[0]}, query {worst[1]}; tolerance {atol:g})"
    )


def _same_behaviour(ours: tuple[Any, Any, Any], theirs: tuple[Any, Any, Any], case: FlashCase) -> bool:
    import torch

    atol, rtol = case.tolerance
    return torch.allclose(ours[0].float(), theirs[0].float(), atol=atol, rtol=rtol, equal_nan=True)


def _attempt(kernel: Any, case: FlashCase, seed: int) -> tuple[tuple[Any, Any, Any], str | None]:
    """Run ``kernel`` on one case; return its (flat output, view, inside mask) and what is wrong, or None."""
    inputs = _inputs(case, seed)
    before = {name: inputs[f"{name}_flat"].clone() for name in ("q", "k", "v")}
    result = _run_case(kernel, case, inputs)
    return result, _problem(case, inputs, before, *result)


def _behaves_like(mistake: Any, ours: tuple[Any, Any, Any], failing: int) -> bool:
    """Whether ``mistake`` passes every case before ``failing`` (as the learner's kernel did) and
    writes the same output memory as the learner's on case ``failing``."""
    try:
        theirs, _ = _attempt(mistake, FLASH_CASES[failing], failing)
        if not _same_behaviour(ours, theirs, FLASH_CASES[failing]):
            return False
        return all(_attempt(mistake, case, seed)[1] is None for seed, case in enumerate(FLASH_CASES[:failing]))
    except Exception:
        return False


def _numerics_child(job_dir: Path) -> None:
    from .guard import install_guard, limit_resources

    job = json.loads((job_dir / "job.json").read_text())
    progress = (job_dir / "progress.txt").open("a", encoding="utf-8")
    limit_resources(job["limits"])
    install_guard(str(job_dir), job["protected"])  # before any of the learner's code runs
    kernel = getattr(load_module_file(job_dir / "learner_kernel.py"), job["kernel"])
    for index, case in enumerate(FLASH_CASES):
        progress.write(case.label + "\n")
        progress.flush()
        try:
            ours, problem = _attempt(kernel, case, index)
        except Exception as error:
            _write_verdict(job_dir, Verdict(False, f"raised {_first_line(error)} for {case.label}."))
            return
        if problem is None:
            continue
        verdict = Verdict(False, f"{problem}, for {case.label}.")
        _write_verdict(job_dir, verdict)
        for number, name in enumerate(job["mistakes"]):
            if _behaves_like(getattr(load_module_file(job_dir / f"mistake_{number}.py"), job["kernel"]), ours, index):
                _write_verdict(job_dir, Verdict(False, verdict.message, name))
                return
        return
    _write_verdict(job_dir, Verdict(True, f"passed ({len(FLASH_CASES)} cases under the interpreter)"))


def _write_verdict(job_dir: Path, verdict: Verdict) -> None:
    partial = job_dir / "verdict.partial"
    partial.write_text(json.dumps(asdict(verdict)))
    partial.replace(job_dir / "verdict.json")  # atomic: the parent never reads half a verdict


if __name__ == "__main__":
    _numerics_child(Path(sys.argv[1]))
