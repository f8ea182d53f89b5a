"""Compile a Triton kernel for NVIDIA GPUs on a machine without one, in a subprocess.

One Python process cannot both interpret and compile Triton kernels (``@triton.jit`` picks one
when it decorates, from ``TRITON_INTERPRET``), and lesson 11b's process interprets. So the kernel
travels as a module's source (:func:`kernel_module_source`) to a child process that runs this file
alone (``python -P triton_compile.py JOB_DIR``: without the package on ``sys.path``, so it starts
without PyTorch) and calls ``triton.compile`` for each GPU target.

The compile child types each kernel parameter from its annotation (``tl.constexpr``, ``tl.int32``,
``tl.float32``, ...) or, without one, from its name (:func:`parameter_type`): ``*_ptr`` is a
pointer to the config's dtype, ``stride_*`` an ``i32`` (``stride_<tensor>d``, the feature axis,
is 1 as for contiguous tensors), ``n_*`` an ``i32``, a name with ``scale`` in it an ``fp32``.
Constexpr parameters take their values from the config by name (``D_HEAD``, ``BLOCK_M``,
``BLOCK_N``, ``CAUSAL``).

This module imports only the standard library at the top; ``attention_course.triton_flash``
(``compile_for_gpu``) and the grading sandbox (``attention_course.grading.triton_sandbox``) use it.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import Any

HEADER = ("import math", "import triton", "import triton.language as tl")
# Most shared memory one program (thread block) may use, by compute capability
# (CUDA C++ Programming Guide, "Technical Specifications per Compute Capability").
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Config keys that set the kernel's constexpr parameters, by parameter name.
CONSTEXPR_CONFIG = {"D_HEAD": "head_dim", "BLOCK_M": "block_m", "BLOCK_N": "block_n", "CAUSAL": "causal"}


@dataclass(frozen=True)
class GpuBuild:
    """One kernel compiled for one GPU: the shared memory each program (thread block) needs."""

    arch: int
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    shared_bytes: int
    shared_limit_bytes: int | None
    seconds: float

    @property
    def fits(self) -> bool:
        return self.shared_limit_bytes is None or self.shared_bytes <= self.shared_limit_bytes


class GpuCompileError(RuntimeError):
    """Triton's GPU compiler rejected a kernel; ``reason`` is its last line, ``line`` the code it points at."""

    def __init__(self, text: str, arch: int) -> None:
        super().__init__(text)
        self.arch = arch
        lines = [line for line in text.strip().splitlines() if line.strip()]
        self.reason = lines[-1].strip() if lines else "unknown error"
        caret = next((i for i, line in enumerate(lines) if set(line.strip()) == {"^"}), None)
        self.line = lines[caret - 1].strip() if caret else ""

    def summary(self) -> str:
        where = f" at `{self.line}`" if self.line else ""
        return f"the GPU compiler (sm_{self.arch}) rejects the kernel{where}: {self.reason}"


# ---------------------------------------------------------------------------------------------
# Parent side: turn a kernel object into a module's source; start and read the subprocess.
# ---------------------------------------------------------------------------------------------


def is_jitted(obj: Any) -> bool:
    """Whether ``obj`` is a ``@triton.jit`` function (compiled, or run by the interpreter)."""
    return type(obj).__name__ in ("JITFunction", "InterpretedFunction") and isinstance(
        getattr(obj, "fn", None), FunctionType
    )


def _function_source(fn: FunctionType, jitted: bool) -> str:
    source = textwrap.dedent(inspect.getsource(fn))
    tree = ast.parse(source)
    start = tree.body[0].lineno  # the `def` line, after any decorators
    body = "\n".join(source.splitlines()[start - 1 :])
    return ("@triton.jit\n" if jitted else "") + body + "\n"


