"""The Triton flash kernel (lesson 11b) against PyTorch, its GPU build, and the grading sandbox.

Kernels run on CPU tensors through Triton's interpreter (``attention_course.triton_flash`` turns it
on when there is no GPU); GPU builds use Triton's real compiler for sm_80 and sm_90, which needs
no GPU.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import triton_flash  # first: it picks the interpreter before triton is imported

if triton_flash.triton is None:
    pytest.skip(triton_flash.INSTALL_HINT, allow_module_level=True)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from attention_course import scaled_dot_product_attention  # noqa: E402
from attention_course.grading import Status, get_exercise  # noqa: E402
from attention_course.grading.triton_sandbox import (  # noqa: E402
    check_flash_kernel,
    kernel_module_source,
    load_kernel,
    unmasked_memory_ops,
)
from attention_course.triton_compile import kernel_signature, parameter_type  # noqa: E402
from attention_course.triton_flash import (  # noqa: E402
    GpuCompileError,
    compile_for_gpu,
    flash_attention_kernel,
    launch_flash_kernel,
    triton_attention,
)

# float32: the kernel sums the same products as SDPA in another order; with N <= 64 the rounding
# differences stay below 1e-6, so 1e-5 is tight and safe. float16: q, k, v, P and the output are
# each rounded to 11-bit mantissas (relative 4.9e-4) on outputs of size about 1: 5e-3 is ten steps.
# Relative tolerances: 1e-4 (float32) still catches a 1e-3 relative bias; 1e-2 is float16's noise.
TOLERANCE = {torch.float32: {"atol": 1e-5, "rtol": 1e-4}, torch.float16: {"atol": 5e-3, "rtol": 1e-2}}
EXERCISE = get_exercise("flash_attention_kernel")


def _qkv(shape_q: tuple[int, ...], n_keys: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    shape_kv = (*shape_q[:-2], n_keys, shape_q[-1])
    return tuple(torch.randn(shape, generator=generator).to(dtype) for shape in (shape_q, shape_kv, shape_kv))


def _oracle(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)


def _mutant(old: str, new: str) -> str:
    source = kernel_module_source(flash_attention_kernel)
    assert source.count(old) == 1, old
    return source.replace(old, new)


SHAPES = {"at-block": (16, 16), "below-block": (9, 9), "across-blocks": (40, 40), "L>S": (33, 20), "L<S": (21, 47)}
CASES = [(name, causal, torch.float32) for name in SHAPES for causal in (False, True)]
CASES += [(name, causal, torch.float16) for name in ("below-block", "across-blocks") for causal in (False, True)]


@pytest.mark.parametrize(("shape", "causal", "dtype"), CASES, ids=lambda x: str(x).replace("torch.", ""))
def test_matches_pytorch_sdpa(shape: str, causal: bool, dtype: torch.dtype) -> None:
    n_queries, n_keys = SHAPES[shape]
    q, k, v = _qkv((2, 2, n_queries, 16), n_keys, dtype)  # (B, H, L, d): 4 programs per query block
    out = triton_attention(q, k, v, causal=causal, block_m=16, block_n=16)
    assert out.shape == q.shape and out.dtype == dtype
    torch.testing.assert_close(out.float(), _oracle(q, k, v, causal), **TOLERANCE[dtype])


def test_same_call_as_the_course_attention() -> None:
    q, k, v = _qkv((2, 24, 32), 24, torch.float32)
    for causal, scale in ((False, None), (True, 0.3)):
        ours = scaled_dot_product_attention(q, k, v, causal=causal, scale=scale)
        torch.testing.assert_close(
            triton_attention(q, k, v, causal=causal, scale=scale, block_m=16, block_n=32), ours, atol=1e-5, rtol=1e-4
        )


def test_strided_views_are_read_through_their_strides() -> None:
    """(heads, N, d) views of (N, heads, d) storage: the head stride is smaller than the position stride."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(24, 2, 16, generator=generator).transpose(0, 1) for _ in range(3))
    out = torch.full((2, 24, 16), float("nan"))
    launch_flash_kernel(flash_attention_kernel, q, k, v, out, causal=True, scale=0.25, block_m=16, block_n=16)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5, rtol=1e-4)


