r"""Flash-attention tiling on the CPU: online softmax and a tiled forward/backward (lesson 11).

FlashAttention (Dao et al., 2022) computes exact attention without ever materialising the
$N \times N$ score matrix. Queries, keys and values are cut into tiles; each query tile walks over
the key tiles and keeps, per query row, three running quantities:

* $m$, the largest score seen so far;
* $\ell = \sum_j e^{s_j - m}$, the softmax denominator *relative to* $m$;
* $o = \sum_j e^{s_j - m} v_j$, the un-normalised output, relative to the same $m$.

When a new tile raises the maximum from $m$ to $m' = \max(m, \max_j s_j)$, everything computed
relative to the old maximum is multiplied by $\alpha = e^{m - m'}$:

$$\ell \leftarrow \alpha\,\ell + \sum_{j \in \text{tile}} e^{s_j - m'}, \qquad
o \leftarrow \alpha\, o + \sum_{j \in \text{tile}} e^{s_j - m'} v_j .$$

After the last tile, $o / \ell$ is exactly $\mathrm{softmax}(s)\,V$, and $m + \log \ell$ is the
row's log-sum-exp, which is all the backward pass needs to recompute the weights tile by tile.
Peak memory is $O(N d + B_q B_k)$ instead of $O(N^2)$.

Like FlashAttention-2 on a GPU, which gives each query tile its own thread block, the query tiles
are independent work items: one per core at a time, longest first, each doing single-threaded
operations (``_for_each_query_tile``). Each tile then runs start to finish on one core, with no
hand-over between cores inside an operation; the calling thread's few operations are
single-threaded too (``_caller_single_threaded``).

Like the GPU kernels, the forward pass works in base 2: each query tile is scaled by
$\log_2 e / \sqrt{d_k}$ once, so that $e^{s - m} = 2^{s \log_2 e - m \log_2 e}$ becomes one ``exp2``
per score (three times cheaper than ``exp`` on this CPU); $\ell$ and $o$ are unchanged by this,
and the log-sum-exp is converted back to base $e$ at the end.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ._environment import scoped_torch_threads
from ._validation import require_count, require_float, require_min_rank, require_qkv, require_tensor, shape_of

#: Default tile sizes of ``tiled_attention``, chosen with ``benchmarks/bench_flash.py`` (N = 1k-16k,
#: d = 64, 8 heads, the course's 2-core CPU). One tile of scores for 8 heads is
#: 8 * 128 * 256 * 4 B = 1 MiB. Larger query tiles leave too few tiles to share between cores;
#: much smaller ones pay more Python per tile.
BLOCK_Q = 128
BLOCK_K = 256
LOG2_E = 1.0 / math.log(2.0)
LN_2 = math.log(2.0)


def _safe_shift(row_max: Tensor) -> Tensor:
    """The row maximum to subtract, with ``-inf`` (a row with no finite score yet) replaced by 0."""
    return torch.where(torch.isneginf(row_max), torch.zeros_like(row_max), row_max)


def online_softmax(blocks: Sequence[Tensor]) -> Tensor:
    r"""Softmax over the concatenation of score blocks, reading the blocks one at a time.

    One pass keeps a running maximum $m$ and a running sum $\ell = \sum e^{x - m}$; whenever a
    block raises $m$ to $m'$, the sum so far is rescaled by $e^{m - m'}$. A second pass turns each
    block into its share of the softmax, $e^{x - m} / \ell$. A row whose scores are all ``-inf``
    gets zero weights (the course's convention, see ``softmax``).

    Args:
        blocks: a non-empty sequence of floating-point tensors ``(..., n_b)`` that share their
            leading dimensions and dtype; together they hold ``n = sum(n_b)`` scores per row.

    Returns:
        ``(..., n)``, equal to ``softmax(torch.cat(blocks, dim=-1), dim=-1)``.
    """
    if isinstance(blocks, Tensor) or not isinstance(blocks, Sequence) or len(blocks) == 0:
        raise TypeError(f"blocks must be a non-empty list of tensors (..., n_b), got {type(blocks).__name__}")
    for b, block in enumerate(blocks):
        require_float(f"blocks[{b}]", block)
        require_min_rank(f"blocks[{b}]", block, 1, "(..., n_b)")
        if block.shape[:-1] != blocks[0].shape[:-1] or block.dtype != blocks[0].dtype:
            raise ValueError(
                f"every block must share the leading dimensions and dtype of blocks[0] {shape_of(blocks[0])} "
                f"{blocks[0].dtype}, got blocks[{b}] {shape_of(block)} {block.dtype}"
            )
    running_max = torch.full((*blocks[0].shape[:-1], 1), float("-inf"), dtype=blocks[0].dtype)
    running_sum = torch.zeros_like(running_max)
    for block in blocks:
        new_max = torch.maximum(running_max, block.amax(dim=-1, keepdim=True))
        shift = _safe_shift(new_max)
        # Rescale the sum so far from the old maximum to the new one, then add this block's terms.
        running_sum = running_sum * torch.exp(running_max - shift) + torch.exp(block - shift).sum(-1, keepdim=True)
        running_max = new_max
    shift = _safe_shift(running_max)
    denominator = running_sum.clamp_min(torch.finfo(running_sum.dtype).tiny)
    return torch.cat([torch.exp(block - shift) / denominator for block in blocks], dim=-1)


def merge_attention_partials(out_a: Tensor, lse_a: Tensor, out_b: Tensor, lse_b: Tensor) -> tuple[Tensor, Tensor]:
    r"""Combine attention over two disjoint sets of keys into attention over their union.

    Each part is normalised over its own keys; its log-sum-exp says how much total weight its keys
    carry. With $\mathrm{lse} = \log(e^{\mathrm{lse}_a} + e^{\mathrm{lse}_b})$, the merged output is
    $e^{\mathrm{lse}_a - \mathrm{lse}}\,o_a + e^{\mathrm{lse}_b - \mathrm{lse}}\,o_b$ (how split-KV
    decoding and ring attention combine partial results). A part with no keys has ``lse = -inf``.

    Args:
        out_a: ``(..., L, d_v)``, attention of the queries over the keys of part a.
        lse_a: ``(..., L)``, log-sum-exp of the scaled scores of part a.
        out_b: ``(..., L, d_v)``; lse_b: ``(..., L)``, the same for part b.

    Returns:
        ``out (..., L, d_v)`` and ``lse (..., L)`` over both parts.
    """
    for name, t in (("out_a", out_a), ("lse_a", lse_a), ("out_b", out_b), ("lse_b", lse_b)):
        require_float(name, t)
    if out_a.shape != out_b.shape or lse_a.shape != lse_b.shape or out_a.shape[:-1] != lse_a.shape:
        raise ValueError(
            "out_a and out_b must be (..., L, d_v) and lse_a and lse_b (..., L), got "
            f"out_a {shape_of(out_a)}, lse_a {shape_of(lse_a)}, out_b {shape_of(out_b)}, lse_b {shape_of(lse_b)}"
        )
    lse = torch.logaddexp(lse_a, lse_b)
    safe_lse = _safe_shift(lse)  # both parts empty: both weights are 0, not NaN
    weight_a = torch.exp(lse_a - safe_lse).unsqueeze(-1)
    weight_b = torch.exp(lse_b - safe_lse).unsqueeze(-1)
    return weight_a * out_a + weight_b * out_b, lse


# ---------------------------------------------------------------------------------------------
# Tiles
# ---------------------------------------------------------------------------------------------


def _key_tiles(q_start: int, q_stop: int, n_keys: int, block_k: int, causal: bool) -> Iterator[tuple[int, int, bool]]:
    """The key tiles ``[k_start, k_stop)`` that queries ``[q_start, q_stop)`` must visit.

    Causal (top-left aligned, query ``i`` sees keys ``j <= i``): a tile that starts after the
    last query is skipped whole; a tile that reaches past the first query straddles the diagonal
    and needs a mask (the third item); every tile left of the diagonal is used unmasked.
    """
    stop = min(n_keys, q_stop) if causal else n_keys
    for k_start in range(0, stop, block_k):
        k_stop = min(k_start + block_k, n_keys)
        yield k_start, k_stop, causal and k_stop - 1 > q_start


def visited_tiles(n_queries: int, n_keys: int, block_q: int, block_k: int, causal: bool) -> list[tuple[int, int, bool]]:
    """The tiles the tiled loops visit, each once: ``(query tile index, key tile index, masked)``.

    Without ``causal`` every one of the ``ceil(L / block_q) * ceil(S / block_k)`` tiles. With it,
    tiles wholly above the diagonal (every key after every query) are never visited, tiles wholly
    below it are visited without a mask, and only the tiles the diagonal crosses carry one.

    Args:
        n_queries, n_keys: ``L`` and ``S``; block_q, block_k: the tile sizes; causal: as in ``tiled_attention``.

    Returns:
        one ``(i, j, masked)`` per visited tile, listed query tiles outer (the loops run query tiles
        concurrently, see ``_for_each_query_tile``).
    """
    require_count("block_q", block_q)
    require_count("block_k", block_k)
    return [
        (q_start // block_q, k_start // block_k, masked)
        for q_start in range(0, n_queries, block_q)
        for k_start, _, masked in _key_tiles(q_start, min(q_start + block_q, n_queries), n_keys, block_k, causal)
    ]


def _tile_scores(q_tile: Tensor, k_t: Tensor, q_start: int, k_start: int, k_stop: int, masked: bool) -> Tensor:
    """Scores ``(B, bq, bk)`` of pre-scaled queries ``q_tile (B, bq, d)`` against the keys ``k_t (B, d, S)`` (transposed).

    With ``masked``, keys after their query (``j > i``) get ``-inf``.
    """
    scores = torch.bmm(q_tile, k_t[:, :, k_start:k_stop])
    if masked:
        rows = torch.arange(q_start, q_start + q_tile.shape[1]).unsqueeze(1)
        cols = torch.arange(k_start, k_stop)
        scores.masked_fill_(cols > rows, float("-inf"))
    return scores


def _online_update(running_max: Tensor, running_sum: Tensor, acc: Tensor, scores: Tensor, v_tile: Tensor) -> Tensor:
    r"""Fold one tile into the running state and return the new maximum $m'$ ``(B, bq, 1)``.

    $\ell$ ``(B, bq, 1)`` and $o$ ``(B, bq, d_v)`` are updated in place. ``scores (B, bq, bk)`` are
    in base 2 ($s \log_2 e$, and so is $m$) and are overwritten with $2^{s - m'}$. A row's first
    tile always holds an allowed key (key 0 for causal), so $m'$ is finite and $\alpha = 2^{m - m'}$
    is a number (0 on the first tile, where $m = -\infty$).
    """
    new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
    alpha = torch.exp2(running_max - new_max)  # how much the old maximum overstated the row
    probs = scores.sub_(new_max).exp2_()  # 2^{s - m'}, in place: no second tile-sized buffer
    running_sum.mul_(alpha).add_(probs.sum(dim=-1, keepdim=True))
    acc.mul_(alpha).baddbmm_(probs, v_tile)  # o <- alpha o + P V
    return new_max


_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, threads, the pool) of the last call


def _single_threaded_worker() -> None:
    """Start a tile thread with one torch thread, for its matrix products (MKL) too.

    PyTorch sets a new thread's count only at its first parallel loop; a small tile's first
    operations have none, and its first matrix product would start a team of OpenMP threads inside
    the tile thread.
    """
    torch.set_num_threads(1)  # the caller holds 1 while tiles run (``_caller_single_threaded``): no change there


def _query_tile_pool(n_threads: int) -> ThreadPoolExecutor:
    """A pool of ``n_threads`` threads kept between calls: a fresh thread's first matrix product costs milliseconds.

    Made anew when the thread count changes, or in a child process after ``fork`` (which copies
    the pool object but not its threads).
    """
    global _pool
    if _pool is None or _pool[:2] != (os.getpid(), n_threads):
        _pool = (
            os.getpid(),
            n_threads,
            ThreadPoolExecutor(n_threads, thread_name_prefix="query-tile", initializer=_single_threaded_worker),
        )
    return _pool[2]


@contextmanager
def _caller_single_threaded() -> Iterator[int]:
    """Run the block with one torch thread in the calling thread; yield the caller's thread count.

    The tiled passes compute on their own threads (``_for_each_query_tile``), so the few operations
    the calling thread does (checking the inputs, summing the threads' gradients) stay
    single-threaded too: a multi-threaded operation there would leave OpenMP's idle thread spinning
    on a core for milliseconds after it (``measure.background_cpu_ms``), beside the tile threads.
    """
    n_threads = torch.get_num_threads()
    with scoped_torch_threads(1):
        yield n_threads


def _for_each_query_tile(work: Callable[[int], None], n_queries: int, block_q: int, n_threads: int) -> None:
    """Call ``work(q_start)`` for every query tile, ``n_threads`` tiles at once.

    Call it with one torch thread (``_caller_single_threaded``): each tile then runs on one thread
    with single-threaded torch operations, and no operation waits for a second core, which on a
    shared machine, with a neighbour on that core, can cost a scheduler time slice per operation. The
    last tiles go first, since under a causal mask they have the most keys, and a free thread takes
    the next tile, so the cores finish together. The threads run in the caller's grad mode, and a
    worker's exception is re-raised here.
    """
    starts = list(range(0, n_queries, block_q))[::-1]
    if n_threads == 1 or len(starts) <= 1:
        for q_start in starts:
            work(q_start)
        return
    grad_mode = torch.is_grad_enabled()  # thread-local: a new thread would start with gradients on

    def in_grad_mode(q_start: int) -> None:
        with torch.set_grad_enabled(grad_mode):
            work(q_start)

    for _ in _query_tile_pool(n_threads).map(in_grad_mode, starts):
        pass


def _flatten_qkv(q: Tensor, k: Tensor, v: Tensor, block_q: object, block_k: object) -> tuple[Tensor, ...]:
    """Validate, broadcast the leading dimensions and flatten them into one batch axis ``B``."""
    require_qkv(q, k, v)
    require_count("block_q", block_q)
    require_count("block_k", block_k)
    try:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the leading dimensions of q, k and v must broadcast, got q {shape_of(q)}, k {shape_of(k)}, v {shape_of(v)}"
        ) from None
    return tuple(t.expand(*batch, *t.shape[-2:]).reshape(math.prod(batch), *t.shape[-2:]) for t in (q, k, v))


def _tiled_forward(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, block_q: int, block_k: int, n_threads: int
) -> tuple[Tensor, Tensor]:
    """Forward pass on flattened ``q (B, L, d)``, ``k (B, S, d)``, ``v (B, S, d_v)``: ``out (B, L, d_v)``, ``lse (B, L)``.

    ``n_threads`` query tiles run at once; call it inside ``_caller_single_threaded``.
    """
    n_batch, n_queries, d_k = q.shape
    n_keys, d_v = k.shape[1], v.shape[2]
    k_t = k.transpose(1, 2)  # (B, d, S): each tile's K^T is a slice of it
    out = torch.empty(n_batch, n_queries, d_v, dtype=q.dtype)
    lse = torch.empty(n_batch, n_queries, dtype=q.dtype)

    def query_tile(q_start: int) -> None:
        q_stop = min(q_start + block_q, n_queries)
        # Scaled here, by the tile's thread, not all of Q up front by the caller's; base-2 scores.
        q_tile = q[:, q_start:q_stop] * (LOG2_E / math.sqrt(d_k))
        running_max = torch.full((n_batch, q_stop - q_start, 1), float("-inf"), dtype=q.dtype)
        running_sum = torch.zeros_like(running_max)
        acc = torch.zeros(n_batch, q_stop - q_start, d_v, dtype=q.dtype)
        for k_start, k_stop, masked in _key_tiles(q_start, q_stop, n_keys, block_k, causal):
            scores = _tile_scores(q_tile, k_t, q_start, k_start, k_stop, masked)
            running_max = _online_update(running_max, running_sum, acc, scores, v[:, k_start:k_stop])
        # Divide once, at the end; a row with no keys (S = 0) keeps a zero output and lse = -inf.
        torch.div(acc, running_sum.clamp_min(torch.finfo(q.dtype).tiny), out=out[:, q_start:q_stop])
        lse[:, q_start:q_stop] = ((running_max + running_sum.log2()) * LN_2).squeeze(-1)

    _for_each_query_tile(query_tile, n_queries, block_q, n_threads)
    return out, lse


def tiled_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool = False,
    block_q: int = BLOCK_Q,
    block_k: int = BLOCK_K,
) -> tuple[Tensor, Tensor]:
    r"""Exact attention computed tile by tile, never holding more than a ``block_q × block_k`` tile of scores.

    For each tile of ``block_q`` queries, walk over the tiles of ``block_k`` keys, fold each into a
    running max, sum and output (``_online_update``), and divide by the sum once at the end.
    With ``causal``, key tiles entirely after a query tile are skipped and the tiles on the
    diagonal are masked. All heads and batch entries go through one batched matmul per tile.

    Args:
        q: queries ``(..., L, d_k)``.
        k: keys ``(..., S, d_k)``.
        v: values ``(..., S, d_v)``; leading dimensions broadcast.
        causal: query ``i`` sees keys ``j <= i`` only (top-left aligned, like PyTorch's ``is_causal``).
        block_q: queries per tile (any positive int; the last tile may be shorter).
        block_k: keys per tile.

    Returns:
        ``output (..., L, d_v)``, equal to ``scaled_dot_product_attention(q, k, v, causal=causal)``,
        and ``lse (..., L)``, the log-sum-exp of each query's scaled (and masked) scores.
    """
    with _caller_single_threaded() as n_threads:
        q_flat, k_flat, v_flat = _flatten_qkv(q, k, v, block_q, block_k)
        out, lse = _tiled_forward(q_flat, k_flat, v_flat, bool(causal), block_q, block_k, n_threads)
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    return out.reshape(*batch, q.shape[-2], v.shape[-1]), lse.reshape(*batch, q.shape[-2])


@dataclass(frozen=True)
class TileStep:
    """The running state of one query tile right after it folded in one key tile (for lesson 11's widget).

    Attributes:
        q_start, q_stop, k_start, k_stop: the tile's query rows and key columns.
        running_max: ``(q_stop - q_start,)``, $m$ per query row.
        running_sum: ``(q_stop - q_start,)``, $\\ell$ per query row.
        partial_output: ``(q_stop - q_start, d_v)``, $o / \\ell$: attention over the keys seen so far.
    """

    q_start: int
    q_stop: int
    k_start: int
    k_stop: int
    running_max: Tensor
    running_sum: Tensor
    partial_output: Tensor


def tiled_attention_steps(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = False, block_q: int = BLOCK_Q, block_k: int = BLOCK_K
) -> list[TileStep]:
    """Every intermediate state of ``tiled_attention`` on one head, tile by tile.

    Args:
        q: ``(L, d_k)``; k: ``(S, d_k)``; v: ``(S, d_v)``; causal, block_q, block_k: as in ``tiled_attention``.

    Returns:
        one ``TileStep`` per visited tile, in the order they are computed (query tiles outer, key tiles inner).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, t)
        if t.dim() != 2:
            raise ValueError(f"{name} must be one head's 2-D (positions, features) matrix, got shape {shape_of(t)}")
    q_flat, k_flat, v_flat = _flatten_qkv(q, k, v, block_q, block_k)
    q_scaled = q_flat * (LOG2_E / math.sqrt(q.shape[-1]))
    steps = []
    for q_start in range(0, q.shape[0], block_q):
        q_stop = min(q_start + block_q, q.shape[0])
        running_max = torch.full((1, q_stop - q_start, 1), float("-inf"), dtype=q.dtype)
        running_sum = torch.zeros_like(running_max)
        acc = torch.zeros(1, q_stop - q_start, v.shape[-1], dtype=q.dtype)
        for k_start, k_stop, masked in _key_tiles(q_start, q_stop, k.shape[0], block_k, bool(causal)):
            scores = _tile_scores(q_scaled[:, q_start:q_stop], k_flat.transpose(1, 2), q_start, k_start, k_stop, masked)
            running_max = _online_update(running_max, running_sum, acc, scores, v_flat[:, k_start:k_stop])
            steps.append(
                TileStep(
                    q_start,
                    q_stop,
                    k_start,
                    k_stop,
                    running_max[0, :, 0] * LN_2,
                    running_sum[0, :, 0].clone(),
                    (acc / running_sum)[0],
                )
            )
    return steps


# ---------------------------------------------------------------------------------------------
# Backward: recompute the weights tile by tile from the saved log-sum-exp
# ---------------------------------------------------------------------------------------------


def _tiled_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    grad_out: Tensor,
    causal: bool,
    block_q: int,
    block_k: int,
    n_threads: int,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Gradients of flattened ``q (B, L, d)``, ``k (B, S, d)``, ``v (B, S, d_v)``, without an N×N matrix.

    Per tile: $P = e^{S - \mathrm{lse}}$ (the forward's weights, recomputed),
    $dV \mathrel{+}= P^\top dO$, $dP = dO\,V^\top$, $dS = P \odot (dP - \delta)$ with
    $\delta_i = \sum_c dO_{ic} O_{ic}$, $dQ \mathrel{+}= dS\,K \cdot \text{scale}$,
    $dK \mathrel{+}= dS^\top Q \cdot \text{scale}$.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    k_t, v_t = k.transpose(1, 2), v.transpose(1, 2)  # (B, d, S), (B, d_v, S)
    grad_q = torch.empty_like(q)  # each query tile fills its own rows
    # Every query tile adds to every key tile's dK and dV: each thread sums into its own pair.
    grad_kv: dict[int, tuple[Tensor, Tensor]] = {}

    def query_tile(q_start: int) -> None:
        q_stop = min(q_start + block_q, q.shape[1])
        if threading.get_ident() not in grad_kv:  # only this thread writes its own entry
            grad_kv[threading.get_ident()] = (torch.zeros_like(k), torch.zeros_like(v))
        grad_k, grad_v = grad_kv[threading.get_ident()]
        # This query tile's rows: (B, bq, .)
        q_tile = q[:, q_start:q_stop] * scale
        grad_out_tile, lse_tile = grad_out[:, q_start:q_stop], lse[:, q_start:q_stop].unsqueeze(-1)
        delta_tile = (grad_out_tile * out[:, q_start:q_stop]).sum(dim=-1, keepdim=True)
        grad_q_tile = grad_q[:, q_start:q_stop].zero_()
        for k_start, k_stop, masked in _key_tiles(q_start, q_stop, k.shape[1], block_k, causal):
            probs = _tile_scores(q_tile, k_t, q_start, k_start, k_stop, masked)
            probs.sub_(lse_tile).exp_()  # (B, bq, bk)
            grad_v[:, k_start:k_stop].baddbmm_(probs.transpose(1, 2), grad_out_tile)
            grad_scores = torch.bmm(grad_out_tile, v_t[:, :, k_start:k_stop]).sub_(delta_tile).mul_(probs)
            grad_q_tile.baddbmm_(grad_scores, k[:, k_start:k_stop], alpha=scale)
            grad_k[:, k_start:k_stop].baddbmm_(grad_scores.transpose(1, 2), q_tile)

    _for_each_query_tile(query_tile, q.shape[1], block_q, n_threads)
    if not grad_kv:  # no query tiles (L = 0)
        return grad_q, torch.zeros_like(k), torch.zeros_like(v)
    grad_ks, grad_vs = zip(*grad_kv.values(), strict=True)
    return grad_q, sum(grad_ks[1:], grad_ks[0]), sum(grad_vs[1:], grad_vs[0])


def tiled_attention_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    grad_out: Tensor,
    causal: bool = False,
    block_q: int = BLOCK_Q,
    block_k: int = BLOCK_K,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""FlashAttention-2's backward pass: the gradients of ``tiled_attention``'s output, tile by tile.

    Recomputes each tile's weights $P = e^{S - \mathrm{lse}}$ from the saved log-sum-exp instead of
    storing them; with $D_i = \sum_c dO_{ic} O_{ic}$:
    $dV \mathrel{+}= P^\top dO$, $dP = dO\,V^\top$, $dS = P \odot (dP - D)$,
    $dQ \mathrel{+}= dS\,K / \sqrt{d_k}$, $dK \mathrel{+}= dS^\top Q / \sqrt{d_k}$.
    Never allocates more than one ``block_q × block_k`` tile of scores per batch entry.

    Args:
        q: ``(..., L, d_k)``; k: ``(..., S, d_k)``; v: ``(..., S, d_v)``, with the same leading dimensions.
        out: ``(..., L, d_v)`` and lse: ``(..., L)``, what ``tiled_attention(q, k, v, causal)`` returned.
        grad_out: ``(..., L, d_v)``, the gradient of the loss with respect to ``out``.
        causal, block_q, block_k: as in ``tiled_attention``.

    Returns:
        ``(grad_q, grad_k, grad_v)``, shaped like ``q``, ``k`` and ``v``.
    """
    with _caller_single_threaded() as n_threads:
        q_flat, k_flat, v_flat = _flatten_qkv(q, k, v, block_q, block_k)
        for name, t, shape in (
            ("out", out, (*q.shape[:-1], v.shape[-1])),
            ("lse", lse, q.shape[:-1]),
            ("grad_out", grad_out, (*q.shape[:-1], v.shape[-1])),
        ):
            require_float(name, t)
            if t.shape != shape or q.shape[:-2] != k.shape[:-2] or q.shape[:-2] != v.shape[:-2]:
                raise ValueError(
                    f"{name} must have shape {tuple(shape)} for q {shape_of(q)}, k {shape_of(k)} and "
                    f"v {shape_of(v)} (all with the same leading dimensions), got {shape_of(t)}"
                )
        n_batch, n_queries = q_flat.shape[:2]
        grads = _tiled_backward(
            q_flat,
            k_flat,
            v_flat,
            out.reshape(n_batch, n_queries, -1),
            lse.reshape(n_batch, n_queries),
            grad_out.reshape(n_batch, n_queries, -1).contiguous(),
            bool(causal),
            block_q,
            block_k,
            n_threads,
        )
    return tuple(g.reshape(t.shape) for g, t in zip(grads, (q, k, v), strict=True))  # type: ignore[return-value]


def flash_decoding(q: Tensor, k: Tensor, v: Tensor, n_splits: int) -> tuple[Tensor, Tensor]:
    r"""Attention of a few queries (one new token) over a long key/value cache, split along the keys.

    Flash-decoding (split-KV): the cache is cut into ``n_splits`` chunks; each chunk's attention
    ``(o_c, lse_c)`` depends on that chunk only, so the chunks can run in parallel (one GPU block
    each), and ``merge_attention_partials`` then combines them exactly. With one query per head
    there is nothing else to split: without this, a long cache is read by one block per head.

    Args:
        q: ``(..., L, d_k)``, usually ``L = 1``; k: ``(..., S, d_k)``; v: ``(..., S, d_v)``.
        n_splits: how many chunks of (nearly) equal size to cut the ``S`` keys into.

    Returns:
        ``output (..., L, d_v)`` and ``lse (..., L)``, equal to ``tiled_attention(q, k, v)``.
    """
    require_qkv(q, k, v)
    require_count("n_splits", n_splits)
    chunk = max(1, math.ceil(k.shape[-2] / n_splits))
    partials = [
        tiled_attention(q, k[..., start : start + chunk, :], v[..., start : start + chunk, :])
        for start in range(0, k.shape[-2], chunk)
    ] or [tiled_attention(q, k, v)]  # independent of one another
    out, lse = partials[0]
    for part_out, part_lse in partials[1:]:
        out, lse = merge_attention_partials(out, lse, part_out, part_lse)
    return out, lse


class TiledAttentionFunction(torch.autograd.Function):
    """Autograd for the tiled forward: saves ``q, k, v, out, lse`` (O(N d)), recomputes the weights in backward."""

    @staticmethod
    def forward(
        ctx, q: Tensor, k: Tensor, v: Tensor, causal: bool, block_q: int, block_k: int, n_threads: int
    ) -> Tensor:  # type: ignore[override]
        out, lse = _tiled_forward(q, k, v, causal, block_q, block_k, n_threads)  # inside flash_attention's one thread
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.tiling = (causal, block_q, block_k)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        causal, block_q, block_k = ctx.tiling
        with _caller_single_threaded() as n_threads:
            grads = _tiled_backward(q, k, v, out, lse, grad_out.contiguous(), causal, block_q, block_k, n_threads)
        return (*grads, None, None, None, None)


def flash_attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = False, block_q: int = BLOCK_Q, block_k: int = BLOCK_K
) -> Tensor:
    """Differentiable tiled attention: the forward of ``tiled_attention``, a tiled backward that recomputes.

    Args:
        q: ``(..., L, d_k)``; k: ``(..., S, d_k)``; v: ``(..., S, d_v)``; the rest as in ``tiled_attention``.

    Returns:
        ``output (..., L, d_v)``; gradients reach ``q``, ``k`` and ``v`` without storing the attention matrix.
    """
    with _caller_single_threaded() as n_threads:
        q_flat, k_flat, v_flat = _flatten_qkv(q, k, v, block_q, block_k)
        out = TiledAttentionFunction.apply(q_flat, k_flat, v_flat, bool(causal), block_q, block_k, n_threads)
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    return out.reshape(*batch, q.shape[-2], v.shape[-1])