def _global_names(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _global_names(const)
    return names


def kernel_module_source(kernel: Any) -> str:
    """A self-contained module defining ``kernel``: imports, helpers it calls, constants it reads.

    Args:
        kernel: a ``@triton.jit`` function (JITFunction or InterpretedFunction) or a plain function.

    Returns:
        Python source; the kernel keeps its name and gets a ``@triton.jit`` decorator if it had one.

    Raises:
        TypeError: ``kernel`` is not a function; OSError: its source cannot be read.
    """
    fn = kernel.fn if is_jitted(kernel) else kernel
    if not isinstance(fn, FunctionType):
        raise TypeError(f"kernel must be a function decorated with @triton.jit, got {type(kernel).__name__}")
    imports: list[str] = list(HEADER)
    definitions: list[str] = []
    seen: set[str] = set()

    def add(name: str, obj: Any) -> None:
        if name in seen:
            return
        seen.add(name)
        if isinstance(obj, ModuleType):
            line = f"import {obj.__name__} as {name}" if name != obj.__name__ else f"import {name}"
            if line not in imports:
                imports.append(line)
            return
        inner = obj.fn if is_jitted(obj) else obj
        if isinstance(inner, FunctionType):
            for dependency in sorted(_global_names(inner.__code__)):
                if dependency in inner.__globals__:
                    add(dependency, inner.__globals__[dependency])
            definitions.append(_function_source(inner, is_jitted(obj)))
        elif type(obj).__name__ == "constexpr":
            definitions.append(f"{name} = tl.constexpr({obj.value!r})\n")
        elif isinstance(obj, int | float | bool | str):
            definitions.append(f"{name} = {obj!r}\n")

    add(fn.__name__, kernel)
    return "\n".join(imports) + "\n\n\n" + "\n\n".join(definitions)


def load_module_file(path: Path) -> ModuleType:
    """Import the Python file ``path`` as a module named after it (not added to ``sys.modules``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child_env(interpret: bool) -> dict[str, str]:
    """This process's environment for a Triton child: the package importable, the interpreter on or off."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # Triton 3.9's default, set to silence its warning
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return env


def run_child(command: Sequence[str], job_dir: Path, timeout: float, *, interpret: bool) -> tuple[int | None, str]:
    """Run ``python COMMAND... JOB_DIR`` in its own session; return (exit code or None on time-out, stderr tail).

    On time-out the whole process group is killed: the child and anything it started (``ptxas``).
    """
    process = subprocess.Popen(
        [sys.executable, *command, str(job_dir)],
        env=child_env(interpret),
        cwd=job_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None, ""
    return process.returncode, stderr.decode(errors="replace")[-2000:]


def describe_exit(code: int) -> str:
    """``signal SIGSEGV`` for a negative exit code, ``exit code N`` otherwise."""
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def compile_in_subprocess(
    source: str, kernel_name: str, configs: Sequence[Mapping[str, Any]], *, timeout: float = 300.0
) -> list[GpuBuild]:
    """Compile ``kernel_name`` from ``source`` for each config.

    Args:
        source: a module (see :func:`kernel_module_source`).
        kernel_name: the kernel's name in it.
        configs: dicts with ``arch`` (80, 90, ...), ``dtype`` (``"fp16"``, ``"bf16"``, ``"fp32"``:
            what the pointers point to), ``head_dim``, ``block_m``, ``block_n``, ``causal`` (the
            constexprs), ``num_warps`` and ``num_stages``; one build each.
        timeout: seconds for the whole subprocess.

    Returns:
        one ``GpuBuild`` per config.

    Raises:
        GpuCompileError: the compiler rejected the kernel, crashed, or ran out of time, or a
            parameter's type cannot be told from its annotation or name.
    """
    with tempfile.TemporaryDirectory(prefix="flash_compile_") as folder:
        job_dir = Path(folder)
        (job_dir / "kernel.py").write_text(source, encoding="utf-8")
        (job_dir / "job.json").write_text(json.dumps({"kernel": kernel_name, "configs": list(configs)}))
        code, stderr = run_child(["-P", __file__], job_dir, timeout, interpret=False)
        result_file = job_dir / "result.json"
        if code is None or not result_file.exists():
            arch = configs[0]["arch"] if configs else 0
            why = f"ran longer than {timeout:g} s" if code is None else f"died ({describe_exit(code)}): {stderr[-500:]}"
            raise GpuCompileError(f"the compiler subprocess {why}", arch)
        result = json.loads(result_file.read_text())
    if "error" in result:
        raise GpuCompileError(result["error"], result["arch"])
    return [GpuBuild(**build) for build in result["builds"]]


# ---------------------------------------------------------------------------------------------
# Child side: ``python -P attention_course/triton_compile.py JOB_DIR``.
# ---------------------------------------------------------------------------------------------


def parameter_type(name: str, annotation: str, config: Mapping[str, Any]) -> tuple[str, Any]:
    """The compile signature's entry for one kernel parameter, and its constant value if it has one.

    Args:
        name: the parameter's name.
        annotation: Triton's normalised annotation (``"constexpr"``, ``"i32"``, ``"*fp16"``, ``""``).
        config: one compile config (see :func:`compile_in_subprocess`).

    Returns:
        ``(type, value)``: ``("constexpr", value)`` for a constant, else ``(type, None)``, e.g.
        ``("*fp16", None)``, ``("i32", None)``.

    Raises:
        ValueError: neither the annotation nor the name says what the parameter is.
    """
    if "constexpr" in annotation:
        if name not in CONSTEXPR_CONFIG:
            raise ValueError(
                f"constexpr parameter {name} has no value to compile with: "
                f"the compile step knows {', '.join(CONSTEXPR_CONFIG)}"
            )
        return "constexpr", config[CONSTEXPR_CONFIG[name]]
    if annotation:  # tl.int32, tl.float32, a pointer type, ...
        return annotation, None
    if name.endswith("_ptr"):
        return "*" + config["dtype"], None
    if name.startswith("stride_"):
        # stride_qd, stride_kd, ...: the feature axis, 1 for contiguous tensors (as Triton specialises at launch)
        return ("constexpr", 1) if name.endswith("d") and len(name) == len("stride_") + 2 else ("i32", None)
    if name.startswith("n_"):
        return "i32", None
    if "scale" in name:
        return "fp32", None
    raise ValueError(
        f"cannot tell the type of kernel parameter {name}: name pointers *_ptr, strides stride_*, "
        "sizes n_*, or annotate it (e.g. `x: tl.float32`)"
    )


def kernel_signature(
    params: Sequence[tuple[str, str]], config: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, Any], dict[tuple[int, ...], list[list[Any]]]]:
    """``triton.compile``'s signature, constexprs and attributes for ``(name, annotation)`` parameters.

    Pointers and the strides that are not constant 1 are marked divisible by 16, as on a launch
    with contiguous tensors whose sizes are multiples of 16.
    """
    signature: dict[str, str] = {}
    constants: dict[str, Any] = {}
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    for index, (name, annotation) in enumerate(params):
        kind, value = parameter_type(name, annotation, config)
        signature[name] = kind
        if kind == "constexpr":
            constants[name] = value
        elif kind.startswith("*") or name.startswith("stride_"):
            attrs[(index,)] = [["tt.divisibility", 16]]
    return signature, constants, attrs


def _compile_child(job_dir: Path) -> None:
    import triton
    from triton.backends.compiler import GPUTarget

    job = json.loads((job_dir / "job.json").read_text())
    kernel = getattr(load_module_file(job_dir / "kernel.py"), job["kernel"])
    params = [(param.name, param.annotation) for param in kernel.params]
    builds = []
    for config in job["configs"]:
        try:
            signature, constants, attrs = kernel_signature(params, config)
        except ValueError as error:
            (job_dir / "result.json").write_text(json.dumps({"error": str(error), "arch": config["arch"]}))
            return
        start = time.perf_counter()
        try:
            compiled = triton.compile(
                triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs),
                target=GPUTarget("cuda", config["arch"], 32),
                options={"num_warps": config["num_warps"], "num_stages": config["num_stages"]},
            )
        except Exception as error:
            (job_dir / "result.json").write_text(json.dumps({"error": str(error), "arch": config["arch"]}))
            return
        builds.append(
            {
                "arch": config["arch"],
                "block_m": config["block_m"],
                "block_n": config["block_n"],
                "num_warps": config["num_warps"],
                "num_stages": config["num_stages"],
                "shared_bytes": int(compiled.metadata.shared),
                "shared_limit_bytes": SHARED_MEMORY_LIMIT.get(config["arch"]),
                "seconds": time.perf_counter() - start,
            }
        )
    (job_dir / "result.json").write_text(json.dumps({"builds": builds}))


if __name__ == "__main__":
    _compile_child(Path(sys.argv[1]))
