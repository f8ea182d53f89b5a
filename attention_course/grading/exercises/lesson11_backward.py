"""Lesson 11 exercise: FlashAttention-2's tiled backward pass (dQ, dK, dV from the saved log-sum-exp).

The reference is the package's ``tiled_attention_backward``; ``tests/test_flash_backward_exercise.py``
shows that it equals autograd through PyTorch's ``scaled_dot_product_attention`` on every case
below (float32, 1e-5), so a learner is graded against SDPA's gradients. (Autograd through SDPA is
not the reference itself because it builds the (L, S) matrix, which the allocation case forbids.)

Each catalogued mistake is an edit of the solution's function (``grading/edits.py``): the line its
hint names, changed.
"""

from __future__ import annotations

import torch

from ...flash import tiled_attention, tiled_attention_backward
from ..edits import catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "11_flash_attention"


def _problem(
    generator: torch.Generator,
    lead: tuple[int, ...],
    n_queries: int,
    n_keys: int,
    d_k: int,
    d_v: int,
    causal: bool,
    block_q: int,
    block_k: int,
    spread: float = 1.0,
) -> tuple[tuple, dict]:
    """Inputs of one case: q, k, v, the forward's out and lse, and a gradient of the output."""
    q = torch.randn(*lead, n_queries, d_k, generator=generator) * spread
    k = torch.randn(*lead, n_keys, d_k, generator=generator) * spread
    v = torch.randn(*lead, n_keys, d_v, generator=generator)
    grad_out = torch.randn(*lead, n_queries, d_v, generator=generator)
    out, lse = tiled_attention(q, k, v, causal=causal, block_q=block_q, block_k=block_k)
    return (q, k, v, out, lse, grad_out), {"causal": causal, "block_q": block_q, "block_k": block_k}


