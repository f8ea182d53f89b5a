"""Lesson 10 exercises: the sliding-window mask, Longformer's global + local mask, block-sparse attention."""

from __future__ import annotations

import torch

from ...sparse import block_sparse_attention, global_local_mask, sliding_window_mask, sliding_window_pattern
from ..casegen import column_major, generator, randn
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "10_sparse_attention"
BOOL_HINT = "return a boolean mask (dtype=torch.bool), not 0/1 numbers."

# ---------------------------------------------------------------- sliding_window_mask(n, window, causal)


def _window_cases() -> list[Case]:
    return [
        Case((6, 1), label="sliding_window_mask(6, 1)"),
        Case((6, 2), {"causal": True}, label="sliding_window_mask(6, 2, causal=True)"),
        Case((5, 0), label="sliding_window_mask(5, 0)  (window 0: each token sees only itself)"),
        Case((4, 6), label="sliding_window_mask(4, 6)  (a window wider than the sequence)"),
        Case((9, 3), {"causal": True}, label="sliding_window_mask(9, 3, causal=True)"),
        Case((1, 0), label="sliding_window_mask(1, 0)"),
        Case((7, 2), label="sliding_window_mask(7, 2)"),
        Case((5, 0), {"causal": True}, label="sliding_window_mask(5, 0, causal=True)"),
    ]


CAUSAL_BAND = "return (offset >= 0) & (offset <= window)"
BAND = "return offset.abs() <= window"

register(
    Exercise(
        name="sliding_window_mask",
        lesson=LESSON,
        reference=sliding_window_mask,
        cases=_window_cases,
        mistakes=catalogue(
            LESSON,
            "sliding_window_mask",
            (
                "causal_window_off_by_one",
                "with causal=True a query sees itself and the `window` keys before it: 0 <= i - j <= window (<=, not <).",
                edit(CAUSAL_BAND, "return (offset >= 0) & (offset < window)"),
            ),
            (
                "window_off_by_one",
                "window is the largest allowed distance: keep keys with |i - j| <= window (<=, not <), "
                "so window=1 lets a token see its two neighbours as well as itself.",
                edit(CAUSAL_BAND, "return (offset >= 0) & (offset < window)"),
                edit(BAND, "return offset.abs() < window"),
            ),
            (
                "not_causal",
                "with causal=True a query must not see later keys: keep only 0 <= i - j <= window.",
                edit("if causal:\n    return (offset >= 0) & (offset <= window)", ""),
            ),
            (
                "causal_looks_ahead",
                "rows are queries i and columns keys j: causal keeps the past, j <= i (the band below the "
                "diagonal), not the keys after the query.",
                edit(CAUSAL_BAND, "return (offset <= 0) & (offset >= -window)"),
            ),
            (
                "float_mask",
                BOOL_HINT,
                edit(CAUSAL_BAND, "return ((offset >= 0) & (offset <= window)).float()"),
                edit(BAND, "return (offset.abs() <= window).float()"),
            ),
            (
                "window_one_sided",
                "without causal the window reaches both ways: keep |i - j| <= window (the keys on both sides of the "
                "query); only causal=True keeps just the past, 0 <= i - j <= window.",
                edit(BAND, "return (offset >= 0) & (offset <= window)"),
            ),
            (
                "mask_inverted",
                "a mask is True where attention is ALLOWED (inside the window), False where it is hidden; the code "
                "returns the opposite.",
                edit(CAUSAL_BAND, "return ~((offset >= 0) & (offset <= window))"),
                edit(BAND, "return ~(offset.abs() <= window)"),
            ),
        ),
    )
)


# ---------------------------------------------------------------- global_local_mask(n, window, global_tokens, causal)


def _global_cases() -> list[Case]:
    return [
        Case((8, 1, [0]), label="global_local_mask(8, 1, [0])"),
        Case((8, 1, [0, 5]), {"causal": True}, label="global_local_mask(8, 1, [0, 5], causal=True)"),
        Case((6, 0, []), label="global_local_mask(6, 0, [])  (no global token: the plain window)"),
        Case((10, 2, [3, 9]), label="global_local_mask(10, 2, [3, 9])"),
        Case((7, 1, [6, 2]), {"causal": True}, label="global_local_mask(7, 1, [6, 2], causal=True)"),
        Case((1, 0, [0]), label="global_local_mask(1, 0, [0])"),
        Case((9, 0, [4]), label="global_local_mask(9, 0, [4])"),
    ]


