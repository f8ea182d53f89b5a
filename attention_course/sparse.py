r"""Sparse attention: let each query look at a few keys, and skip the rest of the work (lesson 10).

Dense attention compares every query with every key: $N^2$ scores, so doubling the sequence
quadruples the time and the memory. A *sparse pattern* says which (query, key) pairs are allowed;
a sparse *kernel* computes only those pairs.

- A pattern is an index predicate ``allows(i, j)`` (the "mask_mod" of PyTorch's FlexAttention):
  ``True`` where query ``i`` may attend to key ``j``. ``SparsePattern.mask()`` evaluates it on the
  full grid, giving the boolean ``(N, N)`` mask the dense reference understands;
  ``SparsePattern.layout(block_size)`` says which ``block_size × block_size`` tiles hold at least
  one allowed pair. Window, Longformer and BigBird patterns build it from block bounds alone
  (``(N / B)^2`` tiles, no pair visited); other patterns scan the pairs one block row at a time,
  never as an ``N × N`` tensor.
- ``block_sparse_attention`` visits only the tiles the layout marks, applies the element-level
  predicate inside them, and normalises each query's softmax over all the keys it visited.
- ``sliding_window_attention`` is the special case of a band: each query block reads one
  contiguous slice of keys, so its cost is $O(N \cdot w)$ instead of $O(N^2)$.

Patterns (all have causal variants, top-left aligned like ``causal_mask``):

| builder | allowed pairs | used by |
|---|---|---|
| ``sliding_window_pattern`` | $\lvert i-j\rvert \le w$ | Longformer, Mistral (causal) |
| ``dilated_window_pattern`` | $\lvert i-j\rvert \le w\,r$ and $r \mid i-j$ | Longformer (dilated heads) |
| ``strided_pattern`` | $\lvert i-j\rvert < \ell$ or $\ell \mid i-j$ | Sparse Transformer, strided |
| ``fixed_pattern`` | same block of $\ell$, or $j$ in the last $c$ of its block | Sparse Transformer, fixed |
| ``longformer_pattern`` | window, or $i$ or $j$ a global token | Longformer |
| ``bigbird_pattern`` | window, global, and random key blocks | BigBird |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validation import require_count, require_qkv, require_rank, require_tensor, shape_of
from .attention import attention_core

MaskFn = Callable[[Tensor, Tensor], Tensor]
"""``allows(q_idx, k_idx) -> bool``: broadcasting integer index tensors in, ``True`` = may attend."""


def _n_blocks(n: int, block_size: int) -> int:
    return -(-n // block_size)


def _window_allows(q_idx: Tensor, k_idx: Tensor, window: int, causal: bool) -> Tensor:
    """Key ``j`` is at most ``window`` positions from query ``i`` (and not after it when causal)."""
    offset = q_idx - k_idx  # > 0: the key is in the past
    return (offset >= 0) & (offset <= window) if causal else offset.abs() <= window


def _causal_allows(q_idx: Tensor, k_idx: Tensor) -> Tensor:
    return k_idx <= q_idx


BlockLayoutFn = Callable[[int], Tensor]
"""``block_layout(block_size) -> (n_blocks, n_blocks)`` bool: a pattern's tile layout from block bounds."""


def _block_bounds(n: int, block_size: int) -> tuple[Tensor, Tensor]:
    """First and last position of every block: two ``(n_blocks,)`` tensors (the last block may be short)."""
    first = torch.arange(_n_blocks(n, block_size)) * block_size
    return first, (first + block_size - 1).clamp_max(n - 1)


def _window_layout(n: int, block_size: int, window: int, causal: bool) -> Tensor:
    """Tiles ``(I, J)`` holding a pair within ``window`` of each other (and ``j <= i`` when causal).

    Query block ``[a, b]`` and key block ``[c, d]`` hold offsets ``i - j`` from ``a - d`` to ``b - c``;
    the tile is needed when that range meets ``[-w, w]`` (``[0, w]`` when causal). ``(N / B)^2`` work.
    """
    first, last = _block_bounds(n, block_size)
    lowest = first[:, None] - last[None, :]  # (I, J): the smallest offset i - j in the tile
    highest = last[:, None] - first[None, :]  # the largest
    low_end = 0 if causal else -window
    return (highest >= low_end) & (lowest <= window)


