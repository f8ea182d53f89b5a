"""Lesson 11 exercises: online softmax over a stream of blocks; tiled (flash) attention returning the log-sum-exp.

Both exercises exist to avoid the dense algorithm, so beyond the values:
``tiled_attention`` has a case whose ``max_alloc_bytes`` is far below the L x S score matrix, and
``online_softmax`` is also run under an operator spy that rejects a maximum or a softmax taken
over more scores than one block holds (the concatenate-then-softmax algorithm).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ...flash import online_softmax, tiled_attention
from ..casegen import generator, randn
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..runner import run_check
from ..spec import Case, Exercise, Status

LESSON = "11_flash_attention"


# ---------------------------------------------------------------------------------------------
# online_softmax(blocks)
# ---------------------------------------------------------------------------------------------


def _online_softmax_cases() -> list[Case]:
    g = generator(11)
    rising = [randn(g, 3, n) + 4 * b for b, n in enumerate((4, 3, 5))]
    return [
        # The maximum rises in the second block (3 -> 5), then the third block's max (0) is below it.
        Case(
            ([torch.tensor([1.0, 3.0]), torch.tensor([2.0, 5.0]), torch.tensor([0.0])],),
            label="blocks [1, 3], [2, 5], [0]",
        ),
        Case((rising,), label="3 rows in blocks of 4, 3 and 5 scores whose maximum rises block after block"),
        Case(
            ([randn(g, 2, 4, n, scale=10.0) for n in (1, 6, 2, 3)],),
            label="blocks of shape (2, 4, n) for n = 1, 6, 2, 3 with scores of size ~10",
        ),
        Case(
            ([torch.tensor([-1000.0, -1002.0]), torch.tensor([-1001.0, -999.0, -1003.0])],),
            label="very negative scores: blocks [-1000, -1002], [-1001, -999, -1003] (a running max that starts "
            "at 0 underflows)",
        ),
        # Row 0's scores are near +80, row 1's near -80: a maximum shared by both rows underflows row 1.
        Case(
            ([randn(g, 2, n) + torch.tensor([[80.0], [-80.0]]) for n in (3, 2, 4)],),
            label="2 rows in blocks of 3, 2 and 4: row 0's scores near +80, row 1's near -80",
        ),
        Case(([randn(g, 1, 1, 5, scale=3.0)],), label="a single block of shape (1, 1, 5)"),
        Case(
            ([randn(g, 1, 2, n, scale=5.0) for n in (2, 2, 2, 2, 2, 2)],),
            label="6 blocks of shape (1, 2, 2) with scores of size ~5",
        ),
        Case(
            ([randn(g, 3, n, dtype=torch.float64) for n in (2, 4)],), label="float64 blocks of shape (3, 2) and (3, 4)"
        ),
        Case(
            ([randn(g, 2, n) for n in (3, 2)],), check_grad=True, label="gradients: blocks of shape (2, 3) and (2, 2)"
        ),
    ]


INIT = "m = torch.full(blocks[0].shape[:-1] + (1,), float('-inf'))"
MAX = "m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))"
SUM = "l = l * torch.exp(m - m_new) + torch.exp(block - m_new).sum(dim=-1, keepdim=True)"
SOFTMAX = "return torch.cat([torch.exp(block - m) for block in blocks], dim=-1) / l"
DENSE_HINT = (
    "this is the softmax of all the blocks concatenated: the exercise is to see each block once, keeping "
    "only a running maximum m and a running sum l (rescaled by exp(m - m_new) when the maximum grows), "
    "never a maximum or softmax over all the scores at once."
)

_ONLINE_MISTAKES = catalogue(
    LESSON,
    "online_softmax",
    (
        "sum_not_rescaled",
        "when a block raises the running maximum from m to m_new, the sum so far was computed relative to "
        "the old maximum: multiply it by exp(m - m_new) before adding the new block's terms.",
        edit(SUM, "l = l + torch.exp(block - m_new).sum(dim=-1, keepdim=True)"),
    ),
    (
        "block_max_instead_of_running_max",
        "add the new block's terms as exp(x - m_new) with the running maximum m_new, not exp(x - block max): "
        "every term of the sum must be relative to the same maximum.",
        edit(
            SUM,
            "l = l * torch.exp(m - m_new) + torch.exp(block - block.amax(dim=-1, keepdim=True)).sum(dim=-1, keepdim=True)",
        ),
    ),
    (
        "softmax_per_block",
        "each block was normalised on its own, so every block sums to 1; the softmax normalises over all "
        "blocks together: keep one running maximum and one running sum across the blocks.",
        edit(SOFTMAX, "return torch.cat([torch.softmax(block, dim=-1) for block in blocks], dim=-1)"),
    ),
    (
        "max_initialised_at_zero",
        "start the running maximum at -inf (torch.full(shape, float('-inf'))), not 0: when every score is far "
        "below 0, exp(score - 0) underflows to 0 and the result is 0/0.",
        edit(INIT, "m = torch.zeros(blocks[0].shape[:-1] + (1,))"),
    ),
    (
        "max_over_whole_block",
        "take each row's own maximum, block.amax(dim=-1, keepdim=True), not the maximum of the whole block: rows "
        "far below another row's maximum underflow to 0.",
        edit(MAX, "m_new = torch.maximum(m, block.max())"),
    ),
    (
        "rescale_factor_inverted",
        "the old sum is rescaled by exp(m - m_new), which is <= 1 (m_new >= m), not exp(m_new - m).",
        edit(SUM, "l = l * torch.exp(m_new - m) + torch.exp(block - m_new).sum(dim=-1, keepdim=True)"),
    ),
    ("dense_softmax", DENSE_HINT, edit(INIT, "return torch.softmax(torch.cat(blocks, dim=-1), dim=-1)")),
    (
        "exp_changed_in_place",
        "the check also takes gradients through your softmax, and exp's backward needs its output: changing "
        "the exponentials in place (w.exp_() then w /= l) breaks autograd; write torch.exp(block - m) / l.",
        edit(SOFTMAX, "weights = torch.cat(blocks, dim=-1) - m\nweights.exp_()\nweights /= l\nreturn weights"),
    ),
    (
        "detached_output",
        DETACHED_HINT,
        edit(SOFTMAX, "return (torch.cat([torch.exp(block - m) for block in blocks], dim=-1) / l).detach()"),
    ),
)


class _ReductionSpy(TorchDispatchMode):
    """Records the widest last axis that any maximum, sum-of-exponentials or softmax reduced."""

    REDUCTIONS = ("amax", "max", "_softmax", "_log_softmax", "logsumexp", "sort", "topk")

    def __init__(self) -> None:
        super().__init__()
        self.widest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name in self.REDUCTIONS and args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
            self.widest = max(self.widest, args[0].shape[-1])
        return func(*args, **(kwargs or {}))


def _stream_case() -> list[torch.Tensor]:
    g = generator(111)
    return [randn(g, 2, 4, scale=3.0) for _ in range(8)]  # 32 scores per row, blocks of 4


def _check_online_softmax(fn: Callable[..., Any]) -> tuple[Status, str]:
    result = run_check(dataclasses.replace(ONLINE_SOFTMAX, custom_check=None), fn)
    if not result.passed:
        return result.status, result.message
    spy = _ReductionSpy()
    try:
        with spy:
            fn(_stream_case())
    except Exception:  # it passed the same kind of call above; a spy problem must not fail the learner
        return result.status, result.message
    if spy.widest > 4:
        return Status.FAILED, (
            f"right values, but a maximum or softmax was taken over {spy.widest} scores at once "
            "for 8 blocks of 4 scores.\n   Hint: " + DENSE_HINT
        )
    return result.status, result.message


ONLINE_SOFTMAX = register(
    Exercise(
        name="online_softmax",
        lesson=LESSON,
        reference=online_softmax,
        cases=_online_softmax_cases,
        mistakes=_ONLINE_MISTAKES,
        custom_check=lambda fn: _check_online_softmax(fn),
    )
)


# ---------------------------------------------------------------------------------------------
# tiled_attention(q, k, v, causal, block_q, block_k) -> (output, lse)
# ---------------------------------------------------------------------------------------------

# The largest tensor one call may allocate in the "no dense matrix" case (128 queries and keys,
# d = 4, tiles of 16 x 16): a tile's scores take 1 KiB and the output 2 KiB, the dense 128 x 128
# float scores 64 KiB. A boolean 128 x 128 causal mask built once (16 KiB) is not the dense
# algorithm the exercise forbids, so the limit sits between the two.
_TILED_LIMIT = 32 * 1024
# Tiling the queries alone (each query tile scored against all S keys at once) never builds the
# L x S matrix but is not the algorithm either: with 64 queries, 1024 keys, d = 4 and tiles of
# 16 x 16, one query tile's row of scores takes 64 KiB, a 16 x 16 tile 1 KiB, the keys or values
# 16 KiB (32 KiB as a float64 copy), so 48 KiB separates working on key tiles from the strip.
_STRIP_LIMIT = 48 * 1024


def _tiled_attention_cases() -> list[Case]:
    g = generator(110)
    # Query 0's scores (times sqrt 2) over the three key tiles are [0, 1 | 4, 2 | -1, 0]:
    # its maximum rises in the second tile and stays above the third tile's maximum.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    k = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 1.0], [2.0, 2.0], [-1.0, 3.0], [0.0, -2.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [-1.0, 0.0], [0.0, -3.0], [1.0, 1.0]])
    seq = randn(g, 2, 3, 10, 4, scale=2.0)
    very_negative = torch.full((4, 4), 30.0), torch.full((6, 4), -30.0) + randn(g, 6, 4)
    rows_apart = randn(g, 4, 3) * torch.tensor([[1.0], [60.0], [0.1], [-60.0]])
    return [
        Case(
            (q, k, v),
            {"causal": False, "block_q": 2, "block_k": 2},
            label="q (3, 2), k and v (6, 2), block_q=2, block_k=2: three key tiles whose maximum changes",
        ),
        Case(
            (q, k, v),
            {"causal": True, "block_q": 2, "block_k": 2},
            label="the same q, k, v with causal=True, block_q=2, block_k=2",
        ),
        Case(
            (seq, seq.flip(-2), randn(g, 2, 3, 10, 5)),
            {"causal": True, "block_q": 4, "block_k": 3},
            label="q, k (2, 3, 10, 4), v (2, 3, 10, 5), causal=True, block_q=4, block_k=3 (ragged last tiles)",
        ),
        Case(
            (randn(g, 2, 7, 8, scale=3.0), randn(g, 2, 9, 8, scale=3.0), randn(g, 2, 9, 3)),
            {"causal": False, "block_q": 3, "block_k": 4},
            label="q (2, 7, 8), k (2, 9, 8), v (2, 9, 3), causal=False, block_q=3, block_k=4",
        ),
        Case(
            (*very_negative, randn(g, 6, 2)),
            {"causal": False, "block_q": 2, "block_k": 2},
            label="very negative scores (about -1800 everywhere): q (4, 4), k (6, 4), v (6, 2), block_q=2, "
            "block_k=2 (a running max that starts at 0 underflows)",
        ),
        Case(
            (rows_apart, randn(g, 8, 3, scale=2.0), randn(g, 8, 2)),
            {"causal": False, "block_q": 4, "block_k": 3},
            label="q (4, 3) whose rows' scores differ in size by ~100, k (8, 3), v (8, 2), block_q=4, block_k=3",
        ),
        Case(
            (randn(g, 5, 3), randn(g, 9, 3), randn(g, 9, 2)),
            {"causal": True, "block_q": 2, "block_k": 4},
            label="5 queries, 9 keys, d_k=3, causal=True (top-left: query i sees keys 0..i), block_q=2, block_k=4",
        ),
        Case(
            (randn(g, 1, 1, 5, 4), randn(g, 1, 1, 5, 4), randn(g, 1, 1, 5, 4)),
            {"causal": True},
            label="batch of 1, 1 head, 5 tokens, causal=True, default tile sizes (one tile)",
        ),
        Case(
            (randn(g, 128, 4), randn(g, 128, 4), randn(g, 128, 4)),
            {"causal": False, "block_q": 16, "block_k": 16},
            max_alloc_bytes=_TILED_LIMIT,
            label="128 queries and keys, tiles of 16 x 16: no tensor may be as large as the 128 x 128 score matrix",
        ),
        # No check_grad: the reference writes its tiles with out=, so it is not differentiable either.
        Case(
            (randn(g, 2, 5, 3), randn(g, 2, 6, 3), randn(g, 2, 6, 2)),
            {"causal": True, "block_q": 2, "block_k": 4},
            label="q (2, 5, 3), k and v (2, 6, 3 and 2), causal=True, block_q=2, block_k=4",
        ),
        Case(
            (randn(g, 64, 4), randn(g, 1024, 4), randn(g, 1024, 4)),
            {"causal": False, "block_q": 16, "block_k": 16},
            max_alloc_bytes=_STRIP_LIMIT,
            label="64 queries, 1024 keys, tiles of 16 x 16: no tensor may be as large as one query tile's "
            "scores over all 1024 keys (walk over the key tiles)",
        ),
    ]


TILE_SCORES = "s = q_tile @ k[..., j:j + block_k, :].transpose(-2, -1)"
CAUSAL_MASK = "if causal:\n    s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float('-inf'))"
P = "p = torch.exp(s - m_new)"
L_UPDATE = "l = alpha * l + p.sum(dim=-1, keepdim=True)"
ACC_UPDATE = "acc = alpha * acc + p @ v[..., j:j + block_k, :]"
APPEND = "outputs.append(acc / l)"
LSE = "lses.append((m + torch.log(l)).squeeze(-1))"
DENSE = """
s = q @ k.transpose(-2, -1) * scale
if causal:
    s = s.masked_fill(torch.arange(k.shape[-2]) > torch.arange(q.shape[-2])[:, None], float('-inf'))
