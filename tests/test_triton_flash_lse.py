"""FlashAttention-2's forward kernel (lesson 11b): output and log-sum-exp under Triton's interpreter."""

from __future__ import annotations

import math

import pytest
import torch

from attention_course import triton_flash  # first: it picks the interpreter before triton is imported

if triton_flash.triton is None:
    pytest.skip(triton_flash.INSTALL_HINT, allow_module_level=True)

from attention_course.triton_flash import triton_attention_with_lse  # noqa: E402


def _scores(q: torch.Tensor, k: torch.Tensor, causal: bool) -> torch.Tensor:
    scores = q.float() @ k.float().mT / math.sqrt(q.shape[-1])
    if causal:
        allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores


# (L, S, BLOCK_M, BLOCK_N): blocks that divide N and not, L != S both ways, BLOCK_N above and below
# BLOCK_M (so the unmasked first stage ends mid-block or on a block edge), a first stage longer than
# one block (N = 100 with 16-wide key blocks).
SHAPES = [(100, 100, 32, 16), (21, 47, 16, 16), (47, 21, 16, 32), (64, 64, 16, 32), (40, 40, 32, 16), (16, 16, 16, 16)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n_queries", "n_keys", "block_m", "block_n"), SHAPES)
def test_kernel_lse_equals_torch_logsumexp(
    n_queries: int, n_keys: int, block_m: int, block_n: int, causal: bool
) -> None:
    # float32 under the interpreter: the same terms as torch in another order; differences ~5e-7,
    # so 1e-5 is tight (a missing ln 2 or a dropped block moves lse by > 1e-2).
    generator = torch.Generator().manual_seed(n_queries * 1000 + n_keys)
    q = torch.randn(2, 3, n_queries, 32, generator=generator) * 2
    k, v = torch.randn(2, 3, n_keys, 32, generator=generator), torch.randn(2, 3, n_keys, 32, generator=generator)
    out, lse = triton_attention_with_lse(q, k, v, causal=causal, block_m=block_m, block_n=block_n)
    scores = _scores(q, k, causal)
    torch.testing.assert_close(lse, torch.logsumexp(scores, dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, torch.softmax(scores, dim=-1) @ v, atol=1e-5, rtol=1e-4)


def test_float16_inputs_give_a_float32_lse() -> None:
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 50, 16, generator=generator).half() for _ in range(3))
    out, lse = triton_attention_with_lse(q, k, v, causal=True, block_m=16, block_n=16)
    assert out.dtype == torch.float16 and lse.dtype == torch.float32
    # float16 scores (11-bit mantissas) on values of order 1: 5e-3 is ten rounding steps.
    torch.testing.assert_close(lse, torch.logsumexp(_scores(q, k, True), dim=-1), atol=5e-3, rtol=1e-3)


def test_kernel_compiles_for_gpus() -> None:
    # The interpreter accepts code the compiler refuses (e.g. a jitted helper returning a tuple used
    # wrongly); build for sm_80 and sm_90 with Triton's real compiler, in a process that does not interpret.
    script = (
        "import triton\n"
        "from triton.backends.compiler import GPUTarget\n"
        "from attention_course.triton_flash import flash_forward_kernel as kernel\n"
        "names = kernel.arg_names\n"
        "for arch in (80, 90):\n"
        "    sig = {n: '*fp16' for n in names[:4]} | {names[4]: '*fp32'}\n"
        "    sig |= {n: 'i32' for n in names[5:21]} | {names[21]: 'fp32'}\n"
        "    consts = {'D_HEAD': 64, 'BLOCK_M': 128, 'BLOCK_N': 64, 'CAUSAL': arch == 80}\n"
        "    sig |= {n: 'constexpr' for n in consts}\n"
        "    triton.compile(triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=consts),\n"
        "                   target=GPUTarget('cuda', arch, 32), options={'num_warps': 4, 'num_stages': 3})\n"
        "print('built')\n"
    )
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = os.environ | {
        "TRITON_INTERPRET": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "built" in result.stdout, result.stderr[-2000:]
