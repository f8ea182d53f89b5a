"""Lesson 13's exercises accept correct code spelled differently from the solution."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attention_course.grading import Status, get_exercise, run_check
from attention_course.positional import rope_cos_sin, rotate_half


def rolling_by_token_table(q_new, k_new, v_new, k_cache, v_cache, position, n_sinks, scheme="absolute"):
    """Replays which token each slot holds, sorts slots by token, and uses torch's SDPA with repeated kv heads."""
    capacity = k_cache.shape[-2]
    window = capacity - n_sinks
    token_in_slot = [-1] * capacity
    for p in range(position + 1):
        token_in_slot[p if p < n_sinks else n_sinks + (p - n_sinks) % window] = p
    slot = token_in_slot.index(position)
    filled = sorted((t, s) for s, t in enumerate(token_in_slot) if t >= 0)
    order = torch.tensor([s for _, s in filled])
    d_head = q_new.shape[-1]

    def rope(x, positions):
        cos, sin = rope_cos_sin(torch.as_tensor(positions), d_head)
        return x * cos + rotate_half(x) * sin

    new_k, new_v = k_cache.clone(), v_cache.clone()
    if scheme == "absolute":
        q = rope(q_new, [position])
        new_k[:, :, slot] = rope(k_new, [position])[:, :, 0]
        keys = new_k[:, :, order]
    else:
        q = rope(q_new, [len(order) - 1])
        new_k[:, :, slot] = k_new[:, :, 0]
        keys = rope(new_k[:, :, order], list(range(len(order))))
    new_v[:, :, slot] = v_new[:, :, 0]
    group = q.shape[1] // keys.shape[1]
    out = F.scaled_dot_product_attention(
        q, keys.repeat_interleave(group, dim=1), new_v[:, :, order].repeat_interleave(group, dim=1)
    )
    return out, new_k, new_v


def rolling_with_roll(q_new, k_new, v_new, k_cache, v_cache, position, n_sinks, scheme="absolute"):
    """Writes with index_copy and reads the window in token order with torch.roll."""
    from attention_course import apply_rope
    from attention_course.kv_cache import grouped_query_attention

    capacity = k_cache.shape[-2]
    window = capacity - n_sinks
    slot = position if position < n_sinks else n_sinks + (position - n_sinks) % window
    if scheme == "absolute":
        q_new = apply_rope(q_new, torch.tensor([position]))
        k_new = apply_rope(k_new, torch.tensor([position]))
    k_cache = k_cache.index_copy(2, torch.tensor([slot]), k_new)
    v_cache = v_cache.index_copy(2, torch.tensor([slot]), v_new)
    n = min(position + 1, capacity)
    if position < capacity:
        keys, values = k_cache[:, :, :n], v_cache[:, :, :n]
    else:
        shift = -((slot + 1 - n_sinks) % window)  # the slot after the newest holds the oldest window token
        keys = torch.cat([k_cache[:, :, :n_sinks], torch.roll(k_cache[:, :, n_sinks:], shift, dims=2)], dim=2)
        values = torch.cat([v_cache[:, :, :n_sinks], torch.roll(v_cache[:, :, n_sinks:], shift, dims=2)], dim=2)
    if scheme == "in_cache":
        keys = apply_rope(keys)
        q_new = apply_rope(q_new, torch.tensor([n - 1]))
    return grouped_query_attention(q_new, keys, values), k_cache, v_cache


def paged_with_loop(pool, block_table, ref_counts, length, new, spare_block):
    """Python loops over positions; copy-on-write through torch.where on a copied table."""
    size = pool.shape[2]
    pool = pool.clone()
    target = int(block_table[length // size])
    shared = bool(ref_counts[target] > 1)
    table = (
        torch.where(torch.arange(len(block_table)) == length // size, spare_block, block_table)
        if shared
        else block_table.clone()
    )
    if shared:
        pool[spare_block].copy_(pool[target])
    pool[int(table[length // size]), :, length % size] = new
    rows = torch.stack([pool[int(table[t // size]), :, t % size] for t in range(length + 1)], dim=1)
    return rows, pool, table


def paged_with_reshape(pool, block_table, ref_counts, length, new, spare_block):
    """Reads whole blocks, flattens them into positions, then cuts at length + 1."""
    n_blocks, heads, size, d = pool.shape
    block_table = block_table.clone()
    index = length // size
    if ref_counts[block_table[index]] > 1:
        pool = torch.cat([pool[:spare_block], pool[block_table[index]][None], pool[spare_block + 1 :]])
        block_table[index] = spare_block
    else:
        pool = pool.clone()
    pool[block_table[index], :, length % size] = new
    used = block_table[: index + 1]
    rows = pool[used].permute(1, 0, 2, 3).reshape(heads, (index + 1) * size, d)[:, : length + 1]
    return rows, pool, block_table


def mla_concatenated(q_nope, q_rope, latents, k_rope, w_uk, w_uv, w_o):
    """One score product: [q W_UK^T, RoPE(q_R)] . [c, k_R]; torch's SDPA does softmax and mixing."""
    from attention_course import apply_rope

    n_new, n_keys = q_nope.shape[-2], latents.shape[-2]
    q = torch.cat(
        [torch.einsum("bhtn,hcn->bhtc", q_nope, w_uk), apply_rope(q_rope, torch.arange(n_keys - n_new, n_keys))], dim=-1
    )
    k = torch.cat([latents, k_rope], dim=-1)[:, None].expand(-1, q.shape[1], -1, -1)
    mask = torch.ones(n_new, n_keys, dtype=torch.bool).tril(n_keys - n_new)
    context = F.scaled_dot_product_attention(
        q,
        k,
        latents[:, None].expand(-1, q.shape[1], -1, -1),
        attn_mask=mask,
        scale=1 / math.sqrt(q_nope.shape[-1] + q_rope.shape[-1]),
    )
    heads = torch.einsum("bhtc,hcv->bhtv", context, w_uv)
    return torch.einsum("bhtv,hvd->btd", heads, w_o)


def mla_naive(q_nope, q_rope, latents, k_rope, w_uk, w_uv, w_o):
    """The up-projecting form: per-head keys and values, then ordinary attention."""
    from attention_course.mla import mla_naive_step

    return mla_naive_step(q_nope, q_rope, latents, k_rope, w_uk, w_uv, w_o)


@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("rolling_attention_step", rolling_by_token_table),
        ("rolling_attention_step", rolling_with_roll),
        ("paged_write_and_gather", paged_with_loop),
        ("paged_write_and_gather", paged_with_reshape),
        ("mla_absorbed_step", mla_concatenated),
        ("mla_absorbed_step", mla_naive),
    ],
)
def test_correct_variants_pass(name, variant) -> None:
    result = run_check(get_exercise(name), variant)
    assert result.status is Status.PASSED, result.message


def test_a_broken_variant_fails() -> None:
    """The variant tests can fail: drop the copy-on-write from a passing variant."""

    def no_copy(pool, block_table, ref_counts, length, new, spare_block):
        return paged_with_loop(pool, block_table, torch.ones_like(ref_counts), length, new, spare_block)

    result = run_check(get_exercise("paged_write_and_gather"), no_copy)
    assert result.status is Status.FAILED and "copy-on-write" in result.message
