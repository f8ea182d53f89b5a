"""Lesson 11 exercises: online softmax over a stream of blocks; tiled (flash) attention returning the log-sum-exp.

Each catalogued mistake is a whole function (the grader's tests paste its source into a notebook),
so the tiled ones repeat the loop and differ in the one line the hint names.
"""

from __future__ import annotations

import math

import torch

from ...flash import online_softmax, tiled_attention
from ..registry import register
from ..spec import Case, Exercise, Mistake

LESSON = "11_flash_attention"


# ---------------------------------------------------------------------------------------------
# online_softmax(blocks)
# ---------------------------------------------------------------------------------------------


def _online_softmax_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(11)
    rising = [torch.randn(3, n, generator=generator) + 4 * b for b, n in enumerate((4, 3, 5))]
    return [
        # The maximum rises in the second block (3 -> 5), then the third block's max (0) is below it.
        Case(([torch.tensor([1.0, 3.0]), torch.tensor([2.0, 5.0]), torch.tensor([0.0])],),
             label="blocks [1, 3], [2, 5], [0]"),
        Case((rising,), label="3 rows in blocks of 4, 3 and 5 scores whose maximum rises block after block"),
        Case(([torch.randn(2, 4, n, generator=generator) * 10 for n in (1, 6, 2, 3)],),
             label="blocks of shape (2, 4, n) for n = 1, 6, 2, 3 with scores of size ~10"),
    ]


def _online_softmax_no_rescale(blocks):
    running_max = torch.full(blocks[0].shape[:-1] + (1,), float("-inf"))
    running_sum = torch.zeros_like(running_max)
    for block in blocks:
        running_max = torch.maximum(running_max, block.amax(dim=-1, keepdim=True))
        running_sum = running_sum + torch.exp(block - running_max).sum(dim=-1, keepdim=True)
    return torch.cat([torch.exp(block - running_max) for block in blocks], dim=-1) / running_sum


def _online_softmax_block_max(blocks):
    running_max = torch.full(blocks[0].shape[:-1] + (1,), float("-inf"))
    running_sum = torch.zeros_like(running_max)
    for block in blocks:
        block_max = block.amax(dim=-1, keepdim=True)
        new_max = torch.maximum(running_max, block_max)
        running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(block - block_max).sum(-1, keepdim=True)
        running_max = new_max
    return torch.cat([torch.exp(block - running_max) for block in blocks], dim=-1) / running_sum


def _online_softmax_per_block(blocks):
    return torch.cat([torch.softmax(block, dim=-1) for block in blocks], dim=-1)


register(Exercise(
    name="online_softmax",
    lesson=LESSON,
    reference=online_softmax,
    cases=_online_softmax_cases,
    mistakes=(
        Mistake("sum_not_rescaled",
                "when a block raises the running maximum from m to m_new, the sum so far was computed relative to "
                "the old maximum: multiply it by exp(m - m_new) before adding the new block's terms.",
                _online_softmax_no_rescale),
        Mistake("block_max_instead_of_running_max",
                "add the new block's terms as exp(x - m_new) with the running maximum m_new, not exp(x - block max): "
                "every term of the sum must be relative to the same maximum.",
                _online_softmax_block_max),
        Mistake("softmax_per_block",
                "each block was normalised on its own, so every block sums to 1; the softmax normalises over all "
                "blocks together: keep one running maximum and one running sum across the blocks.",
                _online_softmax_per_block),
    ),
))


# ---------------------------------------------------------------------------------------------
# tiled_attention(q, k, v, causal, block_q, block_k) -> (output, lse)
# ---------------------------------------------------------------------------------------------


def _tiled_attention_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(110)
    # Query 0's scores (times sqrt 2) over the three key tiles are [0, 1 | 4, 2 | -1, 0]:
    # its maximum rises in the second tile and stays above the third tile's maximum.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    k = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 1.0], [2.0, 2.0], [-1.0, 3.0], [0.0, -2.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [-1.0, 0.0], [0.0, -3.0], [1.0, 1.0]])
    seq = torch.randn(2, 3, 10, 4, generator=generator) * 2
    return [
        Case((q, k, v), {"causal": False, "block_q": 2, "block_k": 2},
             label="q (3, 2), k and v (6, 2), block_q=2, block_k=2: three key tiles whose maximum changes"),
        Case((q, k, v), {"causal": True, "block_q": 2, "block_k": 2},
             label="the same q, k, v with causal=True, block_q=2, block_k=2"),
        Case((seq, seq.flip(-2), torch.randn(2, 3, 10, 5, generator=generator)),
             {"causal": True, "block_q": 4, "block_k": 3},
             label="q, k (2, 3, 10, 4), v (2, 3, 10, 5), causal=True, block_q=4, block_k=3 (ragged last tiles)"),
        Case((torch.randn(2, 7, 8, generator=generator) * 3, torch.randn(2, 9, 8, generator=generator) * 3,
              torch.randn(2, 9, 3, generator=generator)), {"causal": False, "block_q": 3, "block_k": 4},
             label="q (2, 7, 8), k (2, 9, 8), v (2, 9, 3), causal=False, block_q=3, block_k=4"),
    ]


