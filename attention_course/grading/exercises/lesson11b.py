"""Lesson 11b exercise: the flash attention forward pass as a Triton kernel.

The learner's kernel never runs in the grader's process. ``triton_sandbox`` runs it in a
subprocess under Triton's interpreter over ``FLASH_CASES`` (N at, below and across the block size,
L != S, causal on and off, several heads, q, k, v and out each with its own strides, scores far
below 0, float32 and float16) with guard memory around every tensor, then has Triton compile it for
sm_80 and sm_90. Each catalogued mistake is the solution kernel with one edit (``grading/edits.py``);
on the first failing case the sandbox runs them all and names the one that writes the same output.
A mask counts whether it is passed by keyword or by position (``tl.load(ptrs, mask, other)``).
"""

from __future__ import annotations

import inspect
from typing import Any

from ...triton_compile import HEADER
from ...triton_flash import INSTALL_HINT, flash_attention_kernel, triton
from ..edits import SPECS, Edit, MistakeSpec, edit, has_solutions, mutant_source
from ..registry import register
from ..spec import Exercise, Mistake, Status
from ..triton_sandbox import (
    FLASH_CASES,
    GpuCompileError,
    check_flash_kernel,
    compile_in_subprocess,
    is_jitted,
    kernel_module_source,
    load_kernel,
    unmasked_memory_ops,
)

NAME = "flash_attention_kernel"

LESSON = "11b_flash_triton"
K_LOAD = (
    "k_t = tl.load(k_ptr + head * stride_kh + cols[None, :] * stride_kn + dims[:, None] * stride_kd, "
    "mask=cols[None, :] < n_keys, other=0.0)"
)
V_LOAD = (
    "v = tl.load(v_ptr + head * stride_vh + cols[:, None] * stride_vn + dims[None, :] * stride_vd, "
    "mask=cols[:, None] < n_keys, other=0.0)"
)
BREAK_HINT = (
    "a Triton kernel cannot `break` out of a loop (the interpreter allows it, the GPU compiler does not): "
    "put the causal stop into the loop's bound, range(0, end, BLOCK_N) with end = min((block_m + 1) * "
    "BLOCK_M, n_keys)."
)

# Each mistake: (name, hint, edits of the solution kernel). The edits are anchored on the code's
# structure (see grading/edits.py), so reformatting the solution cannot break them.
_CATALOGUE: tuple[tuple[str, str, tuple[Edit, ...]], ...] = (
    (
        "causal_comparison_off_by_one",
        "the causal mask must let query i see key i itself: keep keys with cols <= rows, not cols < rows.",
        (
            edit(
                "allowed = allowed & (cols[None, :] <= rows[:, None])",
                "allowed = allowed & (cols[None, :] < rows[:, None])",
            ),
        ),
    ),
    (
        "causal_loop_stops_a_block_early",
        "the causal loop must include the diagonal block: run the keys up to (block_m + 1) * BLOCK_M, "
        "not block_m * BLOCK_M (the first block of queries would see no key at all).",
        (edit("end = tl.minimum((block_m + 1) * BLOCK_M, n_keys)", "end = tl.minimum(block_m * BLOCK_M, n_keys)"),),
    ),
    (
        "missing_key_masks",
        "keys at or past n_keys are not masked: load K and V with mask=cols < n_keys (other=0.0) and give "
        "those columns a score of -inf, or the last, ragged block reads past the end of k and v.",
        (
            edit(K_LOAD, K_LOAD.replace(", mask=cols[None, :] < n_keys, other=0.0", "")),
            edit(V_LOAD, V_LOAD.replace(", mask=cols[:, None] < n_keys, other=0.0", "")),
            edit("allowed = cols[None, :] < n_keys", "allowed = cols[None, :] >= 0"),
        ),
    ),
    (
        "accumulator_not_rescaled",
        "when the running max grows, rescale the accumulator as well as the sum: "
        "acc = acc * alpha[:, None] + tl.dot(p, v), with alpha = exp2(old max - new max).",
        (edit("acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)", "acc = acc + tl.dot(p.to(v.dtype), v)"),),
    ),
    (
        "sum_not_rescaled",
        "when the running max grows, rescale the running sum as well as the accumulator: "
        "row_sum = row_sum * alpha + tl.sum(p, axis=1).",
        (edit("row_sum = row_sum * alpha + tl.sum(p, axis=1)", "row_sum = row_sum + tl.sum(p, axis=1)"),),
    ),
    (
        "key_strides_swapped",
        "K is addressed with its strides swapped: the key position moves by stride_kn and the feature by "
        "stride_kd (K transposed: cols[None, :] * stride_kn + dims[:, None] * stride_kd).",
        (
            edit(
                "cols[None, :] * stride_kn + dims[:, None] * stride_kd",
                "cols[None, :] * stride_kd + dims[:, None] * stride_kn",
            ),
        ),
    ),
    (
        "query_strides_of_k",
        "each tensor has its own strides: address q with stride_qh, stride_qn, stride_qd (q, k, v and out may be "
        "laid out differently in memory).",
        (
            edit(
                "q_ptr + head * stride_qh + rows[:, None] * stride_qn + dims[None, :] * stride_qd",
                "q_ptr + head * stride_kh + rows[:, None] * stride_kn + dims[None, :] * stride_kd",
            ),
        ),
    ),
    (
        "feature_stride_assumed_one",
        "a tensor's features need not be adjacent in memory: multiply the feature index by its stride "
        "(dims * stride_vd), not assume 1.",
        (edit("dims[None, :] * stride_vd", "dims[None, :]"),),
    ),
    (
        "exp_instead_of_exp2",
        "qk_scale_log2e already holds scale * log2(e), so the scores are in base 2: use tl.exp2, not tl.exp.",
        (
            edit("alpha = tl.exp2(row_max - new_max)", "alpha = tl.exp(row_max - new_max)"),
            edit("p = tl.exp2(scores - new_max[:, None])", "p = tl.exp(scores - new_max[:, None])"),
        ),
    ),
    (
        "max_initialised_at_zero",
        "start the running maximum at -inf (tl.full([BLOCK_M], float('-inf'), tl.float32)), not 0: a row whose "
        "scores are all below 0 must still be normalised by its own maximum.",
        (edit("row_max = tl.full([BLOCK_M], float('-inf'), tl.float32)", "row_max = tl.zeros([BLOCK_M], tl.float32)"),),
    ),
    (
        "break_in_loop",
        BREAK_HINT,
        (
            edit("end = n_keys\nif CAUSAL:\n    end = tl.minimum((block_m + 1) * BLOCK_M, n_keys)", ""),
            edit(
                "for start in range(0, end, BLOCK_N):",
                "for start in range(0, n_keys, BLOCK_N):\n    if CAUSAL:\n        if start >= (block_m + 1) * BLOCK_M:\n"
                "            break",
            ),
        ),
    ),
)
# Compiler messages that name a mistake (the catalogued `break`, and two the lesson warns about).
_COMPILE_HINTS = (
    ("Break", BREAK_HINT),
    (
        "Unsupported function referenced",
        "a kernel may call only triton.language and other @triton.jit functions: decorate the helper with "
        "@triton.jit or write its code into the kernel.",
    ),
    (
        "Cannot access global variable",
        "a kernel may read a global only if it holds a tl.constexpr (NAME = tl.constexpr(16)), or pass the value in.",
    ),
)
# Small blocks keep each compile near a second; causal on sm_80 and not on sm_90 covers both branches.
_COMPILE_CONFIGS = tuple(
    {
        "arch": arch,
        "dtype": "fp16",
        "head_dim": 64,
        "block_m": 64,
        "block_n": 32,
        "causal": causal,
        "num_warps": 4,
        "num_stages": 2,
    }
    for arch, causal in ((80, True), (90, False))
)