def _backward_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(1118)
    # The last case holds 2 x 256 x 256 scores: 512 KiB as one float32 tensor. Its inputs and
    # gradients are 32 KiB each and a 32 x 32 tile of scores 8 KiB, so 128 KiB separates building
    # the matrix from working tile by tile.
    big_args, big_kwargs = _problem(generator, (2,), 256, 256, 16, 16, True, 32, 32)
    # Tiling the queries alone (each query tile against all S keys at once) stays under that limit.
    # With 64 queries, 1024 keys, d = 4 and tiles of 16 x 16, one query tile's scores over every
    # key take 64 KiB, a tile 1 KiB, k, v, dk or dv 16 KiB (32 KiB as float64 copies): 48 KiB
    # separates the key-tile loop from the strip.
    strip_args, strip_kwargs = _problem(generator, (), 64, 1024, 4, 4, False, 16, 16)
    # Key tiles of 3 against query tiles of 4: the key tiles at 3 and 9 start exactly at a query
    # tile's last query (3 and 9), which a causal skip of `j >= last query` wrongly drops.
    ragged_args, ragged_kwargs = _problem(generator, (2,), 10, 10, 4, 4, True, 4, 3)
    return [
        Case(
            *_problem(generator, (2,), 8, 8, 4, 4, False, 4, 4),
            label="q, k, v (2, 8, 4), causal=False, block_q=4, block_k=4 (square tiles, no ragged tile)",
        ),
        Case(
            *_problem(generator, (2, 3), 10, 10, 4, 4, True, 4, 4),
            label="q, k, v (2, 3, 10, 4), causal=True, block_q=4, block_k=4 (a ragged last tile of 2)",
        ),
        Case(
            *_problem(generator, (2,), 7, 11, 8, 5, False, 3, 4, spread=2.0),
            label="q (2, 7, 8), k (2, 11, 8), v (2, 11, 5), causal=False, block_q=3, block_k=4 (L != S, d_v != d_k)",
        ),
        Case(
            *_problem(generator, (1, 2), 9, 13, 4, 4, True, 4, 5),
            label="q (1, 2, 9, 4), k and v (1, 2, 13, 4), causal=True, block_q=4, block_k=5 (L != S)",
        ),
        Case(
            big_args,
            big_kwargs,
            max_alloc_bytes=128 * 1024,
            label="q, k, v (2, 256, 16), causal=True, block_q=32, block_k=32, never allocating an (L, S) matrix",
        ),
        Case(
            ragged_args,
            ragged_kwargs,
            label="q, k, v (2, 10, 4), causal=True, block_q=4, block_k=3 (a key tile starts at a query tile's "
            "last query)",
        ),
        Case(
            strip_args,
            strip_kwargs,
            max_alloc_bytes=48 * 1024,
            label="q (64, 4), k and v (1024, 4), block_q=16, block_k=16: no tensor as large as one query tile's "
            "scores over all 1024 keys (walk over the key tiles)",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Catalogued mistakes
# ---------------------------------------------------------------------------------------------


register(
    Exercise(
        name="tiled_attention_backward",
        lesson=LESSON,
        reference=tiled_attention_backward,
        cases=_backward_cases,
        mistakes=catalogue(
            LESSON,
            "tiled_attention_backward",
            (
                "delta_term_forgotten",
                "dS = P * (dP - D) with D_i = rowsum(dO * O): the softmax's Jacobian subtracts each row's "
                "weighted mean of dP; dS = P * dP leaves it out.",
                edit("ds = p * (dp - delta[..., i : i + block_q, :])", "ds = p * dp"),
            ),
            (
                "p_without_scale",
                "the saved lse is the log-sum-exp of the *scaled* scores: recompute P = exp(Q K^T / sqrt(d_k) - lse), "
                "with the 1 / sqrt(d_k).",
                edit("s = q_tile @ k_tile.transpose(-2, -1) * scale", "s = q_tile @ k_tile.transpose(-2, -1)"),
            ),
            (
                "p_without_lse",
                "P must be the forward's weights, normalised over all keys: exp(S - lse) with the saved lse, not a "
                "softmax over one key tile (which sums to 1 inside every tile).",
                edit("p = torch.exp(s - lse[..., i : i + block_q, None])", "p = torch.softmax(s, dim=-1)"),
            ),
            (
                "dq_dk_transposes_swapped",
                "dQ gets dS @ K (shape block_q x d) and dK gets dS^T @ Q (shape block_k x d): the transpose belongs "
                "to dK, since dS is indexed (query, key).",
                edit(
                    "dq[..., i : i + block_q, :] += ds @ k_tile * scale",
                    "dq[..., i : i + block_q, :] += ds.transpose(-2, -1) @ k_tile * scale",
                ),
                edit(
                    "dk[..., j : j + block_k, :] += ds.transpose(-2, -1) @ q_tile * scale",
                    "dk[..., j : j + block_k, :] += ds @ q_tile * scale",
                ),
            ),
            (
                "causal_mask_missing_in_backward",
                "with causal=True the tiles on the diagonal must mask keys j > i in the backward too (S = -inf, so "
                "P = 0 there); otherwise future keys get gradient.",
                edit(
                    """
                if causal:
                    s = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float("-inf"))
                """,
                    "",
                ),
            ),
            (
                "scale_applied_twice",
                "the 1 / sqrt(d_k) appears once per path: if Q is already scaled for the scores, dK += dS^T @ Q_scaled "
                "needs no second scale factor.",
                edit(
                    "q_tile, do_tile = q[..., i : i + block_q, :], grad_out[..., i : i + block_q, :]",
                    "q_tile, do_tile = q[..., i : i + block_q, :] * scale, grad_out[..., i : i + block_q, :]",
                ),
                edit("s = q_tile @ k_tile.transpose(-2, -1) * scale", "s = q_tile @ k_tile.transpose(-2, -1)"),
            ),
            (
                "mask_from_tile_indices",
                "inside a tile compare absolute positions, key j + c against query i + r "
                "(torch.arange(j, j + n) > rows), not the key's index within its tile.",
                edit(
                    's = s.masked_fill(torch.arange(j, j + s.shape[-1]) > rows, float("-inf"))',
                    's = s.masked_fill(torch.arange(s.shape[-1]) > rows, float("-inf"))',
                ),
            ),
            (
                "queries_tiled_keys_not",
                "walk over the key tiles of block_k keys too: a query tile against all S keys at once holds a "
                "block_q x S strip of P and dS, which the tiled backward exists to avoid.",
                edit("scale = 1 / math.sqrt(q.shape[-1])", "scale = 1 / math.sqrt(q.shape[-1])\nblock_k = k.shape[-2]"),
            ),
            (
                "ragged_last_tile_dropped",
                "when L or S is not a multiple of the tile size, the last tile is shorter, not absent: loop with "
                "range(0, L, block_q) and let the slice q[..., i:i + block_q, :] be short.",
                edit("range(0, q.shape[-2], block_q)", "range(0, q.shape[-2] - block_q + 1, block_q)"),
                edit("range(0, k.shape[-2], block_k)", "range(0, k.shape[-2] - block_k + 1, block_k)"),
            ),
        ),
    )
)
