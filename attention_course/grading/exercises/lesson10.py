"""Lesson 10 exercises: the sliding-window mask, Longformer's global + local mask, block-sparse attention.

Each catalogued mistake is a whole function (the grader's tests paste its source into a notebook),
so the block-sparse ones repeat the loop and differ in the line the hint names.
"""

from __future__ import annotations

import math

import torch

from ...sparse import block_sparse_attention, global_local_mask, sliding_window_mask, sliding_window_pattern
from ..registry import register
from ..spec import Case, Exercise, Mistake

LESSON = "10_sparse_attention"


# ---------------------------------------------------------------- sliding_window_mask(n, window, causal)


def _window_cases() -> list[Case]:
    return [
        Case((6, 1), label="sliding_window_mask(6, 1)"),
        Case((6, 2), {"causal": True}, label="sliding_window_mask(6, 2, causal=True)"),
        Case((5, 0), label="sliding_window_mask(5, 0)  (window 0: each token sees only itself)"),
        Case((4, 6), label="sliding_window_mask(4, 6)  (a window wider than the sequence)"),
        Case((9, 3), {"causal": True}, label="sliding_window_mask(9, 3, causal=True)"),
    ]


def _window_off_by_one(n, window, causal=False):
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    return (offset >= 0) & (offset < window) if causal else offset.abs() < window


def _window_not_causal(n, window, causal=False):
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    return offset.abs() <= window


def _window_future(n, window, causal=False):
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    return (offset <= 0) & (offset >= -window) if causal else offset.abs() <= window


def _window_float(n, window, causal=False):
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    allowed = (offset >= 0) & (offset <= window) if causal else offset.abs() <= window
    return allowed.float()


register(Exercise(
    name="sliding_window_mask",
    lesson=LESSON,
    reference=sliding_window_mask,
    cases=_window_cases,
    mistakes=(
        Mistake("window_off_by_one",
                "window is the largest allowed distance: keep keys with |i - j| <= window (<=, not <), "
                "so window=1 lets a token see its two neighbours as well as itself.",
                _window_off_by_one),
        Mistake("not_causal",
                "with causal=True a query must not see later keys: keep only 0 <= i - j <= window.",
                _window_not_causal),
        Mistake("causal_looks_ahead",
                "rows are queries i and columns keys j: causal keeps the past, j <= i (the band below the "
                "diagonal), not the keys after the query.",
                _window_future),
        Mistake("float_mask",
                "return a boolean mask (dtype=torch.bool), not 0/1 numbers.",
                _window_float),
    ),
))


# ---------------------------------------------------------------- global_local_mask(n, window, global_tokens, causal)


def _global_cases() -> list[Case]:
    return [
        Case((8, 1, [0]), label="global_local_mask(8, 1, [0])"),
        Case((8, 1, [0, 5]), {"causal": True}, label="global_local_mask(8, 1, [0, 5], causal=True)"),
        Case((6, 0, []), label="global_local_mask(6, 0, [])  (no global token: the plain window)"),
        Case((10, 2, [3, 9]), label="global_local_mask(10, 2, [3, 9])"),
    ]


def _global_rows_only(n, window, global_tokens, causal=False):
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    is_global = torch.zeros(n, dtype=torch.bool)
    is_global[list(global_tokens)] = True
    allowed = ((i - j).abs() <= window) | is_global[i]
    return allowed & (j <= i) if causal else allowed


def _global_columns_only(n, window, global_tokens, causal=False):
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    is_global = torch.zeros(n, dtype=torch.bool)
    is_global[list(global_tokens)] = True
    allowed = ((i - j).abs() <= window) | is_global[j]
    return allowed & (j <= i) if causal else allowed


def _global_not_causal(n, window, global_tokens, causal=False):
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    is_global = torch.zeros(n, dtype=torch.bool)
    is_global[list(global_tokens)] = True
    local = (i - j >= 0) & (i - j <= window) if causal else (i - j).abs() <= window
    return local | is_global[i] | is_global[j]


register(Exercise(
    name="global_local_mask",
    lesson=LESSON,
    reference=global_local_mask,
    cases=_global_cases,
    mistakes=(
        Mistake("global_rows_only",
                "a global token is a full row (it reads every token) AND a full column (every token reads it); "
                "the columns are missing, so no token can read the global ones.",
                _global_rows_only),
        Mistake("global_columns_only",
                "a global token is a full row (it reads every token) AND a full column (every token reads it); "
                "the rows are missing, so the global tokens only see their window.",
                _global_columns_only),
        Mistake("global_links_not_causal",
                "with causal=True no query may read a later key, global or not: apply j <= i after adding the "
                "global rows and columns.",
                _global_not_causal),
    ),
))


