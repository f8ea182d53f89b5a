"""Lesson 13 (modern KV caches): the rolling sink + window step, the paged write-and-gather, the absorbed MLA step."""

from __future__ import annotations

import torch

from ...mla import MLAWeights, mla_absorbed_step
from ...paged_cache import paged_write_and_gather
from ...rolling_cache import rolling_attention_step
from ..edits import catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "13_modern_kv_caches"


# --- rolling_attention_step ---------------------------------------------------------------------------------------
def _rolling_case(
    label: str,
    *,
    batch: int,
    n_heads: int,
    n_kv_heads: int,
    d_head: int,
    n_sinks: int,
    window: int,
    position: int,
    scheme: str,
    seed: int,
) -> Case:
    """Random new token and a buffer of random (already cached) rows; slots not yet filled hold leftovers."""
    gen = torch.Generator().manual_seed(seed)
    q_new = torch.randn(batch, n_heads, 1, d_head, generator=gen)
    k_new, v_new = (torch.randn(batch, n_kv_heads, 1, d_head, generator=gen) for _ in range(2))
    k_cache, v_cache = (torch.randn(batch, n_kv_heads, n_sinks + window, d_head, generator=gen) for _ in range(2))
    return Case((q_new, k_new, v_new, k_cache, v_cache, position, n_sinks, scheme), label=label)


def rolling_cases() -> list[Case]:
    return [
        _rolling_case(
            "token 3 into a buffer of 2 sinks + 4 window slots, not full yet (scheme 'absolute')",
            batch=1,
            n_heads=2,
            n_kv_heads=1,
            d_head=4,
            n_sinks=2,
            window=4,
            position=3,
            scheme="absolute",
            seed=0,
        ),
        _rolling_case(
            "token 6 into 2 sinks + 4 window slots: the first wrap (scheme 'absolute')",
            batch=1,
            n_heads=2,
            n_kv_heads=1,
            d_head=4,
            n_sinks=2,
            window=4,
            position=6,
            scheme="absolute",
            seed=1,
        ),
        _rolling_case(
            "token 8 into 2 sinks + 4 window slots, after the wrap (scheme 'in_cache')",
            batch=1,
            n_heads=2,
            n_kv_heads=1,
            d_head=4,
            n_sinks=2,
            window=4,
            position=8,
            scheme="in_cache",
            seed=2,
        ),
        _rolling_case(
            "token 4 of 1 sink + 5 window slots, not full yet: only slots 0..4 hold tokens ('in_cache')",
            batch=2,
            n_heads=4,
            n_kv_heads=2,
            d_head=8,
            n_sinks=1,
            window=5,
            position=4,
            scheme="in_cache",
            seed=3,
        ),
        _rolling_case(
            "token 40 after many wraps, batch of 2, 4 query heads sharing 2 key/value heads ('in_cache')",
            batch=2,
            n_heads=4,
            n_kv_heads=2,
            d_head=8,
            n_sinks=3,
            window=5,
            position=40,
            scheme="in_cache",
            seed=4,
        ),
        _rolling_case(
            "token 23, no sinks (Mistral's plain rolling buffer of 6), scheme 'absolute'",
            batch=2,
            n_heads=2,
            n_kv_heads=2,
            d_head=6,
            n_sinks=0,
            window=6,
            position=23,
            scheme="absolute",
            seed=5,
        ),
        _rolling_case(
            "token 17 of 2 sinks + 3 window slots, scheme 'in_cache', multi-query",
            batch=1,
            n_heads=4,
            n_kv_heads=1,
            d_head=8,
            n_sinks=2,
            window=3,
            position=17,
            scheme="in_cache",
            seed=6,
        ),
    ]