def _global_layout(n: int, block_size: int, window: int, is_global: Tensor, causal: bool) -> Tensor:
    """Longformer's tiles: the window's, plus the rows and columns of the blocks holding a global token."""
    layout = _window_layout(n, block_size, window, causal)
    first, last = _block_bounds(n, block_size)
    positions = torch.nonzero(is_global).flatten()  # (n_global,)
    block_of = torch.div(positions, block_size, rounding_mode="floor")
    # A global query g reads every key j (j <= g when causal); a global key g is read by every query.
    if causal:
        row_tiles = first[None, :] <= positions[:, None]  # (n_global, J): key block starts at or before g
        column_tiles = last[None, :] >= positions[:, None]  # (n_global, I): query block ends at or after g
    else:
        row_tiles = torch.ones(len(positions), len(first), dtype=torch.bool)
        column_tiles = row_tiles
    for block, rows, columns in zip(block_of.tolist(), row_tiles, column_tiles, strict=True):
        layout[block] |= rows
        layout[:, block] |= columns
    return layout


@dataclass(frozen=True)
class SparsePattern:
    """A sparsity pattern over a sequence of ``n`` tokens (self-attention: ``n`` queries, ``n`` keys).

    Attributes:
        name: a short label for plots and tables.
        n: the sequence length N.
        allows: the element predicate, ``allows(q_idx, k_idx)`` on broadcasting index tensors.
    """

    name: str
    n: int
    allows: MaskFn
    block_layout: BlockLayoutFn | None = field(default=None, compare=False, repr=False)

    def mask(self, device: torch.device | str | None = None) -> Tensor:
        """The dense boolean mask, for the dense reference and for pictures: ``(N, N)``, ``True`` = may attend."""
        idx = torch.arange(self.n, device=device)
        return self.allows(idx[:, None], idx[None, :])

    def layout(self, block_size: int) -> Tensor:
        """Which tiles of the mask hold at least one allowed pair.

        Window, Longformer and BigBird patterns (``block_layout`` set) compute it from the blocks'
        first and last positions: ``(N / B)^2`` tiles, no pair visited. Other patterns fall back to
        :meth:`scan_layout`, which tests every pair. Either way, compute it once per length and
        reuse it for every layer, head and batch.

        Args:
            block_size: the tile edge B.

        Returns:
            bool ``(ceil(N / B), ceil(N / B))``; ``layout[I, J]`` is ``True`` when some query of
            block ``I`` may attend to some key of block ``J``.
        """
        require_count("block_size", block_size, 1)
        if self.block_layout is not None and self.n > 0:
            return self.block_layout(block_size)
        return self.scan_layout(block_size)

    def scan_layout(self, block_size: int) -> Tensor:
        """The layout by testing every pair, one query-block row at a time (``block_size × N``
        booleans, never ``N × N``): ``O(N^2)`` work, what :meth:`layout` does for patterns with no
        ``block_layout``. Same arguments and result as :meth:`layout`."""
        require_count("block_size", block_size, 1)
        n_blocks = _n_blocks(self.n, block_size)
        padded = torch.arange(n_blocks * block_size)
        key_exists = padded < self.n  # the last key block may be short
        k_idx = padded.clamp_max(max(self.n - 1, 0))
        rows = []
        for start in range(0, self.n, block_size):
            q_idx = torch.arange(start, min(start + block_size, self.n))
            tile_row = self.allows(q_idx[:, None], k_idx[None, :]) & key_exists  # (B, n_blocks * B)
            rows.append(tile_row.reshape(len(q_idx), n_blocks, block_size).any(dim=2).any(dim=0))
        return torch.stack(rows) if rows else torch.zeros(0, 0, dtype=torch.bool)

    def n_pairs(self, rows_at_a_time: int = 256) -> int:
        """How many (query, key) pairs are allowed, counted a few query rows at a time."""
        idx = torch.arange(self.n)
        return sum(
            int(self.allows(idx[start : start + rows_at_a_time, None], idx[None, :]).sum())
            for start in range(0, self.n, rows_at_a_time)
        )

    def density(self) -> float:
        """The fraction of the ``N × N`` pairs that are allowed (1.0 for dense attention)."""
        return self.n_pairs() / self.n**2 if self.n else 0.0