ALLOWED = "allowed = (offset.abs() <= window) | is_global[:, None] | is_global[None, :]"

register(
    Exercise(
        name="global_local_mask",
        lesson=LESSON,
        reference=global_local_mask,
        cases=_global_cases,
        mistakes=catalogue(
            LESSON,
            "global_local_mask",
            (
                "global_rows_only",
                "a global token is a full row (it reads every token) AND a full column (every token reads it); "
                "the columns are missing, so no token can read the global ones.",
                edit(ALLOWED, "allowed = (offset.abs() <= window) | is_global[:, None]"),
            ),
            (
                "global_columns_only",
                "a global token is a full row (it reads every token) AND a full column (every token reads it); "
                "the rows are missing, so the global tokens only see their window.",
                edit(ALLOWED, "allowed = (offset.abs() <= window) | is_global[None, :]"),
            ),
            (
                "global_links_not_causal",
                "with causal=True no query may read a later key, global or not: apply j <= i after adding the "
                "global rows and columns.",
                edit(
                    ALLOWED,
                    "allowed = (((offset >= 0) & (offset <= window)) if causal else (offset.abs() <= window)) "
                    "| is_global[:, None] | is_global[None, :]",
                ),
                edit("return allowed & (offset >= 0) if causal else allowed", "return allowed"),
            ),
            (
                "window_off_by_one",
                "window is the largest allowed distance: the local band is |i - j| <= window (<=, not <).",
                edit(ALLOWED, "allowed = (offset.abs() < window) | is_global[:, None] | is_global[None, :]"),
            ),
            (
                "float_mask",
                BOOL_HINT,
                edit(
                    "return allowed & (offset >= 0) if causal else allowed",
                    "return (allowed & (offset >= 0) if causal else allowed).float()",
                ),
            ),
            (
                "global_pairs_only",
                "a global token's whole row AND whole column are allowed: OR is_global[:, None] and "
                "is_global[None, :] into the window, not only the pairs where both tokens are global.",
                edit(ALLOWED, "allowed = (offset.abs() <= window) | (is_global[:, None] & is_global[None, :])"),
            ),
            (
                "causal_ignored",
                "with causal=True hide every later key (j > i), inside the window and in the global rows alike.",
                edit("return allowed & (offset >= 0) if causal else allowed", "return allowed"),
            ),
        ),
    )
)


# ---------------------------------------------------------------- block_sparse_attention(q, k, v, layout, block_size, ...)

# The largest tensor one call may allocate in the "no dense matrix" case: 256 queries and keys,
# d = 2, blocks of 8, 3 tiles per row. A row of tiles' scores is 8 x 24 floats (768 bytes), the
# output and any whole q, k or v 256 x 2 floats (2 KiB); the scores of one query block against
# every key (visiting the empty tiles too) take 8 KiB, the dense L x S boolean mask 64 KiB.
_SPARSE_LIMIT = 4 * 1024
_DENSE_LIMIT = 64 * 1024  # first a looser limit that only the dense L x S scores break


def _band_layout(n_blocks: int) -> torch.Tensor:
    index = torch.arange(n_blocks)
    return (index[:, None] - index[None, :]).abs() <= 1