register(
    Exercise(
        name="rolling_attention_step",
        lesson=LESSON,
        reference=rolling_attention_step,
        cases=rolling_cases,
        # the buffer may be updated in place: k_cache, v_cache (arguments 4, 5) become the returned ones
        updates_in_place=lambda args, kwargs, output: {3: output[1], 4: output[2]},
        mistakes=catalogue(
            LESSON,
            "rolling_attention_step",
            (
                "ring_slot_used_as_position",
                "RoPE positions are token positions, not buffer slots: in the 'absolute' scheme rotate the new query "
                "and key at `position` (the slot only says where the key is stored).",
                edit("here = torch.tensor([position])", "here = torch.tensor([slot])"),  # the slot, not the position
            ),
            (
                "sinks_evicted",
                "the first n_sinks slots are never overwritten: a token at position >= n_sinks goes to slot "
                "n_sinks + (position - n_sinks) % window, not position % capacity.",
                # a plain ring over all slots: the sinks get overwritten too
                edit(
                    "slot = position if position < n_sinks else n_sinks + (position - n_sinks) % window",
                    "slot = position % capacity",
                ),
                edit(
                    "order = torch.cat([torch.arange(n_sinks), n_sinks + (oldest - n_sinks + torch.arange(window)) % window])",
                    "order = (position - capacity + 1 + torch.arange(capacity)) % capacity",
                ),
            ),
            (
                "off_by_one_at_the_wrap",
                "token `position` must evict the oldest window token, the one at position - window: its slot is "
                "n_sinks + (position - n_sinks) % window (check token n_sinks + window: it goes to slot n_sinks).",
                edit(
                    "slot = position if position < n_sinks else n_sinks + (position - n_sinks) % window",
                    "slot = position if position < capacity else n_sinks + (position - capacity + 1) % window",
                ),
            ),
            (
                "keys_in_slot_order_after_the_wrap",
                "in the 'in_cache' scheme the cached keys get positions 0..n-1 in the order of their tokens; after "
                "the wrap that is not the slot order: read the sinks, then the window slots from the oldest token on.",
                edit(
                    "order = torch.cat([torch.arange(n_sinks), n_sinks + (oldest - n_sinks + torch.arange(window)) % window])",
                    "order = torch.arange(capacity)",  # buffer order, not token order
                ),
            ),
            (
                "rope_offset_of_the_other_scheme",
                "the query's position depends on the scheme: its absolute `position` in 'absolute', its place in the "
                "cache (n - 1, n = filled slots) in 'in_cache'.",
                edit(
                    "q_new, k_new = apply_rope(q_new, here), apply_rope(k_new, here)",
                    "q_new, k_new = apply_rope(q_new, torch.tensor([len(order) - 1])), apply_rope(k_new, here)",
                ),
                edit("q_new = apply_rope(q_new, in_cache[-1:])", "q_new = apply_rope(q_new, torch.tensor([position]))"),
            ),
            (
                "absolute_key_not_rotated",
                "in the 'absolute' scheme rotate the new key at `position` as well as the query, and store it "
                "rotated: the keys already in the buffer were rotated when they were stored.",
                edit(
                    "q_new, k_new = apply_rope(q_new, here), apply_rope(k_new, here)",
                    "q_new = apply_rope(q_new, here)",  # the key stored (and attended to) unrotated
                ),
            ),
            (
                "empty_slots_attended",
                "while position < capacity only slots 0 .. position hold tokens: the others are empty (zeros or "
                "stale entries), so attend over the filled slots only.",
                edit("order = torch.arange(position + 1)", "order = torch.arange(capacity)"),
            ),
            (
                "in_cache_key_stored_rotated",
                "in the 'in_cache' scheme store the new key unrotated: every step rotates the cached keys at their "
                "place in the cache, so a stored rotation would be applied on top of it.",
                edit(
                    """
                k_cache[:, :, slot:slot + 1] = k_new
                v_cache[:, :, slot:slot + 1] = v_new
                in_cache = torch.arange(len(order))
                """,
                    """
                k_cache[:, :, slot:slot + 1] = apply_rope(k_new, torch.tensor([position]))
                v_cache[:, :, slot:slot + 1] = v_new
                in_cache = torch.arange(len(order))
                """,
                ),
            ),
        ),
    )
)


