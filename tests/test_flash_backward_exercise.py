"""Lesson 11's backward exercise: its reference is autograd through SDPA, other correct spellings pass,
and its allocation case separates tile-by-tile code from code that builds the (L, S) matrix."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attention_course.grading import Status, get_exercise, run_check
from attention_course.measure import largest_allocation

EXERCISE = get_exercise("tiled_attention_backward")


def _sdpa_gradients(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    return torch.autograd.grad(F.scaled_dot_product_attention(*leaves, is_causal=causal), leaves, grad_out)


@pytest.mark.parametrize("index", range(len(EXERCISE.cases())))
def test_reference_equals_autograd_through_sdpa(index: int) -> None:
    # float32: both sum the same terms in a different order (a few ulp per term, a few hundred terms).
    case = EXERCISE.cases()[index]
    for ours, theirs in zip(
        EXERCISE.reference(*case.args, **case.kwargs), _sdpa_gradients(*case.args, **case.kwargs), strict=True
    ):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def _key_tiles_outer(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
    """FlashAttention-2's own order: key tiles outside, dK and dV accumulated in locals; exp2 and einsum."""
    scale = 1 / math.sqrt(q.shape[-1])
    log2e = 1 / math.log(2)
    delta = torch.einsum("...ld,...ld->...l", grad_out, out)
    dq = torch.zeros_like(q)
    dk_tiles, dv_tiles = [], []
    n_queries = q.shape[-2]
    for j in range(0, k.shape[-2], block_k):
        k_tile, v_tile = k[..., j : j + block_k, :], v[..., j : j + block_k, :]
        dk_tile, dv_tile = torch.zeros_like(k_tile), torch.zeros_like(v_tile)
        first = (j // block_q) * block_q if causal else 0  # query tiles before this one see none of these keys
        for i in range(first, n_queries, block_q):
            q_tile = q[..., i : i + block_q, :]
            s = torch.einsum("...qd,...kd->...qk", q_tile, k_tile) * (scale * log2e)
            if causal:
                future = torch.arange(j, j + k_tile.shape[-2])[None, :] > torch.arange(i, i + q_tile.shape[-2])[:, None]
                s = torch.where(future, float("-inf"), s)
            p = torch.exp2(s - lse[..., i : i + block_q].unsqueeze(-1) * log2e)
            do_tile = grad_out[..., i : i + block_q, :]
            dv_tile = dv_tile + torch.einsum("...qk,...qd->...kd", p, do_tile)
            ds = p * (torch.einsum("...qd,...kd->...qk", do_tile, v_tile) - delta[..., i : i + block_q, None])
            dq[..., i : i + block_q, :] += scale * torch.einsum("...qk,...kd->...qd", ds, k_tile)
            dk_tile = dk_tile + scale * torch.einsum("...qk,...qd->...kd", ds, q_tile)
        dk_tiles.append(dk_tile)
        dv_tiles.append(dv_tile)
    return dq, torch.cat(dk_tiles, dim=-2), torch.cat(dv_tiles, dim=-2)


def _prescaled_lists(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
    """Query tiles outside, Q pre-scaled once, every query tile's dQ collected in a list; dK, dV by index_add."""
    q_scaled = q / math.sqrt(q.shape[-1])
    delta = (grad_out * out).sum(-1)
    dk, dv = k.new_zeros(k.shape), v.new_zeros(v.shape)
    dq_tiles = []
    for i in range(0, q.shape[-2], block_q):
        stop = min(i + block_q, q.shape[-2])
        dq_tile = q.new_zeros(*q.shape[:-2], stop - i, q.shape[-1])
        last_key = stop - 1 if causal else k.shape[-2] - 1
        for j in range(0, min(last_key + 1, k.shape[-2]), block_k):
            cols = torch.arange(j, min(j + block_k, k.shape[-2]))
            s = q_scaled[..., i:stop, :] @ k[..., cols, :].mT
            if causal and cols[-1] > i:
                s = s.masked_fill(cols[None, :] > torch.arange(i, stop)[:, None], -math.inf)
            p = (s - lse[..., i:stop, None]).exp()
            dv.index_add_(-2, cols, p.mT @ grad_out[..., i:stop, :])
            ds = p * (grad_out[..., i:stop, :] @ v[..., cols, :].mT - delta[..., i:stop, None])
            dq_tile += ds @ k[..., cols, :] / math.sqrt(q.shape[-1])
            dk.index_add_(-2, cols, ds.mT @ q_scaled[..., i:stop, :])
        dq_tiles.append(dq_tile)
    return torch.cat(dq_tiles, dim=-2), dk, dv


@pytest.mark.parametrize("variant", [_key_tiles_outer, _prescaled_lists], ids=lambda f: f.__name__)
def test_correct_variants_pass(variant) -> None:
    result = run_check(EXERCISE, variant)
    assert result.status is Status.PASSED, result.message


def test_allocation_case_separates_tiles_from_the_full_matrix() -> None:
    # The contract the grader enforces (Case.max_alloc_bytes), measured here directly: the reference and
    # the variants stay under it; autograd through the dense formula (an (L, S) matrix) does not.
    case = next(c for c in EXERCISE.cases() if c.max_alloc_bytes is not None)
    for fn in (EXERCISE.reference, _key_tiles_outer, _prescaled_lists):
        _, largest = largest_allocation(fn, *case.args, **case.kwargs)
        assert largest <= case.max_alloc_bytes, (fn.__name__, largest)

    def dense(q, k, v, out, lse, grad_out, causal=False, block_q=64, block_k=64):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        scores = leaves[0] @ leaves[1].mT / math.sqrt(q.shape[-1])
        allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        weights = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1)
        return torch.autograd.grad(weights @ leaves[2], leaves, grad_out)

    _, largest = largest_allocation(dense, *case.args, **case.kwargs)
    assert largest > case.max_alloc_bytes