def _tiled_no_rescale(q, k, v, causal=False, block_q=512, block_k=256):
    scale = 1 / math.sqrt(q.shape[-1])
    outputs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        q_tile = q[..., i:i + block_q, :] * scale
        rows = torch.arange(i, i + q_tile.shape[-2])[:, None]
        m = torch.full(q_tile.shape[:-1] + (1,), float("-inf"))
        l = torch.zeros_like(m)
        acc = torch.zeros(q_tile.shape[:-1] + (v.shape[-1],))
        for j in range(0, k.shape[-2], block_k):
            if causal and j > rows[-1]:
                break
            s = q_tile @ k[..., j:j + block_k, :].transpose(-2, -1)
            if causal:
                s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float("-inf"))
            m = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m)
            l = l + p.sum(dim=-1, keepdim=True)
            acc = acc + p @ v[..., j:j + block_k, :]
        outputs.append(acc / l)
        lses.append((m + torch.log(l)).squeeze(-1))
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)


def _tiled_rescale_sum_only(q, k, v, causal=False, block_q=512, block_k=256):
    scale = 1 / math.sqrt(q.shape[-1])
    outputs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        q_tile = q[..., i:i + block_q, :] * scale
        rows = torch.arange(i, i + q_tile.shape[-2])[:, None]
        m = torch.full(q_tile.shape[:-1] + (1,), float("-inf"))
        l = torch.zeros_like(m)
        acc = torch.zeros(q_tile.shape[:-1] + (v.shape[-1],))
        for j in range(0, k.shape[-2], block_k):
            if causal and j > rows[-1]:
                break
            s = q_tile @ k[..., j:j + block_k, :].transpose(-2, -1)
            if causal:
                s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m_new)
            l = torch.exp(m - m_new) * l + p.sum(dim=-1, keepdim=True)
            acc = acc + p @ v[..., j:j + block_k, :]
            m = m_new
        outputs.append(acc / l)
        lses.append((m + torch.log(l)).squeeze(-1))
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)


def _tiled_divide_inside_loop(q, k, v, causal=False, block_q=512, block_k=256):
    scale = 1 / math.sqrt(q.shape[-1])
    outputs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        q_tile = q[..., i:i + block_q, :] * scale
        rows = torch.arange(i, i + q_tile.shape[-2])[:, None]
        m = torch.full(q_tile.shape[:-1] + (1,), float("-inf"))
        l = torch.zeros_like(m)
        acc = torch.zeros(q_tile.shape[:-1] + (v.shape[-1],))
        for j in range(0, k.shape[-2], block_k):
            if causal and j > rows[-1]:
                break
            s = q_tile @ k[..., j:j + block_k, :].transpose(-2, -1)
            if causal:
                s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m_new)
            alpha = torch.exp(m - m_new)
            l = alpha * l + p.sum(dim=-1, keepdim=True)
            acc = (alpha * acc + p @ v[..., j:j + block_k, :]) / l
            m = m_new
        outputs.append(acc)
        lses.append((m + torch.log(l)).squeeze(-1))
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)


def _tiled_skip_diagonal(q, k, v, causal=False, block_q=512, block_k=256):
    scale = 1 / math.sqrt(q.shape[-1])
    outputs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        q_tile = q[..., i:i + block_q, :] * scale
        rows = torch.arange(i, i + q_tile.shape[-2])[:, None]
        m = torch.full(q_tile.shape[:-1] + (1,), float("-inf"))
        l = torch.zeros_like(m)
        acc = torch.zeros(q_tile.shape[:-1] + (v.shape[-1],))
        for j in range(0, k.shape[-2], block_k):
            if causal and j >= i:
                break
            s = q_tile @ k[..., j:j + block_k, :].transpose(-2, -1)
            if causal:
                s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m_new)
            alpha = torch.exp(m - m_new)
            l = alpha * l + p.sum(dim=-1, keepdim=True)
            acc = alpha * acc + p @ v[..., j:j + block_k, :]
            m = m_new
        outputs.append(acc / l)
        lses.append((m + torch.log(l)).squeeze(-1))
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)