# --- paged_write_and_gather ---------------------------------------------------------------------------------------
def _paged_case(
    label: str,
    *,
    n_blocks: int,
    heads: int,
    block_size: int,
    d_head: int,
    table: list[int],
    length: int,
    shared: tuple[int, ...] = (),
    spare: int,
    seed: int,
) -> Case:
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randn(n_blocks, heads, block_size, d_head, generator=gen)
    ref_counts = torch.zeros(n_blocks, dtype=torch.int64)
    ref_counts[[b for b in table if b >= 0]] = 1
    for block in shared:
        ref_counts[block] = 2
    new = torch.randn(heads, d_head, generator=gen)
    return Case((pool, torch.tensor(table), ref_counts, length, new, spare), label=label)


def paged_cases() -> list[Case]:
    return [
        _paged_case(
            "blocks of 2, table [3, 0, 2], token 3 goes to block 0 offset 1 (nothing shared)",
            n_blocks=5,
            heads=1,
            block_size=2,
            d_head=2,
            table=[3, 0, 2],
            length=3,
            spare=4,
            seed=0,
        ),
        _paged_case(
            "blocks of 3, table [1, 4, -1, -1], token 4 goes into a partly filled block",
            n_blocks=6,
            heads=2,
            block_size=3,
            d_head=2,
            table=[1, 4, -1, -1],
            length=4,
            spare=5,
            seed=1,
        ),
        _paged_case(
            "blocks of 3, token 4 goes into block 2, shared with another sequence (copy it to spare block 5)",
            n_blocks=6,
            heads=2,
            block_size=3,
            d_head=4,
            table=[0, 2, -1, -1],
            length=4,
            shared=(0, 2),
            spare=5,
            seed=2,
        ),
        _paged_case(
            "the first token of a sequence, into a fresh block",
            n_blocks=4,
            heads=3,
            block_size=4,
            d_head=2,
            table=[2, -1, -1],
            length=0,
            spare=3,
            seed=3,
        ),
        _paged_case(
            "blocks of 4, table [5, 1, 3], token 9 (a shared prefix block 5 that is not written)",
            n_blocks=8,
            heads=2,
            block_size=4,
            d_head=3,
            table=[5, 1, 3],
            length=9,
            shared=(5,),
            spare=7,
            seed=4,
        ),
        _paged_case(
            "blocks of 2, 8 heads, token 7 fills the last slot of block 6 (shared: copy first)",
            n_blocks=8,
            heads=8,
            block_size=2,
            d_head=2,
            table=[4, 0, 2, 6],
            length=7,
            shared=(6,),
            spare=1,
            seed=5,
        ),
    ]