def _block_cases() -> list[Case]:
    g = generator(10)
    q, k, v = randn(g, 6, 2), randn(g, 6, 2), randn(g, 6, 2)
    band = torch.tensor([[True, True, False], [True, True, True], [False, True, True]])
    lower = torch.ones(3, 3, dtype=torch.bool).tril()
    empty_row = torch.tensor([[True, False, False], [False, False, False], [True, False, True]])
    window = sliding_window_pattern(8, 1)
    long_window = sliding_window_pattern(256, 12, causal=True)
    long_q, long_k, long_v = randn(g, 256, 2), randn(g, 256, 2), randn(g, 256, 2)
    return [
        Case((q, k, v, band, 2), label="q, k, v (6, 2), block_size=2, layout [[1,1,0],[1,1,1],[0,1,1]]"),
        Case(
            (q, k, v, lower, 2),
            {"causal": True},
            label="the same q, k, v, block_size=2, every tile on or below the diagonal, causal=True",
        ),
        Case(
            (randn(g, 7, 3), randn(g, 7, 3), randn(g, 7, 2), torch.ones(3, 3, dtype=torch.bool), 3),
            label="q, k (7, 3), v (7, 2), block_size=3: the last block holds 1 token, every tile visited",
        ),
        Case(
            (randn(g, 8, 2), randn(g, 8, 2), randn(g, 8, 2), window.layout(4), 4),
            {"mask_fn": window.allows},
            label="q, k, v (8, 2), block_size=4, mask_fn = sliding window |i - j| <= 1 (tiles cut by the window)",
        ),
        Case(
            (q, k, v, empty_row, 2),
            {"mask_fn": lambda i, j: i != 4},
            label="q, k, v (6, 2), block_size=2, query block 1 has no tile and mask_fn hides every key from query 4",
        ),
        Case(
            (
                randn(g, 2, 3, 10, 4),
                randn(g, 2, 3, 10, 4),
                randn(g, 2, 3, 10, 5),
                torch.ones(4, 4, dtype=torch.bool).tril(),
                3,
            ),
            {"causal": True, "scale": 0.3},
            label="q, k (2, 3, 10, 4), v (2, 3, 10, 5), block_size=3, lower-triangular layout, causal=True, scale=0.3",
        ),
        Case(
            (
                randn(g, 2, 5, 3),
                randn(g, 2, 9, 3),
                randn(g, 2, 9, 4),
                torch.tensor([[True, False, True], [False, True, True]]),
                3,
            ),
            label="5 queries over 9 keys (L != S): q (2, 5, 3), k (2, 9, 3), v (2, 9, 4), block_size=3, "
            "layout [[1,0,1],[0,1,1]]",
        ),
        Case(
            (
                randn(g, 7, 3),
                randn(g, 7, 3),
                randn(g, 7, 5),
                torch.tensor([[True, True, False], [False, True, True], [False, False, False]]),
                3,
            ),
            label="q, k (7, 3), v (7, 5), block_size=3: the last (ragged, 1-query) layout row is empty, d_v=5 != d_k=3",
        ),
        Case(
            (
                column_major(randn(g, 1, 2, 9, 4)),
                column_major(randn(g, 1, 2, 9, 4)),
                randn(g, 1, 2, 9, 4),
                torch.tensor([[True, False, False], [True, True, False], [False, True, True]]),
                3,
            ),
            {"causal": True},
            label="batch of 1: q, k (1, 2, 9, 4) stored column-major, block_size=3, causal=True",
        ),
        Case(
            (
                randn(g, 6, 3, dtype=torch.float64),
                randn(g, 6, 3, dtype=torch.float64),
                randn(g, 6, 2, dtype=torch.float64),
                band,
                2,
            ),
            label="float64 q, k (6, 3), v (6, 2), block_size=2",
        ),
        Case(
            (long_q, long_k, long_v, _band_layout(32), 8),
            max_alloc_bytes=_DENSE_LIMIT,
            label="256 tokens, block_size=8, a band of 3 tiles per row: no tensor may be as large as the "
            "256 x 256 score matrix",
        ),
        Case(
            (long_q, long_k, long_v, _band_layout(32), 8),
            max_alloc_bytes=_SPARSE_LIMIT,
            label="256 tokens, block_size=8, a band of 3 tiles per row: no tensor may be as large as the "
            "scores of a query block against every key (skip the tiles the layout leaves out)",
        ),
        # The same contract with causal=True and a mask_fn: the masks are built per tile too (a whole
        # L x S boolean mask is 64 KiB, a float one 256 KiB), and the layout's band and the window agree.
        Case(
            (long_q, long_k, long_v, _band_layout(32).tril(), 8),
            {"causal": True, "mask_fn": long_window.allows},
            max_alloc_bytes=_SPARSE_LIMIT,
            label="256 tokens, block_size=8, causal=True, mask_fn = sliding window |i - j| <= 12, tiles on and "
            "below the diagonal: no tensor may be as large as the L x S mask either (mask each tile as you visit it)",
        ),
        Case(
            (randn(g, 2, 6, 3), randn(g, 2, 6, 3), randn(g, 2, 6, 2), band, 2),
            {"causal": True},
            check_grad=True,
            label="gradients: q, k (2, 6, 3), v (2, 6, 2), block_size=2, causal=True",
        ),
        # Scores beyond +-100 overflow exp in float32 unless each row's maximum is subtracted first; the
        # weights are then nearly one-hot, so float32 rounding of the scores stays far inside the tolerances.
        Case(
            (
                randn(g, 2, 9, 4, scale=100.0),
                randn(g, 2, 9, 4),
                randn(g, 2, 9, 3),
                torch.tensor([[True, False, True], [True, True, False], [False, True, True]]),
                3,
            ),
            label="large scores (q x 100): q, k (2, 9, 4), v (2, 9, 3), block_size=3, layout [[1,0,1],[1,1,0],[0,1,1]]",
        ),
    ]