@settings(max_examples=8, deadline=None)
@given(
    heads=st.integers(1, 3),
    n_queries=st.integers(1, 50),
    n_keys=st.integers(1, 50),
    causal=st.booleans(),
    blocks=st.sampled_from([(16, 16), (32, 16), (16, 32)]),
    seed=st.integers(0, 2**16),
)
def test_any_shape_matches_pytorch(
    heads: int, n_queries: int, n_keys: int, causal: bool, blocks: tuple[int, int], seed: int
) -> None:
    q, k, v = _qkv((heads, n_queries, 16), n_keys, torch.float32, seed)
    out = triton_attention(q, k, v, causal=causal, block_m=blocks[0], block_n=blocks[1])
    torch.testing.assert_close(out, _oracle(q, k, v, causal), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (lambda q, k, v: dict(mask=torch.ones(8, 8, dtype=torch.bool)), ValueError, "mask of shape (8, 8)"),
        (lambda q, k, v: dict(return_weights=True), ValueError, "return_weights"),
        (lambda q, k, v: dict(q=q.bfloat16(), k=k.bfloat16(), v=v.bfloat16()), TypeError, "got dtype torch.bfloat16"),
        (lambda q, k, v: dict(q=q.double(), k=k.double(), v=v.double()), TypeError, "got dtype torch.float64"),
        (lambda q, k, v: dict(k=k.half()), TypeError, "share a dtype"),
        (lambda q, k, v: dict(q=q[..., :12], k=k[..., :12], v=v[..., :12]), ValueError, "(2, 8, 12)"),
        (lambda q, k, v: dict(v=v[..., :8]), ValueError, "d_k == d_v"),
        (lambda q, k, v: dict(k=k[:1], v=v[:1]), ValueError, "leading"),
        (lambda q, k, v: dict(q=q[:, :0]), ValueError, "non-empty"),
        (lambda q, k, v: dict(q=(q * 10).long()), TypeError, "floating-point"),
        (lambda q, k, v: dict(block_m=24), ValueError, "block_m must be a power of two"),
    ],
)
def test_bad_input_is_named(change, error: type[Exception], words: str) -> None:
    q, k, v = _qkv((2, 8, 16), 8, torch.float32)
    arguments = dict(q=q, k=k, v=v) | change(q, k, v)
    with pytest.raises(error, match=re.escape(words)):
        triton_attention(**arguments)


def test_compiles_for_sm80_and_sm90_and_reports_shared_memory() -> None:
    builds = compile_for_gpu(archs=(80, 90), block_sizes=((64, 32), (64, 64)), num_stages=2)
    assert [(b.arch, b.block_n) for b in builds] == [(80, 32), (80, 64), (90, 32), (90, 64)]
    for build in builds:
        kv_tile = 2 * build.block_n * 64 * 2  # one K and one V tile of (BLOCK_N, d=64) in float16
        assert kv_tile <= build.shared_bytes and build.fits, build
    for small, large in zip(builds[::2], builds[1::2], strict=True):
        assert large.shared_bytes > small.shared_bytes  # bigger key blocks need more staging memory


def test_gpu_compiler_rejects_a_break_the_interpreter_accepts() -> None:
    with_break = {mistake.name: mistake.impl for mistake in EXERCISE.mistakes}["break_in_loop"]
    assert check_flash_kernel(kernel_module_source(with_break), "flash_attention_kernel").passed
    with pytest.raises(GpuCompileError) as caught:
        compile_for_gpu(with_break, archs=(80,))
    assert caught.value.reason == "unsupported AST node type: Break" and caught.value.arch == 80


def test_gpu_compiler_rejects_a_plain_python_helper() -> None:
    source = "def _same(x):\n    return x\n\n\n" + _mutant(
        "        row_max = new_max\n", "        row_max = _same(new_max)\n"
    )
    kernel = load_kernel(source, "flash_attention_kernel", "kernel calling a plain helper")
    assert "def _same(x):" in kernel_module_source(kernel)  # the helper travels with the kernel
    with pytest.raises(GpuCompileError, match="Unsupported function referenced"):
        compile_for_gpu(kernel, archs=(90,))
    with pytest.raises(TypeError, match="@triton.jit"):
        compile_for_gpu(kernel.fn)