def sliding_window_mask(n: int, window: int, causal: bool = False) -> Tensor:
    r"""The local (sliding-window) mask: each query sees the keys at most ``window`` positions away.

    $$M_{ij} = \lvert i - j \rvert \le w \qquad\text{causal: } 0 \le i - j \le w$$

    A query therefore sees ``2 * window + 1`` keys (``window + 1`` when causal), fewer near the edges.

    Args:
        n: sequence length N.
        window: w >= 0, the largest allowed distance ``|i - j|``.
        causal: also hide every key after its query (``j > i``).

    Returns:
        bool ``(N, N)``, ``True`` where query ``i`` may attend to key ``j``.
    """
    return sliding_window_pattern(n, window, causal).mask()


def sliding_window_pattern(n: int, window: int, causal: bool = False) -> SparsePattern:
    """Sliding window of half-width ``window`` (see ``sliding_window_mask``)."""
    require_count("n", n, 0)
    require_count("window", window, 0)
    return SparsePattern(
        f"sliding window w={window}",
        n,
        lambda i, j: _window_allows(i, j, window, causal),
        lambda block_size: _window_layout(n, block_size, window, causal),
    )


def dilated_window_pattern(n: int, window: int, dilation: int, causal: bool = False) -> SparsePattern:
    r"""A window with holes: ``window`` keys on each side, ``dilation`` positions apart.

    $M_{ij} = \lvert i-j \rvert \le w\,r$ and $(i - j) \bmod r = 0$: the same number of keys as a
    window of ``window``, reaching ``dilation`` times further.

    Args:
        n: sequence length N.
        window: w >= 0, keys on each side.
        dilation: r >= 1, the gap between attended keys (1 = an ordinary window).
        causal: only keys at or before the query.
    """
    require_count("n", n, 0)
    require_count("window", window, 0)
    require_count("dilation", dilation, 1)

    def allows(i: Tensor, j: Tensor) -> Tensor:
        return _window_allows(i, j, window * dilation, causal) & ((i - j) % dilation == 0)

    return SparsePattern(f"dilated w={window}, r={dilation}", n, allows)


def strided_pattern(n: int, stride: int, causal: bool = True) -> SparsePattern:
    r"""Sparse Transformer's strided pattern (Child et al., 2019), its two heads merged into one mask.

    $M_{ij} = \lvert i-j \rvert < \ell$ (the last $\ell$ tokens) or $(i - j) \bmod \ell = 0$ (every
    $\ell$-th token, a "column"). Any token reaches any other in two steps: along the column,
    then along the row. Suits data with a period, such as image rows.

    Args:
        n: sequence length N.
        stride: ℓ >= 1; about √N keeps both heads at √N keys per query.
        causal: only keys at or before the query (the paper's setting).
    """
    require_count("n", n, 0)
    require_count("stride", stride, 1)

    def allows(i: Tensor, j: Tensor) -> Tensor:
        local = _window_allows(i, j, stride - 1, causal)
        column = (i - j) % stride == 0
        return local | (column & _causal_allows(i, j) if causal else column)

    return SparsePattern(f"strided ℓ={stride}", n, allows)


def fixed_pattern(n: int, stride: int, n_summary: int = 1, causal: bool = True) -> SparsePattern:
    r"""Sparse Transformer's fixed pattern, its two heads merged into one mask.

    $M_{ij} = \lfloor j/\ell \rfloor = \lfloor i/\ell \rfloor$ (the same block of $\ell$) or
    $j \bmod \ell \ge \ell - c$ (the last $c$ "summary" tokens of every block, which everybody reads).
    Suits text, which has no period.

    Args:
        n: sequence length N.
        stride: ℓ >= 1, the block length.
        n_summary: c, 1 <= c <= ℓ, summary tokens at the end of each block.
        causal: only keys at or before the query.
    """
    require_count("n", n, 0)
    require_count("stride", stride, 1)
    require_count("n_summary", n_summary, 1)
    if n_summary > stride:
        raise ValueError(f"n_summary must be <= stride, got n_summary={n_summary} and stride={stride}")

    def allows(i: Tensor, j: Tensor) -> Tensor:
        same_block = torch.div(i, stride, rounding_mode="floor") == torch.div(j, stride, rounding_mode="floor")
        allowed = same_block | (j % stride >= stride - n_summary)
        return allowed & _causal_allows(i, j) if causal else allowed

    return SparsePattern(f"fixed ℓ={stride}, c={n_summary}", n, allows)


def _global_index(n: int, global_tokens: Sequence[int]) -> Tensor:
    """A bool ``(N,)`` vector, ``True`` at the global positions."""
    if isinstance(global_tokens, Tensor):
        global_tokens = global_tokens.tolist()
    tokens = list(global_tokens)
    for token in tokens:
        require_count("global_tokens[...]", token, 0)
        if token >= n:
            raise ValueError(f"global_tokens must lie in [0, n={n}), got {tokens}")
    is_global = torch.zeros(n, dtype=torch.bool)
    is_global[tokens] = True
    return is_global