def _mutant_source(name: str, edits: tuple[Edit, ...]) -> str:
    """The solution kernel with ``edits`` applied, as a module the sandbox can load."""
    spec = MistakeSpec(LESSON, NAME, name, _HINTS_BY_NAME[name], edits)
    SPECS.append(spec)
    return "\n".join(HEADER) + "\n\n\n" + mutant_source(spec) + "\n"


_HINTS_BY_NAME = {name: hint for name, hint, _ in _CATALOGUE}
_MUTANT_SOURCES = (
    {name: _mutant_source(name, edits) for name, _, edits in _CATALOGUE} if triton and has_solutions(LESSON) else {}
)
_HINTS = {name: hint for name, hint, _ in _CATALOGUE}


def _check_kernel(kernel: Any) -> tuple[Status, str]:
    """Grade a learner's kernel: numbers under the interpreter, masks on memory access, GPU compile."""
    if triton is None:
        return Status.FAILED, INSTALL_HINT
    if not is_jitted(kernel):
        return Status.FAILED, f"`{NAME}` must be decorated with @triton.jit"
    fn = kernel.fn
    if "NotImplementedError" in fn.__code__.co_names:
        return Status.NOT_DONE, f"not done yet: replace `raise NotImplementedError` in `{NAME}` with your code"
    expected = list(inspect.signature(flash_attention_kernel.fn).parameters)
    if list(inspect.signature(fn).parameters) != expected:
        return Status.FAILED, f"keep the kernel's signature: {NAME}({', '.join(expected)})"
    try:
        source = kernel_module_source(kernel)
    except OSError as error:
        return Status.FAILED, f"cannot read the kernel's source ({error}): define it in a notebook cell or a file"
    verdict = check_flash_kernel(source, kernel.__name__, _MUTANT_SOURCES)
    if not verdict.passed:
        hint = f"\n   Hint: {_HINTS[verdict.mistake]}" if verdict.mistake else ""
        return Status.FAILED, verdict.message + hint
    unmasked = unmasked_memory_ops(source)
    if unmasked:
        return Status.FAILED, (
            f"right numbers, but `{unmasked[0]}` has no mask=: when N is not a multiple of the "
            "block it touches memory past the tensor. The interpreter does not notice; a GPU "
            "reads garbage or faults. Add mask=... (and other=0.0 for loads)."
        )
    try:
        compile_in_subprocess(source, kernel.__name__, _COMPILE_CONFIGS)
    except GpuCompileError as error:
        hint = next((f"\n   Hint: {text}" for marker, text in _COMPILE_HINTS if marker in str(error)), "")
        return Status.FAILED, f"right numbers under the interpreter, but {error.summary()}{hint}"
    return Status.PASSED, (
        f"passed ({len(FLASH_CASES)} cases under the interpreter with guard memory untouched; "
        "compiles for sm_80 and sm_90)"
    )


register(
    Exercise(
        name=NAME,
        lesson=LESSON,
        reference=flash_attention_kernel,
        cases=list,  # the cases are triton_sandbox.FLASH_CASES, run by the custom check in a subprocess
        mistakes=tuple(
            Mistake(name, hint, load_kernel(_MUTANT_SOURCES[name], NAME, f"lesson 11b mistake {name}"))
            for name, hint, _ in _CATALOGUE
            if name in _MUTANT_SOURCES
        ),
        custom_check=_check_kernel,
    )
)