def test_sandbox_passes_the_reference_and_flags_stray_stores() -> None:
    assert check_flash_kernel(kernel_module_source(flash_attention_kernel), "flash_attention_kernel").passed
    unmasked = _mutant(", mask=rows[:, None] < n_queries)", ")")
    verdict = check_flash_kernel(unmasked, "flash_attention_kernel")
    assert not verdict.passed and "wrote outside the output" in verdict.message
    assert "(exactly one 16×16 block)" not in verdict.message  # N=16 fills the block: nothing stray yet
    assert unmasked_memory_ops(unmasked) == [
        "tl.store(out_ptr + head * stride_oh + rows[:, None] * stride_on + dims[None, :] * stride_od,"
    ]


def test_right_numbers_from_an_unmasked_load_still_fail() -> None:
    """Q rows past n_queries are read (NaN guard memory) but never stored: the numbers pass, the mask check does not."""
    source = _mutant(",\n                mask=rows[:, None] < n_queries, other=0.0)", ")")
    status, message = EXERCISE.custom_check(load_kernel(source, "flash_attention_kernel", "q loaded without a mask"))
    assert status is Status.FAILED and message.startswith("right numbers, but `q = tl.load(q_ptr + head"), message


def test_a_crash_or_a_hang_fails_the_check_not_the_grader() -> None:
    entry = "    block_m = tl.program_id(0)  # which block of queries\n"
    crash = "import faulthandler\n" + _mutant(entry, "    faulthandler._sigsegv()\n" + entry)
    verdict = check_flash_kernel(crash, "flash_attention_kernel")
    assert not verdict.passed and "crashed the Triton interpreter (signal SIGSEGV) for 1 head" in verdict.message
    hang = _mutant(entry, "    while True:\n        pass\n" + entry)
    verdict = check_flash_kernel(hang, "flash_attention_kernel", timeout=8)
    assert not verdict.passed and "did not finish within 8 s" in verdict.message


def test_the_interpreter_child_has_the_grading_workers_guard(tmp_path) -> None:
    # The kernel body runs as Python under the interpreter: the child refuses what the worker refuses.
    entry = "    block_m = tl.program_id(0)  # which block of queries\n"
    outside = tmp_path / "written_by_a_kernel.txt"
    attempts = {
        "signal another process": "import os\nimport signal\n"
        + _mutant(entry, "    os.kill(os.getpid(), signal.SIGTERM)\n" + entry),
        f"write {outside}": _mutant(entry, f"    open({str(outside)!r}, 'w').write('x')\n" + entry),
        "start another program": "import subprocess\n" + _mutant(entry, "    subprocess.run(['true'])\n" + entry),
    }
    for refused, source in attempts.items():
        verdict = check_flash_kernel(source, "flash_attention_kernel")
        assert not verdict.passed and f"does not let notebook code {refused}" in verdict.message, verdict
    assert not outside.exists()


_SCALE: tl.constexpr = tl.constexpr(2)


@triton.jit
def _double(x):
    return x * _SCALE


@triton.jit
def _uses_a_helper(out_ptr):
    tl.store(out_ptr, _double(1.0))


def test_module_source_carries_helpers_and_constants() -> None:
    source = kernel_module_source(_uses_a_helper)
    namespace: dict = {}
    exec(compile(source, "<module source>", "exec"), namespace)  # noqa: S102 - rebuilt from this file
    assert namespace["_SCALE"].value == 2 and "@triton.jit\ndef _double(x):" in source