def global_local_mask(n: int, window: int, global_tokens: Sequence[int], causal: bool = False) -> Tensor:
    r"""Longformer's mask: a sliding window, plus global tokens that see everything and are seen by all.

    $$M_{ij} = \lvert i-j \rvert \le w \;\lor\; i \in G \;\lor\; j \in G$$

    A global token is both a full **row** (it reads every token) and a full **column** (every
    token reads it); with ``causal`` every pair after its query is hidden as well.

    Args:
        n: sequence length N.
        window: w >= 0, half-width of the local window.
        global_tokens: positions in ``[0, N)`` of the global tokens (e.g. ``[0]`` for a [CLS] token).
        causal: also hide every key after its query.

    Returns:
        bool ``(N, N)``, ``True`` where query ``i`` may attend to key ``j``.
    """
    return longformer_pattern(n, window, global_tokens, causal).mask()


def longformer_pattern(n: int, window: int, global_tokens: Sequence[int], causal: bool = False) -> SparsePattern:
    """Sliding window plus global tokens (see ``global_local_mask``)."""
    require_count("n", n, 0)
    require_count("window", window, 0)
    is_global = _global_index(n, global_tokens)

    def allows(i: Tensor, j: Tensor) -> Tensor:
        globals_ = is_global.to(i.device)
        allowed = _window_allows(i, j, window, False) | globals_[i] | globals_[j]
        return allowed & _causal_allows(i, j) if causal else allowed

    return SparsePattern(
        f"longformer w={window}, {int(is_global.sum())} global",
        n,
        allows,
        lambda block_size: _global_layout(n, block_size, window, is_global, causal),
    )


def bigbird_pattern(
    n: int,
    window: int,
    global_tokens: Sequence[int],
    n_random: int,
    block_size: int,
    *,
    seed: int = 0,
    causal: bool = False,
) -> SparsePattern:
    """BigBird: Longformer's window and global tokens, plus ``n_random`` random key blocks per query block.

    The random links are drawn per block of ``block_size`` queries (as BigBird does, so a kernel
    can keep them as whole tiles) from a generator seeded with ``seed``: the same arguments give
    the same pattern.

    Args:
        n: sequence length N.
        window: w >= 0, half-width of the local window.
        global_tokens: positions in ``[0, N)`` of the global tokens.
        n_random: random key blocks per query block (at most the number of blocks).
        block_size: the size of the randomly linked blocks.
        seed: seeds the random links.
        causal: also hide every key after its query.
    """
    require_count("n", n, 0)
    require_count("window", window, 0)
    require_count("block_size", block_size, 1)
    require_count("n_random", n_random, 0)
    local_global = longformer_pattern(n, window, global_tokens, causal=False).allows
    n_blocks = _n_blocks(n, block_size)
    if n_random > n_blocks:
        raise ValueError(f"n_random must be <= the number of blocks ceil(n / block_size) = {n_blocks}, got {n_random}")
    generator = torch.Generator().manual_seed(seed)
    random_links = torch.zeros(n_blocks, n_blocks, dtype=torch.bool)  # (query block, key block)
    for row in random_links:
        row[torch.randperm(n_blocks, generator=generator)[:n_random]] = True

    def allows(i: Tensor, j: Tensor) -> Tensor:
        links = random_links.to(i.device)
        allowed = (
            local_global(i, j)
            | links[torch.div(i, block_size, rounding_mode="floor"), torch.div(j, block_size, rounding_mode="floor")]
        )
        return allowed & _causal_allows(i, j) if causal else allowed

    pattern = SparsePattern(f"bigbird w={window}, r={n_random}", n, allows)
    is_global = _global_index(n, global_tokens)

    def block_layout(layout_block: int) -> Tensor:
        if layout_block != block_size:  # random links drawn on other tiles: test the pairs
            return pattern.scan_layout(layout_block)
        links = random_links.clone()
        if causal:  # a linked tile is needed when it holds some j <= i: its key block starts by the query block's end
            first, last = _block_bounds(n, block_size)
            links &= first[None, :] <= last[:, None]
        return _global_layout(n, block_size, window, is_global, causal) | links

    return SparsePattern(pattern.name, n, allows, block_layout)