def _tiled_diagonal_unmasked(q, k, v, causal=False, block_q=512, block_k=256):
    scale = 1 / math.sqrt(q.shape[-1])
    outputs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        q_tile = q[..., i:i + block_q, :] * scale
        rows = torch.arange(i, i + q_tile.shape[-2])[:, None]
        m = torch.full(q_tile.shape[:-1] + (1,), float("-inf"))
        l = torch.zeros_like(m)
        acc = torch.zeros(q_tile.shape[:-1] + (v.shape[-1],))
        for j in range(0, k.shape[-2], block_k):
            if causal and j > rows[-1]:
                break
            s = q_tile @ k[..., j:j + block_k, :].transpose(-2, -1)
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m_new)
            alpha = torch.exp(m - m_new)
            l = alpha * l + p.sum(dim=-1, keepdim=True)
            acc = alpha * acc + p @ v[..., j:j + block_k, :]
            m = m_new
        outputs.append(acc / l)
        lses.append((m + torch.log(l)).squeeze(-1))
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)


def _tiled_block_max(q, k, v, causal=False, block_q=512, block_k=256):
    scale = 1 / math.sqrt(q.shape[-1])
    outputs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        q_tile = q[..., i:i + block_q, :] * scale
        rows = torch.arange(i, i + q_tile.shape[-2])[:, None]
        m = torch.full(q_tile.shape[:-1] + (1,), float("-inf"))
        l = torch.zeros_like(m)
        acc = torch.zeros(q_tile.shape[:-1] + (v.shape[-1],))
        for j in range(0, k.shape[-2], block_k):
            if causal and j > rows[-1]:
                break
            s = q_tile @ k[..., j:j + block_k, :].transpose(-2, -1)
            if causal:
                s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - s.amax(dim=-1, keepdim=True))
            alpha = torch.exp(m - m_new)
            l = alpha * l + p.sum(dim=-1, keepdim=True)
            acc = alpha * acc + p @ v[..., j:j + block_k, :]
            m = m_new
        outputs.append(acc / l)
        lses.append((m + torch.log(l)).squeeze(-1))
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)


def _tiled_lse_without_max(q, k, v, causal=False, block_q=512, block_k=256):
    scale = 1 / math.sqrt(q.shape[-1])
    outputs, lses = [], []
    for i in range(0, q.shape[-2], block_q):
        q_tile = q[..., i:i + block_q, :] * scale
        rows = torch.arange(i, i + q_tile.shape[-2])[:, None]
        m = torch.full(q_tile.shape[:-1] + (1,), float("-inf"))
        l = torch.zeros_like(m)
        acc = torch.zeros(q_tile.shape[:-1] + (v.shape[-1],))
        for j in range(0, k.shape[-2], block_k):
            if causal and j > rows[-1]:
                break
            s = q_tile @ k[..., j:j + block_k, :].transpose(-2, -1)
            if causal:
                s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m_new)
            alpha = torch.exp(m - m_new)
            l = alpha * l + p.sum(dim=-1, keepdim=True)
            acc = alpha * acc + p @ v[..., j:j + block_k, :]
            m = m_new
        outputs.append(acc / l)
        lses.append(torch.log(l).squeeze(-1))
    return torch.cat(outputs, dim=-2), torch.cat(lses, dim=-1)


register(Exercise(
    name="tiled_attention",
    lesson=LESSON,
    reference=tiled_attention,
    cases=_tiled_attention_cases,
    mistakes=(
        Mistake("accumulators_not_rescaled",
                "when a tile raises the running maximum from m to m_new, the sum l and the output accumulator were "
                "computed relative to the old maximum: multiply both by alpha = exp(m - m_new) before adding the tile.",
                _tiled_no_rescale),
        Mistake("output_not_rescaled",
                "the sum l is rescaled by alpha = exp(m - m_new) but the output accumulator is not: it was built "
                "relative to the same old maximum, so it needs the same factor (acc = alpha * acc + p @ v).",
                _tiled_rescale_sum_only),
        Mistake("divides_inside_the_loop",
                "the accumulator is divided by l inside the loop, so the next tile rescales a normalised value as "
                "if it were a raw sum: keep acc un-normalised and divide by l once, after the last key tile.",
                _tiled_divide_inside_loop),
        Mistake("skips_the_diagonal_tile",
                "with causal=True only the key tiles that start after the query tile's last query may be skipped; "
                "the tile on the diagonal holds each query's own key and the ones before it: process it, masked.",
                _tiled_skip_diagonal),
        Mistake("diagonal_tile_unmasked",
                "the tiles that straddle the diagonal hold some keys after their query: with causal=True set the "
                "scores of keys j > i to -inf inside those tiles, not only skip the tiles above the diagonal.",
                _tiled_diagonal_unmasked),
        Mistake("block_max_instead_of_running_max",
                "take the tile's weights as exp(s - m_new) with the running maximum m_new, not exp(s - tile max): "
                "l and acc are relative to m_new, and every term added to them must be too.",
                _tiled_block_max),
        Mistake("lse_without_max",
                "l is the sum of exp(s - m), so the log-sum-exp of the scores is m + log(l), not log(l).",
                _tiled_lse_without_max),
    ),
))