@triton.jit
def flash_stub(
    q_ptr,
    k_ptr,
    v_ptr,
    out_ptr,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_oh,
    stride_on,
    stride_od,
    n_queries,
    n_keys,
    qk_scale_log2e,
    D_HEAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    raise NotImplementedError("your code here")


@triton.jit
def renamed_parameters(
    q,
    k,
    v,
    o,
    a,
    b,
    c,
    d,
    e,
    f,
    g,
    h,
    i,
    j,
    m,
    n,
    n_q,
    n_k,
    scale,
    D_HEAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    pass


@pytest.mark.parametrize(
    ("kernel", "status", "words"),
    [
        (flash_stub, Status.NOT_DONE, "not done yet"),
        (renamed_parameters, Status.FAILED, "keep the kernel's signature"),
        (flash_attention_kernel.fn, Status.FAILED, "must be decorated with @triton.jit"),
        (lambda: math.pi, Status.FAILED, "must be decorated with @triton.jit"),
    ],
)
def test_check_answers_before_running_anything(kernel, status: Status, words: str) -> None:
    assert EXERCISE.custom_check is not None
    found, message = EXERCISE.custom_check(kernel)
    assert found is status and words in message


WITHOUT_TRITON = """
import sys
sys.modules["triton"] = None  # as if it were not installed
import torch
from attention_course.grading import Status, get_exercise
from attention_course.triton_flash import triton_attention
exercise = get_exercise("flash_attention_kernel")
assert exercise.mistakes == () and exercise.custom_check(print)[0] is Status.FAILED
try:
    triton_attention(torch.ones(1, 16, 16), torch.ones(1, 16, 16), torch.ones(1, 16, 16))
except ModuleNotFoundError as error:
    print(error)
"""


def test_the_package_imports_without_triton_and_says_how_to_install_it() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_TRITON], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install 'attention_course[triton]'" in done.stdout


def _parameters(kernel) -> list[tuple[str, str]]:
    """(name, annotation) of each parameter, as the compile child reads them from a compiled JITFunction."""
    from triton.runtime.jit import JITFunction

    return [
        (param.name, param.annotation) for param in JITFunction(kernel.fn if hasattr(kernel, "fn") else kernel).params
    ]


def test_compile_step_types_parameters_by_name_and_annotation_not_position() -> None:
    config = {"dtype": "bf16", "head_dim": 32, "block_m": 64, "block_n": 16, "causal": False}
    params = _parameters(flash_attention_kernel)
    signature, constants, attrs = kernel_signature(params, config)
    assert signature["q_ptr"] == "*bf16" and signature["stride_kn"] == "i32" and signature["n_keys"] == "i32"
    assert signature["qk_scale_log2e"] == "fp32"
    assert constants == {
        "stride_qd": 1,
        "stride_kd": 1,
        "stride_vd": 1,
        "stride_od": 1,
        "D_HEAD": 32,
        "BLOCK_M": 64,
        "BLOCK_N": 16,
        "CAUSAL": False,
    }
    assert sorted(attrs) == sorted(
        (i,)
        for i, (name, _) in enumerate(params)
        if name.endswith("_ptr") or name[-1] in "hn" and name.startswith("stride_")
    )
    reordered, _, _ = kernel_signature(params[::-1], config)
    assert reordered == signature  # the same type for each name, wherever it stands
    assert parameter_type("n_keys", "i64", config) == ("i64", None)  # an annotation wins over the name
    with pytest.raises(ValueError, match="cannot tell the type of kernel parameter alpha"):
        parameter_type("alpha", "", config)
    with pytest.raises(ValueError, match="constexpr parameter WIDTH"):
        parameter_type("WIDTH", "constexpr", config)


def test_a_kernel_with_its_parameters_in_another_order_compiles() -> None:
    source = _mutant("    q_ptr, k_ptr, v_ptr, out_ptr,\n", "    qk_scale_log2e, q_ptr, k_ptr, v_ptr, out_ptr,\n")
    source = source.replace("n_queries, n_keys, qk_scale_log2e,", "n_queries, n_keys,")
    kernel = load_kernel(source, "flash_attention_kernel", "kernel with the scale first")
    assert [name for name, _ in _parameters(kernel)][:2] == ["qk_scale_log2e", "q_ptr"]
    (build,) = compile_for_gpu(kernel, archs=(80,), block_sizes=((64, 32),), num_stages=2)
    assert build.arch == 80 and build.fits