register(
    Exercise(
        name="paged_write_and_gather",
        lesson=LESSON,
        reference=paged_write_and_gather,
        cases=paged_cases,
        # the pool and the block table (arguments 1, 2) may be updated in place into the returned ones
        updates_in_place=lambda args, kwargs, output: {0: output[1], 1: output[2]},
        mistakes=catalogue(
            LESSON,
            "paged_write_and_gather",
            (
                "block_index_and_offset_swapped",
                "token t lives in block block_table[t // block_size] at offset t % block_size: the division picks "
                "the block, the remainder the offset.",
                edit(
                    "index, offset = length // block_size, length % block_size",
                    "index, offset = length % block_size, length // block_size",
                ),
                edit(
                    "rows = pool[block_table[positions // block_size], :, positions % block_size]",
                    "rows = pool[block_table[positions % block_size], :, positions // block_size]",
                ),
            ),
            (
                "last_partial_block_read_whole",
                "the last block may be only partly filled: return exactly length + 1 rows, not every position of "
                "every block.",
                # (n_blocks, heads, block_size, d): the last block's unused tail too
                edit("positions = torch.arange(length + 1)", "n_blocks = index + 1"),
                edit(
                    "rows = pool[block_table[positions // block_size], :, positions % block_size]",
                    "rows = pool[block_table[:n_blocks]].transpose(0, 1)",
                ),
                edit(
                    "return rows.transpose(0, 1), pool, block_table",
                    "return rows.reshape(pool.shape[1], n_blocks * block_size, pool.shape[3]), pool, block_table",
                ),
            ),
            (
                "shared_block_written_through",
                "when ref_counts[block] > 1 the block is shared with another sequence: copy it into spare_block, "
                "point the table entry at the copy, and write there (copy-on-write).",
                # into the shared block: the other sequences see it too
                edit(
                    """
                if int(ref_counts[block]) > 1:
                    pool[spare_block] = pool[block]
                    block_table[index] = spare_block
                    block = spare_block
                """,
                    "",
                ),
            ),
            (
                "copied_block_left_empty",
                "copy-on-write copies the shared block's rows into spare_block (pool[spare_block] = pool[block]) "
                "before writing: the block's earlier tokens belong to this sequence too.",
                edit("pool[spare_block] = pool[block]", "pool[spare_block] = 0.0"),
            ),
            (
                "table_not_pointed_at_copy",
                "after copying a shared block, point the table entry at the copy (block_table[index] = spare_block): "
                "the rows are read back through the table.",
                edit(
                    """
                pool[spare_block] = pool[block]
                block_table[index] = spare_block
                """,
                    "pool[spare_block] = pool[block]",
                ),
            ),
            (
                "unshared_block_copied",
                "copy a block only when it is shared (ref_counts[block] > 1); a block this sequence alone uses is "
                "written where it is, and its table entry stays.",
                edit("if int(ref_counts[block]) > 1:", "if int(ref_counts[block]) > 0:"),
            ),
        ),
    )
)


# --- mla_absorbed_step --------------------------------------------------------------------------------------------
def _mla_case(
    label: str,
    *,
    batch: int,
    n_heads: int,
    n_new: int,
    n_cached: int,
    d_model: int,
    d_latent: int,
    d_nope: int,
    d_rope: int,
    d_v: int,
    seed: int,
) -> Case:
    w = MLAWeights.random(d_model, n_heads, d_latent, d_nope, d_rope, d_v, seed=seed)
    gen = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(batch, n_cached, d_model, generator=gen)
    latents, k_rope = w.cache_entries(x, 0)
    q_nope, q_rope = w.queries(x[:, n_cached - n_new :])
    return Case((q_nope, q_rope, latents, k_rope, w.w_uk, w.w_uv, w.w_o), label=label)


def mla_cases() -> list[Case]:
    return [
        _mla_case(
            "one new token after 3 cached, 2 heads, latent 8, d_nope 4, d_rope 2, d_v 3",
            batch=1,
            n_heads=2,
            n_new=1,
            n_cached=4,
            d_model=6,
            d_latent=8,
            d_nope=4,
            d_rope=2,
            d_v=3,
            seed=0,
        ),
        _mla_case(
            "3 new tokens after 4 cached (a prefill chunk: causal rows), batch of 2",
            batch=2,
            n_heads=4,
            n_new=3,
            n_cached=7,
            d_model=16,
            d_latent=12,
            d_nope=6,
            d_rope=4,
            d_v=5,
            seed=1,
        ),
        _mla_case(
            "one token after 10, 8 heads, a latent narrower than a head (d_latent 6 < d_nope 8)",
            batch=2,
            n_heads=8,
            n_new=1,
            n_cached=11,
            d_model=16,
            d_latent=6,
            d_nope=8,
            d_rope=4,
            d_v=8,
            seed=2,
        ),
        _mla_case(
            "the very first token (the cache holds only itself)",
            batch=1,
            n_heads=3,
            n_new=1,
            n_cached=1,
            d_model=8,
            d_latent=10,
            d_nope=4,
            d_rope=2,
            d_v=4,
            seed=3,
        ),
    ]