# ---------------------------------------------------------------- block_sparse_attention(q, k, v, layout, block_size, ...)


def _block_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(10)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    q, k, v = randn(6, 2), randn(6, 2), randn(6, 2)
    band = torch.tensor([[True, True, False], [True, True, True], [False, True, True]])
    lower = torch.ones(3, 3, dtype=torch.bool).tril()
    empty_row = torch.tensor([[True, False, False], [False, False, False], [True, False, True]])
    window = sliding_window_pattern(8, 1)
    batched = (randn(2, 3, 10, 4), randn(2, 3, 10, 4), randn(2, 3, 10, 5))
    return [
        Case((q, k, v, band, 2), label="q, k, v (6, 2), block_size=2, layout [[1,1,0],[1,1,1],[0,1,1]]"),
        Case((q, k, v, lower, 2), {"causal": True},
             label="the same q, k, v, block_size=2, every tile on or below the diagonal, causal=True"),
        Case((randn(7, 3), randn(7, 3), randn(7, 2), torch.ones(3, 3, dtype=torch.bool), 3),
             label="q, k (7, 3), v (7, 2), block_size=3: the last block holds 1 token, every tile visited"),
        Case((randn(8, 2), randn(8, 2), randn(8, 2), window.layout(4), 4), {"mask_fn": window.allows},
             label="q, k, v (8, 2), block_size=4, mask_fn = sliding window |i - j| <= 1 (tiles cut by the window)"),
        Case((q, k, v, empty_row, 2), {"mask_fn": lambda i, j: i != 4},
             label="q, k, v (6, 2), block_size=2, query block 1 has no tile and mask_fn hides every key from query 4"),
        Case((*batched, torch.ones(4, 4, dtype=torch.bool).tril(), 3), {"causal": True, "scale": 0.3},
             label="q, k (2, 3, 10, 4), v (2, 3, 10, 5), block_size=3, lower-triangular layout, causal=True, scale=0.3"),
    ]