EMPTY = "if not key_blocks:\n    outputs.append(torch.zeros(*q.shape[:-2], len(q_idx), v.shape[-1]))\n    continue"
K_IDX = "k_idx = torch.cat([torch.arange(kb * block_size, min((kb + 1) * block_size, n_keys)) for kb in key_blocks])"
CAUSAL = "if causal:\n    allowed = allowed & (k_idx[None, :] <= q_idx[:, None])"
MASK_FN = "if mask_fn is not None:\n    allowed = allowed & mask_fn(q_idx[:, None], k_idx[None, :])"
ATTEND = (
    "outputs.append(scaled_dot_product_attention(q[..., q_idx, :], k.index_select(-2, k_idx), "
    "v.index_select(-2, k_idx), allowed, scale=scale))"
)
KEY_BLOCKS = "key_blocks = layout[qb].nonzero().flatten().tolist()"
PER_TILE = """
out = 0
for kb in key_blocks:
    k_idx = torch.arange(kb * block_size, min((kb + 1) * block_size, n_keys))
    allowed = torch.ones(len(q_idx), len(k_idx), dtype=torch.bool)
    if causal:
        allowed = allowed & (k_idx[None, :] <= q_idx[:, None])
    if mask_fn is not None:
        allowed = allowed & mask_fn(q_idx[:, None], k_idx[None, :])
    out = out + scaled_dot_product_attention(q[..., q_idx, :], k.index_select(-2, k_idx),
                                             v.index_select(-2, k_idx), allowed, scale=scale)
outputs.append(out)
"""
DENSE = """
rows, cols = torch.arange(n_queries)[:, None], torch.arange(n_keys)[None, :]
allowed = layout[rows // block_size, cols // block_size]
if causal:
    allowed = allowed & (cols <= rows)
if mask_fn is not None:
    allowed = allowed & mask_fn(rows, cols)
return scaled_dot_product_attention(q, k, v, allowed, scale=scale)
"""
NAIVE_EXP = """
scores = q[..., q_idx, :] @ k.index_select(-2, k_idx).transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
weights = torch.exp(scores).masked_fill(~allowed, 0.0)
total = weights.sum(dim=-1, keepdim=True)
outputs.append(torch.where(total > 0, weights / total, 0.0) @ v.index_select(-2, k_idx))
"""
NAN_ROWS = """
scores = q[..., q_idx, :] @ k.index_select(-2, k_idx).transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
outputs.append(torch.softmax(scores.masked_fill(~allowed, float('-inf')), dim=-1) @ v.index_select(-2, k_idx))
"""