def _check_block_args(q: Tensor, k: Tensor, v: Tensor, block_size: int, scale: float | None) -> None:
    require_qkv(q, k, v)
    require_count("block_size", block_size, 1)
    if scale is not None and not isinstance(scale, int | float):
        raise TypeError(f"scale must be a number or None, got {type(scale).__name__}")


def block_sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: Tensor,
    block_size: int,
    *,
    mask_fn: MaskFn | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Attention that visits only the (query block, key block) tiles marked in ``layout``.

    For each query block ``I``: gather the key blocks ``J`` with ``layout[I, J]``, hide the pairs
    inside them that ``mask_fn`` (and ``causal``) forbid, and run attention over the gathered keys,
    so the softmax normalises each query's row over **all** the keys it visits. The result equals
    dense attention under the mask "``layout`` expanded to tiles, and ``mask_fn``, and causal".

    Args:
        q: queries ``(..., L, d_k)``.
        k: keys ``(..., S, d_k)``.
        v: values ``(..., S, d_v)``.
        layout: bool ``(ceil(L / B), ceil(S / B))``, ``True`` = compute this tile.
        block_size: B, the tile edge; the last block is shorter when B does not divide L or S.
        mask_fn: ``mask_fn(q_idx, k_idx) -> bool`` on broadcasting index tensors, ``True`` = may attend.
        causal: hide keys ``j > i`` (top-left aligned).
        scale: score multiplier, default ``1 / sqrt(d_k)``.

    Returns:
        ``(..., L, d_v)``; a query with no allowed key gets a zero vector.
    """
    _check_block_args(q, k, v, block_size, scale)
    require_tensor("layout", layout)
    require_rank("layout", layout, 2, "(n_query_blocks, n_key_blocks)")
    n_queries, n_keys = q.shape[-2], k.shape[-2]
    expected = (_n_blocks(n_queries, block_size), _n_blocks(n_keys, block_size))
    if layout.dtype != torch.bool or shape_of(layout) != expected:
        raise ValueError(
            f"layout must be bool {expected} for L={n_queries}, S={n_keys} and block_size={block_size}, "
            f"got {layout.dtype} {shape_of(layout)}"
        )
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    outputs = [q.new_zeros(*lead, 0, v.shape[-1])]  # keeps torch.cat happy when L = 0
    for block, row in enumerate(layout.tolist()):
        q_idx = torch.arange(block * block_size, min((block + 1) * block_size, n_queries), device=q.device)
        key_blocks = [j for j, visit in enumerate(row) if visit]
        if not key_blocks:
            outputs.append(q.new_zeros(*lead, len(q_idx), v.shape[-1]))
            continue
        k_idx = torch.cat(
            [torch.arange(j * block_size, min((j + 1) * block_size, n_keys), device=q.device) for j in key_blocks]
        )
        allowed = torch.ones(len(q_idx), len(k_idx), dtype=torch.bool, device=q.device)  # (B, visited keys)
        if causal:
            allowed &= _causal_allows(q_idx[:, None], k_idx[None, :])
        if mask_fn is not None:
            allowed &= mask_fn(q_idx[:, None], k_idx[None, :])
        outputs.append(  # checked once above, not once per block
            attention_core(
                q[..., q_idx, :], k.index_select(-2, k_idx), v.index_select(-2, k_idx), allowed, scale=scale
            )[0]
        )
    return torch.cat(outputs, dim=-2)


def sliding_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""Self-attention under ``sliding_window_mask(N, window, causal)`` in $O(N \cdot w)$ time and memory.

    The queries are cut into blocks of B. Block ``[s, e)`` can only see keys in the band
    ``[s - w, e + w)`` (``[s - w, e)`` when causal): one contiguous slice of K and V, so each
    block costs $O(B \cdot (B + 2w))$ and the whole sequence $O(N (B + 2w))$. The band's
    corners, which the window does not reach, are masked.

    The sparsity is all in choosing the band. What happens inside it is ordinary dense attention
    on a small problem, so it goes to PyTorch's fused kernel
    (``torch.nn.functional.scaled_dot_product_attention``), as production local attention hands
    its tiles to a dense kernel. Every query keeps its own key (``|i - i| = 0 <= w``), so no row
    is fully masked and the fused kernel agrees with the course's reference.

    Args:
        q: queries ``(..., N, d_k)``.
        k: keys ``(..., N, d_k)`` (self-attention: as many keys as queries).
        v: values ``(..., N, d_v)``.
        window: w >= 0, the largest allowed distance ``|i - j|``.
        causal: only keys at or before the query.
        scale: score multiplier, default ``1 / sqrt(d_k)``.
        block_size: B, default 64: big enough for efficient matrix products, small enough that
            little of each band is masked away (a band holds ``B + 2w`` keys, ``2w + 1`` are needed).

    Returns:
        ``(..., N, d_v)``, equal to ``scaled_dot_product_attention(q, k, v, sliding_window_mask(...))``.
    """
    block_size = 64 if block_size is None else block_size
    _check_block_args(q, k, v, block_size, scale)
    require_count("window", window, 0)
    n = q.shape[-2]
    if k.shape[-2] != n:
        raise ValueError(
            f"sliding-window attention is self-attention: q and k need the same length, got q {shape_of(q)} "
            f"and k {shape_of(k)}"
        )
    lead, d_v = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]), v.shape[-1]
    if n == 0:
        return q.new_zeros(*lead, 0, d_v)
    window = min(window, n)  # a wider window allows nothing more, and would only widen the mask below
    # Fold batch and heads into the head axis of one (1, batch x heads, N, d) problem: the fused
    # kernel's fast path wants 4-d inputs, and splits its work over heads and threads.
    q, k, v = (t.expand(*lead, n, t.shape[-1]).reshape(1, -1, n, t.shape[-1]) for t in (q, k, v))
    # One additive mask serves every block: row a is query s + a, column b is key s - w + b, for a
    # whole band (B, B + 2w). A block whose band is cut by an end of the sequence takes a slice.
    allowed = _window_allows(
        torch.arange(block_size, device=q.device)[:, None] + window,
        torch.arange(block_size + 2 * window, device=q.device)[None, :],
        window,
        causal,
    )
    band_bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
    outputs = []
    for start in range(0, n, block_size):
        end = min(start + block_size, n)
        band_start, band_end = max(0, start - window), end if causal else min(n, end + window)
        bias = band_bias[: end - start, band_start - start + window : band_end - start + window]  # (B, band)
        outputs.append(  # (1, batch x heads, B, d_v)
            F.scaled_dot_product_attention(
                q[:, :, start:end], k[:, :, band_start:band_end], v[:, :, band_start:band_end], bias, scale=scale
            )
        )
    return torch.cat(outputs, dim=2).reshape(*lead, n, d_v)