def _block_per_block_softmax(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    outputs = []
    for qb in range(layout.shape[0]):
        q_idx = torch.arange(qb * block_size, min((qb + 1) * block_size, q.shape[-2]))
        out = torch.zeros(*q.shape[:-2], len(q_idx), v.shape[-1])
        for kb in layout[qb].nonzero().flatten().tolist():
            k_idx = torch.arange(kb * block_size, min((kb + 1) * block_size, k.shape[-2]))
            allowed = torch.ones(len(q_idx), len(k_idx), dtype=torch.bool)
            if causal:
                allowed = allowed & (k_idx[None, :] <= q_idx[:, None])
            if mask_fn is not None:
                allowed = allowed & mask_fn(q_idx[:, None], k_idx[None, :])
            scores = (q[..., q_idx, :] @ k[..., k_idx, :].transpose(-2, -1) * scale).masked_fill(~allowed, -math.inf)
            weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # normalised within this tile only
            out = out + weights @ v[..., k_idx, :]
        outputs.append(out)
    return torch.cat(outputs, dim=-2)


def _block_partial_tiles_skipped(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    outputs = []
    for qb in range(layout.shape[0]):
        q_idx = torch.arange(qb * block_size, min((qb + 1) * block_size, q.shape[-2]))
        # skips every tile that is not entirely allowed by causal: the diagonal tile is dropped
        key_blocks = [kb for kb in layout[qb].nonzero().flatten().tolist() if not causal or kb < qb]
        k_idx = torch.cat([torch.arange(kb * block_size, min((kb + 1) * block_size, k.shape[-2]))
                           for kb in key_blocks] + [torch.zeros(0, dtype=torch.long)])
        allowed = torch.ones(len(q_idx), len(k_idx), dtype=torch.bool)
        if causal:
            allowed = allowed & (k_idx[None, :] <= q_idx[:, None])
        if mask_fn is not None:
            allowed = allowed & mask_fn(q_idx[:, None], k_idx[None, :])
        scores = (q[..., q_idx, :] @ k[..., k_idx, :].transpose(-2, -1) * scale).masked_fill(~allowed, -math.inf)
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        outputs.append(weights @ v[..., k_idx, :])
    return torch.cat(outputs, dim=-2)


def _block_last_block_dropped(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    outputs = []
    for qb in range(q.shape[-2] // block_size):  # drops the short last block
        q_idx = torch.arange(qb * block_size, (qb + 1) * block_size)
        key_blocks = [kb for kb in layout[qb].nonzero().flatten().tolist() if kb < k.shape[-2] // block_size]
        k_idx = torch.cat([torch.arange(kb * block_size, (kb + 1) * block_size)
                           for kb in key_blocks] + [torch.zeros(0, dtype=torch.long)])
        allowed = torch.ones(len(q_idx), len(k_idx), dtype=torch.bool)
        if causal:
            allowed = allowed & (k_idx[None, :] <= q_idx[:, None])
        if mask_fn is not None:
            allowed = allowed & mask_fn(q_idx[:, None], k_idx[None, :])
        scores = (q[..., q_idx, :] @ k[..., k_idx, :].transpose(-2, -1) * scale).masked_fill(~allowed, -math.inf)
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        outputs.append(weights @ v[..., k_idx, :])
    return torch.cat(outputs, dim=-2)


def _block_tile_not_masked(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    outputs = []
    for qb in range(layout.shape[0]):
        q_idx = torch.arange(qb * block_size, min((qb + 1) * block_size, q.shape[-2]))
        key_blocks = layout[qb].nonzero().flatten().tolist()
        k_idx = torch.cat([torch.arange(kb * block_size, min((kb + 1) * block_size, k.shape[-2]))
                           for kb in key_blocks] + [torch.zeros(0, dtype=torch.long)])
        scores = q[..., q_idx, :] @ k[..., k_idx, :].transpose(-2, -1) * scale  # causal, mask_fn never applied
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        outputs.append(weights @ v[..., k_idx, :])
    return torch.cat(outputs, dim=-2)


def _block_nan_rows(q, k, v, layout, block_size, *, mask_fn=None, causal=False, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    outputs = []
    for qb in range(layout.shape[0]):
        q_idx = torch.arange(qb * block_size, min((qb + 1) * block_size, q.shape[-2]))
        key_blocks = layout[qb].nonzero().flatten().tolist()
        k_idx = torch.cat([torch.arange(kb * block_size, min((kb + 1) * block_size, k.shape[-2]))
                           for kb in key_blocks] + [torch.zeros(0, dtype=torch.long)])
        allowed = torch.ones(len(q_idx), len(k_idx), dtype=torch.bool)
        if causal:
            allowed = allowed & (k_idx[None, :] <= q_idx[:, None])
        if mask_fn is not None:
            allowed = allowed & mask_fn(q_idx[:, None], k_idx[None, :])
        scores = (q[..., q_idx, :] @ k[..., k_idx, :].transpose(-2, -1) * scale).masked_fill(~allowed, -math.inf)
        outputs.append(torch.softmax(scores, dim=-1) @ v[..., k_idx, :])  # NaN where a row has no key
    return torch.cat(outputs, dim=-2)


register(Exercise(
    name="block_sparse_attention",
    lesson=LESSON,
    reference=block_sparse_attention,
    cases=_block_cases,
    mistakes=(
        Mistake("softmax_per_tile",
                "the softmax was normalised inside each tile, so every tile's weights sum to 1; normalise each "
                "query's row over ALL the keys of all its visited tiles (gather them, then one softmax).",
                _block_per_block_softmax),
        Mistake("partial_tiles_skipped",
                "a tile that is only partly allowed (the diagonal tile under causal) must still be visited, "
                "with its forbidden pairs masked: skip only the tiles the layout marks False.",
                _block_partial_tiles_skipped),
        Mistake("last_block_dropped",
                "when block_size does not divide the length, the last block is shorter but still there: loop over "
                "ceil(L / block_size) blocks (the layout's rows), cutting the last one at L.",
                _block_last_block_dropped),
        Mistake("tile_not_masked",
                "the layout only says which tiles to visit; inside a visited tile, still hide the pairs that causal "
                "(j > i) or mask_fn(i, j) == False forbid.",
                _block_tile_not_masked),
        Mistake("nan_for_rows_without_keys",
                "a query with no allowed key (an empty layout row, or mask_fn hiding all its keys) must get zero "
                "weights and a zero output, not NaN: use the course's softmax (attention_course.softmax).",
                _block_nan_rows),
    ),
))
