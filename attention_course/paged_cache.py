r"""A paged KV cache: fixed-size blocks from one pool, a block table per sequence (lesson 13).

A contiguous cache reserves ``capacity`` positions for every sequence up front; most of it stays
empty when sequences are short, and nothing can be shared. vLLM's PagedAttention (Kwon et al.,
2023) stores keys and values the way an operating system stores pages of memory:

* one **pool** of ``n_blocks`` blocks of ``block_size`` positions each, shared by all sequences;
* per sequence, a **block table**: its ``b``-th block of positions lives in pool block ``table[b]``.
  Token ``t`` is at block ``table[t // block_size]``, offset ``t % block_size``;
* blocks are taken from a free list when a sequence grows into a new one and given back when
  it finishes, so at most one partly filled block per sequence is wasted;
* sequences that start with the same prompt **share** its blocks (a reference count per block);
  before a sequence writes into a shared block it copies it (**copy-on-write**), so the other
  sequences never see its tokens.

Layout of a pool: ``(n_blocks, n_kv_heads, block_size, d_head)`` (per layer).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from ._validation import require_count, require_rank, require_tensor, shape_of
from .kv_cache import KVCache, grouped_query_attention
from .positional import rope_cos_sin, rotate_half


class UnknownSequenceError(KeyError):
    """A sequence id the cache does not know (a ``KeyError`` whose message reads cleanly)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _check_pool_args(pool: Tensor, block_table: Tensor, length: int) -> None:
    require_rank("pool", require_tensor("pool", pool), 4, "(n_blocks, heads, block_size, d_head)")
    require_rank("block_table", require_tensor("block_table", block_table), 1, "(max_blocks,)")
    if block_table.is_floating_point():
        raise TypeError(f"block_table must hold integer block ids, got dtype {block_table.dtype}")
    require_count("length", length, 0)
    if length > block_table.shape[0] * pool.shape[2]:
        raise ValueError(
            f"length={length} is more than a block table of {block_table.shape[0]} blocks of "
            f"{pool.shape[2]} positions can address"
        )