return torch.softmax(s, dim=-1) @ v, torch.logsumexp(s, dim=-1)
"""

register(
    Exercise(
        name="tiled_attention",
        lesson=LESSON,
        reference=tiled_attention,
        cases=_tiled_attention_cases,
        mistakes=catalogue(
            LESSON,
            "tiled_attention",
            (
                "accumulators_not_rescaled",
                "when a tile raises the running maximum from m to m_new, the sum l and the output accumulator were "
                "computed relative to the old maximum: multiply both by alpha = exp(m - m_new) before adding the tile.",
                edit(L_UPDATE, "l = l + p.sum(dim=-1, keepdim=True)"),
                edit(ACC_UPDATE, "acc = acc + p @ v[..., j:j + block_k, :]"),
            ),
            (
                "output_not_rescaled",
                "the sum l is rescaled by alpha = exp(m - m_new) but the output accumulator is not: it was built "
                "relative to the same old maximum, so it needs the same factor (acc = alpha * acc + p @ v).",
                edit(ACC_UPDATE, "acc = acc + p @ v[..., j:j + block_k, :]"),
            ),
            (
                "divides_inside_the_loop",
                "the accumulator is divided by l inside the loop, so the next tile rescales a normalised value as "
                "if it were a raw sum: keep acc un-normalised and divide by l once, after the last key tile.",
                edit(ACC_UPDATE, "acc = (alpha * acc + p @ v[..., j:j + block_k, :]) / l"),
                edit(APPEND, "outputs.append(acc)"),
            ),
            (
                "skips_the_diagonal_tile",
                "with causal=True only the key tiles that start after the query tile's last query may be skipped; "
                "the tile on the diagonal holds each query's own key and the ones before it: process it, masked.",
                edit("if causal and j > rows[-1]:", "if causal and j >= i:"),
            ),
            (
                "diagonal_tile_unmasked",
                "the tiles that straddle the diagonal hold some keys after their query: with causal=True set the "
                "scores of keys j > i to -inf inside those tiles, not only skip the tiles above the diagonal.",
                edit(CAUSAL_MASK, ""),
            ),
            (
                "block_max_instead_of_running_max",
                "take the tile's weights as exp(s - m_new) with the running maximum m_new, not exp(s - tile max): "
                "l and acc are relative to m_new, and every term added to them must be too.",
                edit(P, "p = torch.exp(s - s.amax(dim=-1, keepdim=True))"),
            ),
            (
                "max_initialised_at_zero",
                "start the running maximum at -inf (torch.full(shape, float('-inf'))), not 0: when every score is far "
                "below 0, exp(s - 0) underflows to 0 and acc / l is 0/0.",
                edit(
                    "m = torch.full(q_tile.shape[:-1] + (1,), float('-inf'))",
                    "m = torch.zeros(q_tile.shape[:-1] + (1,))",
                ),
            ),
            (
                "lse_without_max",
                "l is the sum of exp(s - m), so the log-sum-exp of the scores is m + log(l), not log(l).",
                edit(LSE, "lses.append(torch.log(l).squeeze(-1))"),
            ),
            (
                "unscaled",
                "scale the scores by 1 / sqrt(d_k) (d_k = q.shape[-1]) before the softmax: softmax(q k^T / sqrt(d_k)).",
                edit("q_tile = q[..., i:i + block_q, :] * scale", "q_tile = q[..., i:i + block_q, :]"),
            ),
            (
                "ragged_key_tile_dropped",
                "when block_k does not divide S the last key tile is shorter but still there: "
                "range(0, S, block_k), with the slice k[..., j:j + block_k, :] cut at S.",
                edit(
                    "for j in range(0, k.shape[-2], block_k):", "for j in range(0, k.shape[-2] - block_k + 1, block_k):"
                ),
            ),
            (
                "mask_from_tile_indices",
                "inside a tile compare absolute positions, key j + c against query i + r "
                "(torch.arange(j, j + n) > rows), not the key's index within its tile.",
                edit(CAUSAL_MASK, "if causal:\n    s = s.masked_fill(torch.arange(s.shape[-1]) > rows, float('-inf'))"),
            ),
            (
                "queries_tiled_keys_not",
                "walk over the key tiles of block_k keys too: scoring a query tile against all S keys at once holds "
                "a block_q x S strip of scores, which the online softmax over key tiles exists to avoid.",
                edit("scale = 1 / math.sqrt(q.shape[-1])", "scale = 1 / math.sqrt(q.shape[-1])\nblock_k = k.shape[-2]"),
            ),
            (
                "dense_attention",
                "the point of tiled attention is to never hold the L x S scores: loop over query tiles and key tiles, "
                "keeping a running maximum, sum and output accumulator per query.",
                edit("outputs, lses = [], []", DENSE),
            ),
        ),
    )
)