register(
    Exercise(
        name="mla_absorbed_step",
        lesson=LESSON,
        reference=mla_absorbed_step,
        cases=mla_cases,
        mistakes=catalogue(
            LESSON,
            "mla_absorbed_step",
            (
                "up_projection_applied_twice",
                "once W_UK is folded into the query (q_nope @ W_UK^T), score it against the cached latents as they "
                "are; up-projecting the latents as well applies W_UK twice.",
                # up-projected, although the query already absorbed W_UK
                edit(
                    "q_latent @ latents[:, None].transpose(-2, -1)",
                    "q_latent @ (latents[:, None] @ w_uk @ w_uk.transpose(-2, -1)).transpose(-2, -1)",
                ),
            ),
            (
                "rope_part_absorbed",
                "only q_rope is rotated; q_nope, the part folded into W_UK, must stay unrotated (a rotation cannot "
                "be folded into a fixed matrix, which is why MLA keeps RoPE in a separate key).",
                # rotated, then folded through W_UK
                edit(
                    "q_latent = q_nope @ w_uk.transpose(-2, -1)",
                    "q_latent = apply_rope(q_nope, torch.arange(n_keys - n_new, n_keys)) @ w_uk.transpose(-2, -1)",
                ),
            ),
            (
                "scale_from_latent_width",
                "folding moves weights but leaves the scores unchanged: divide by sqrt(d_nope + d_rope), the width "
                "of the keys they stand for, not by sqrt(d_latent).",
                edit(
                    "scores = scores / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1])",
                    "scores = scores / math.sqrt(latents.shape[-1])",  # the width of the latent the query now meets
                ),
            ),
            (
                "rope_score_dropped",
                "each score has two parts: the latent part (q_nope W_UK^T) . c plus the decoupled RoPE part "
                "q_rope . k_rope.",
                edit(
                    "scores = q_latent @ latents[:, None].transpose(-2, -1) + q_rope @ k_rope[:, None].transpose(-2, -1)",
                    "scores = q_latent @ latents[:, None].transpose(-2, -1)",  # the decoupled RoPE part is missing
                ),
            ),
            (
                "rope_positions_from_zero",
                "the new queries are the last T of the S cached tokens: rotate q_rope at positions S - T .. S - 1, "
                "not 0 .. T - 1.",
                # positions 0 .. T-1, as if the sequence started here
                edit(
                    "q_rope = apply_rope(q_rope, torch.arange(n_keys - n_new, n_keys))", "q_rope = apply_rope(q_rope)"
                ),
            ),
            (
                "new_tokens_not_causal",
                "with T > 1 new tokens, new query i may not see the new tokens after it: mask the scores with the "
                "rows causal_mask(S)[S - T:].",
                edit(
                    "if n_new > 1:\n    scores = scores.masked_fill(~causal_mask(n_keys)[n_keys - n_new:], float('-inf'))",
                    "",
                ),
            ),
            (
                "causal_rows_from_the_top",
                "the new tokens are the LAST T of the S keys: their rows of the causal mask are "
                "causal_mask(S)[S - T:], not the first T rows.",
                edit(
                    "scores = scores.masked_fill(~causal_mask(n_keys)[n_keys - n_new:], float('-inf'))",
                    "scores = scores.masked_fill(~causal_mask(n_keys)[:n_new], float('-inf'))",
                ),
            ),
            (
                "heads_averaged",
                "sum the heads' contributions (projecting the concatenated heads with W_O is a sum over heads), "
                "do not average them.",
                edit(
                    "output = torch.einsum('bhtc,hcd->btd', context, w_uv @ w_o)",
                    "output = torch.einsum('bhtc,hcd->btd', context, w_uv @ w_o) / q_nope.shape[1]",
                ),
            ),
        ),
    )
)