def paged_gather(pool: Tensor, block_table: Tensor, length: int) -> Tensor:
    """The first ``length`` cached rows of one sequence, contiguous and in order.

    Args:
        pool: ``(n_blocks, heads, block_size, d_head)``.
        block_table: int ``(max_blocks,)``; ``block_table[b]`` is the pool block of positions
            ``b * block_size .. (b + 1) * block_size - 1`` (unused entries may hold anything).
        length: how many positions to read (the last block may be partly filled).

    Returns:
        ``(heads, length, d_head)``.
    """
    _check_pool_args(pool, block_table, length)
    positions = torch.arange(length, device=pool.device)
    block_size = pool.shape[2]
    blocks = block_table.to(pool.device)[positions // block_size]  # (length,) pool block of each token
    return pool[blocks, :, positions % block_size].transpose(0, 1)  # (length, heads, d) -> (heads, length, d)


def _write(pool: Tensor, block_table: Tensor, ref_counts: Tensor, length: int, new: Tensor, spare_block: int) -> None:
    """In place: copy the target block to ``spare_block`` when shared (updating the table), then write."""
    block_size = pool.shape[2]
    index, offset = length // block_size, length % block_size
    block = int(block_table[index])
    if int(ref_counts[block]) > 1:  # shared with another sequence: copy on write
        pool[spare_block] = pool[block]
        block_table[index] = spare_block
        block = spare_block
    pool[block, :, offset] = new


def paged_write_and_gather(
    pool: Tensor, block_table: Tensor, ref_counts: Tensor, length: int, new: Tensor, spare_block: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Store one new token's keys (or values) at position ``length`` of a sequence, then read back all
    ``length + 1`` of its rows in order (the lesson 13 exercise).

    The block for position ``length`` is already in the table (the cache allocates a fresh block
    when a sequence starts a new one). If that block is shared with another sequence
    (``ref_counts[block] > 1``, a common prompt), it is first copied into ``spare_block`` and the
    table points there instead (copy-on-write): the other sequences keep seeing the old contents.

    Args:
        pool: ``(n_blocks, heads, block_size, d_head)``.
        block_table: int ``(max_blocks,)`` this sequence's table.
        ref_counts: int ``(n_blocks,)`` how many sequences use each block.
        length: tokens already stored for this sequence (the new one goes to position ``length``).
        new: ``(heads, d_head)`` the new token's row.
        spare_block: a free block to copy into if the target block is shared.

    Returns:
        ``rows (heads, length + 1, d_head)``, the updated ``pool`` and ``block_table`` (new tensors;
        the arguments are not changed).
    """
    _check_pool_args(pool, block_table, length + 1)
    require_rank("new", require_tensor("new", new), 2, "(heads, d_head)")
    if new.shape != (pool.shape[1], pool.shape[3]):
        raise ValueError(f"new must be (heads, d_head) = {(pool.shape[1], pool.shape[3])}, got {shape_of(new)}")
    pool, block_table = pool.clone(), block_table.clone()
    _write(pool, block_table, ref_counts, length, new, spare_block)
    return paged_gather(pool, block_table, length + 1), pool, block_table


class PagedKVCache(KVCache):
    """A paged cache for a :class:`~attention_course.decoder.Decoder`: one pool of blocks shared by
    all sequences, a block table per sequence, prefix sharing with reference counts and copy-on-write.

    Sequences are named by any hashable id. ``set_batch(ids)`` chooses which sequences the next
    forward passes feed (row ``b`` of the tokens is sequence ``ids[b]``); they may have different
    lengths: each gets its own positions and its own causal rows.
    """

    def __init__(
        self,
        n_layers: int,
        n_blocks: int,
        block_size: int,
        n_kv_heads: int,
        d_head: int,
        max_blocks_per_seq: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(n_layers)
        for name, value in (
            ("n_blocks", n_blocks),
            ("block_size", block_size),
            ("n_kv_heads", n_kv_heads),
            ("d_head", d_head),
            ("max_blocks_per_seq", max_blocks_per_seq),
        ):
            require_count(name, value, 1)
        self.block_size, self.max_blocks_per_seq = block_size, max_blocks_per_seq
        shape = (n_layers, n_blocks, n_kv_heads, block_size, d_head)
        self.k_pool = torch.zeros(shape, dtype=dtype, device=device)
        self.v_pool = torch.zeros(shape, dtype=dtype, device=device)
        self.ref_counts = torch.zeros(n_blocks, dtype=torch.int64)
        self.free_blocks: list[int] = list(range(n_blocks - 1, -1, -1))  # pop() hands out block 0 first
        self.tables: dict[Hashable, list[int]] = {}
        self.lengths: dict[Hashable, int] = {}
        self.batch: list[Hashable] = []

    # --- bookkeeping -------------------------------------------------------------------------
    def _known(self, seq_id: Hashable) -> None:
        if seq_id not in self.tables:
            raise UnknownSequenceError(
                f"unknown sequence id {seq_id!r}; known ids: {', '.join(sorted(map(repr, self.tables)))}"
            )

    def add_sequence(self, seq_id: Hashable) -> None:
        """Register an empty sequence (no block is taken until it holds a token)."""
        if seq_id in self.tables:
            raise ValueError(f"sequence id {seq_id!r} is already in use")
        self.tables[seq_id], self.lengths[seq_id] = [], 0

    def fork(self, parent: Hashable, child: Hashable) -> None:
        """Start ``child`` as a copy of ``parent`` that shares all its blocks (nothing is copied now)."""
        self._known(parent)
        if child in self.tables:
            raise ValueError(f"sequence id {child!r} is already in use")
        self.tables[child], self.lengths[child] = list(self.tables[parent]), self.lengths[parent]
        for block in self.tables[child]:
            self.ref_counts[block] += 1

    def free_sequence(self, seq_id: Hashable) -> None:
        """Forget ``seq_id``; its blocks go back to the free list once no sequence uses them."""
        self._known(seq_id)
        for block in self.tables.pop(seq_id):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.free_blocks.append(block)
        del self.lengths[seq_id]
        self.batch = [s for s in self.batch if s != seq_id]

    def set_batch(self, seq_ids: Sequence[Hashable]) -> None:
        """The sequences the next forward passes feed, in batch order."""
        for seq_id in seq_ids:
            self._known(seq_id)
        if len(set(seq_ids)) != len(seq_ids) or not seq_ids:
            raise ValueError(f"seq_ids must name one or more distinct sequences, got {list(seq_ids)}")
        self.batch = list(seq_ids)
        self.length = max(self.lengths[s] for s in self.batch)

    def _reserve(self, n_new: int) -> None:
        """Make room for ``n_new`` tokens in every sequence of the batch, or raise and change nothing."""
        limit = self.max_blocks_per_seq * self.block_size
        needed = 0
        for seq_id in self.batch:
            length, table = self.lengths[seq_id], self.tables[seq_id]
            if length + n_new > limit:
                raise ValueError(
                    f"sequence {seq_id!r} would hold {length + n_new} tokens; its block table allows "
                    f"{self.max_blocks_per_seq} blocks of {self.block_size} = {limit}"
                )
            needed += -(-(length + n_new) // self.block_size) - len(table)
            if length % self.block_size and self.ref_counts[table[-1]] > 1:
                needed += 1  # its last, partly filled block is shared: it will be copied
        if needed > len(self.free_blocks):
            raise RuntimeError(f"out of blocks: {needed} needed, {len(self.free_blocks)} free")
        for seq_id in self.batch:
            length, table = self.lengths[seq_id], self.tables[seq_id]
            if length % self.block_size and self.ref_counts[table[-1]] > 1:  # copy-on-write, all layers at once
                spare = self.free_blocks.pop()
                self.k_pool[:, spare] = self.k_pool[:, table[-1]]
                self.v_pool[:, spare] = self.v_pool[:, table[-1]]
                self.ref_counts[table[-1]] -= 1
                self.ref_counts[spare] = 1
                table[-1] = spare
            while len(table) * self.block_size < length + n_new:
                block = self.free_blocks.pop()
                self.ref_counts[block] = 1
                table.append(block)

    # --- the decoder's interface -------------------------------------------------------------
    def attend(self, layer: int, q_new: Tensor, k_new: Tensor, v_new: Tensor) -> Tensor:
        """``q_new (B, H, T, d)``, ``k_new``/``v_new (B, Hkv, T, d)`` before RoPE, row ``b`` = ``batch[b]``."""
        if q_new.shape[0] != len(self.batch):
            raise ValueError(
                f"q_new has {q_new.shape[0]} rows but the batch names {len(self.batch)} sequences "
                "(call set_batch first)"
            )
        n_new, d_head = q_new.shape[-2], q_new.shape[-1]
        if layer == 0:
            self._reserve(n_new)
        device = q_new.device
        starts = torch.tensor([self.lengths[s] for s in self.batch], device=device)  # (B,)
        positions = starts[:, None] + torch.arange(n_new, device=device)  # (B, T): each sequence its own
        cos, sin = rope_cos_sin(positions.flatten().cpu(), d_head, dtype=q_new.dtype)
        cos, sin = (t.to(device).reshape(len(self.batch), 1, n_new, d_head) for t in (cos, sin))
        q_new, k_new = (x * cos + rotate_half(x) * sin for x in (q_new, k_new))  # apply_rope, per-row positions
        longest = int(positions[:, -1].max()) + 1
        width = -(-longest // self.block_size)
        tables = torch.zeros(len(self.batch), width, dtype=torch.int64, device=device)  # padded with block 0
        for b, seq_id in enumerate(self.batch):
            tables[b, : len(self.tables[seq_id])] = torch.tensor(self.tables[seq_id][:width])
        # write: T new (block, offset) slots per sequence, all sequences in one indexing operation
        blocks, offsets = tables.gather(1, positions // self.block_size), positions % self.block_size  # (B, T)
        self.k_pool[layer][blocks, :, offsets] = k_new.permute(0, 2, 1, 3)  # (B, T, Hkv, d)
        self.v_pool[layer][blocks, :, offsets] = v_new.permute(0, 2, 1, 3)
        # gather: every sequence's keys up to the longest, through its block table (padding is masked below)
        key_pos = torch.arange(longest, device=device)
        key_blocks = tables[:, key_pos // self.block_size]  # (B, longest)
        keys = self.k_pool[layer][key_blocks, :, key_pos % self.block_size].permute(0, 2, 1, 3)  # (B, Hkv, S, d)
        values = self.v_pool[layer][key_blocks, :, key_pos % self.block_size].permute(0, 2, 1, 3)
        mask = key_pos[None, None, :] <= positions[:, :, None]  # (B, T, S): causal, and hides the padding
        return grouped_query_attention(q_new, keys, values, mask[:, None])  # (B, 1, T, S): one mask for every head

    def advance(self, n_new: int) -> None:
        for seq_id in self.batch:
            self.lengths[seq_id] += n_new
        self.length = max(self.lengths[s] for s in self.batch)

    def tensors(self) -> list[Tensor]:
        return [self.k_pool, self.v_pool]

    def gather(self, layer: int, seq_id: Hashable) -> tuple[Tensor, Tensor]:
        """``seq_id``'s rotated keys and values in ``layer``: ``(n_kv_heads, length, d_head)`` each."""
        self._known(seq_id)
        table = torch.tensor(self.tables[seq_id], dtype=torch.int64)
        length = self.lengths[seq_id]
        return paged_gather(self.k_pool[layer], table, length), paged_gather(self.v_pool[layer], table, length)

    def blocks_in_use(self) -> int:
        return int((self.ref_counts > 0).sum())

    def used_bytes(self) -> int:
        """Bytes of the blocks some sequence holds (the pool's other blocks are free for new sequences)."""
        per_block = 2 * self.k_pool[:, 0].numel() * self.k_pool.element_size()  # keys + values, all layers
        return self.blocks_in_use() * per_block