def receptive_field(mask: Tensor, n_layers: int) -> Tensor:
    """Which inputs can influence each position after 1, 2, ... stacked attention layers.

    A residual connection keeps each token's own information, so one layer moves information
    along ``mask | I``; ``l`` layers along its ``l``-th boolean power. Dense (``N × N``): for
    pictures of short sequences.

    Args:
        mask: bool ``(N, N)``, ``True`` = query ``i`` may attend to key ``j``.
        n_layers: how many layers to stack (>= 1).

    Returns:
        bool ``(n_layers, N, N)``; ``[l - 1, i, j]`` is ``True`` when token ``j`` reaches position
        ``i`` through ``l`` layers.
    """
    require_tensor("mask", mask)
    require_rank("mask", mask, 2, "(N, N)")
    if mask.dtype != torch.bool or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"mask must be a square bool (N, N) matrix, got {mask.dtype} {shape_of(mask)}")
    require_count("n_layers", n_layers, 1)
    step = (mask | torch.eye(mask.shape[0], dtype=torch.bool, device=mask.device)).float()
    reach = [step > 0]
    for _ in range(n_layers - 1):
        reach.append((step @ reach[-1].float()) > 0)
    return torch.stack(reach)


def attention_flops(n_pairs: int, d_head: int) -> int:
    r"""Multiply-add FLOPs of attention over ``n_pairs`` (query, key) pairs, per head.

    $2 d$ for the score $q_i \cdot k_j$ and $2 d$ for adding $p_{ij} v_j$: $4\,d$ per pair
    (softmax and masking are $O(1)$ per pair and left out).
    """
    return 4 * d_head * n_pairs


__all__ = [
    "MaskFn",
    "SparsePattern",
    "attention_flops",
    "bigbird_pattern",
    "block_sparse_attention",
    "dilated_window_pattern",
    "fixed_pattern",
    "global_local_mask",
    "longformer_pattern",
    "receptive_field",
    "sliding_window_attention",
    "sliding_window_mask",
    "sliding_window_pattern",
    "strided_pattern",
]