register(
    Exercise(
        name="block_sparse_attention",
        lesson=LESSON,
        reference=block_sparse_attention,
        cases=_block_cases,
        mistakes=catalogue(
            LESSON,
            "block_sparse_attention",
            (
                "softmax_per_tile",
                "the softmax was normalised inside each tile, so every tile's weights sum to 1; normalise each "
                "query's row over ALL the keys of all its visited tiles (gather them, then one softmax).",
                edit(
                    "\n".join(
                        [
                            K_IDX,
                            "allowed = torch.ones(len(q_idx), len(k_idx), dtype=torch.bool)",
                            CAUSAL,
                            MASK_FN,
                            ATTEND,
                        ]
                    ),
                    PER_TILE,
                ),
            ),
            (
                "partial_tiles_skipped",
                "a tile that is only partly allowed (the diagonal tile under causal) must still be visited, "
                "with its forbidden pairs masked: skip only the tiles the layout marks False.",
                edit(
                    KEY_BLOCKS,
                    "key_blocks = [kb for kb in layout[qb].nonzero().flatten().tolist() if not causal or kb < qb]",
                ),
            ),
            (
                "last_block_dropped",
                "when block_size does not divide the length, the last block is shorter but still there: loop over "
                "ceil(L / block_size) blocks (the layout's rows), cutting the last one at L.",
                edit("for qb in range(layout.shape[0]):", "for qb in range(n_queries // block_size):"),
                edit(
                    KEY_BLOCKS,
                    "key_blocks = [kb for kb in layout[qb].nonzero().flatten().tolist() if kb < n_keys // block_size]",
                ),
            ),
            (
                "keys_cut_at_n_queries",
                "cut the last key block at the number of keys S = k.shape[-2], not at the number of queries: "
                "L and S may differ.",
                edit(K_IDX, K_IDX.replace("n_keys", "n_queries")),
            ),
            (
                "tile_not_masked",
                "the layout only says which tiles to visit; inside a visited tile, still hide the pairs that causal "
                "(j > i) or mask_fn(i, j) == False forbid.",
                edit(CAUSAL, ""),
                edit(MASK_FN, ""),
            ),
            (
                "nan_for_rows_without_keys",
                "a query with no allowed key (an empty layout row, or mask_fn hiding all its keys) must get zero "
                "weights and a zero output, not NaN: use the course's softmax (attention_course.softmax) or "
                "scaled_dot_product_attention.",
                edit(ATTEND, NAN_ROWS),
            ),
            (
                "empty_row_not_handled",
                "a query block whose layout row is empty visits no key: its outputs are zeros of shape (..., rows, d_v) "
                "(append them and continue) instead of attention over nothing.",
                edit(EMPTY, ""),
            ),
            (
                "empty_row_width_d_k",
                "the zero output of an empty layout row has d_v = v.shape[-1] columns, like every other output row, "
                "not d_k = q.shape[-1].",
                edit(
                    "outputs.append(torch.zeros(*q.shape[:-2], len(q_idx), v.shape[-1]))",
                    "outputs.append(torch.zeros(*q.shape[:-2], len(q_idx), q.shape[-1]))",
                ),
            ),
            (
                "scale_ignored",
                "when `scale` is given, the scores are multiplied by it instead of 1 / sqrt(d_k): pass it on.",
                edit(ATTEND, ATTEND.replace(", scale=scale", "")),
            ),
            (
                "visits_every_tile",
                "skip the tiles the layout marks False: gather only the key blocks of the query block's layout row, so "
                "memory and time grow with the visited tiles, not with the sequence length (masking the other tiles "
                "after computing them gives the right numbers at the dense cost).",
                edit(KEY_BLOCKS, "key_blocks = list(range(layout.shape[1]))"),
                edit(
                    "allowed = torch.ones(len(q_idx), len(k_idx), dtype=torch.bool)",
                    "allowed = layout[qb][k_idx // block_size][None, :].expand(len(q_idx), -1)",
                ),
            ),
            (
                "dense_attention",
                "the point of block-sparse attention is to never build the L x S scores or mask: loop over the "
                "query blocks and gather only the key tiles the layout marks, so memory grows with the visited tiles.",
                edit("outputs = []", DENSE),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit("return torch.cat(outputs, dim=-2)", "return torch.cat(outputs, dim=-2).detach()"),
            ),
            (
                "causal_inside_the_block",
                "with causal=True compare the tokens' positions in the sequence (k_idx <= q_idx), not their offsets "
                "inside their blocks: a key in an earlier block is in the past whatever its offset.",
                edit(
                    CAUSAL,
                    "if causal:\n    allowed = allowed & (k_idx[None, :] % block_size <= q_idx[:, None] % block_size)",
                ),
            ),
            (
                "layout_read_by_column",
                "layout[I, J] says whether query block I reads key block J: take query block I's key blocks from "
                "its row, layout[I], not from the column layout[:, I].",
                edit(KEY_BLOCKS, "key_blocks = layout[:, qb].nonzero().flatten().tolist()"),
            ),
            (
                "softmax_without_max_subtraction",
                "exp of a score above ~88 overflows float32 to inf, and inf / inf is NaN: subtract each row's maximum "
                "before exp (the scores' shift cancels in the ratio), or use torch.softmax or the course's softmax.",
                edit(ATTEND, NAIVE_EXP),
            ),
        ),
    )
)
