"""Lesson 09 (KV cache): the cached decode step."""

from __future__ import annotations

from typing import Any

import torch

from ...kv_cache import cached_attention_step
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "09_kv_cache"


def _step_case(
    label: str,
    *,
    batch: int,
    n_heads: int,
    n_kv_heads: int,
    d_head: int,
    length: int,
    n_new: int,
    capacity: int,
    seed: int,
    junk_after: bool = False,
    check_grad: bool = False,
    dtype: torch.dtype = torch.float32,
    q_scale: float = 1.0,
) -> Case:
    """Random new tokens and a buffer whose first ``length`` positions are cached; the rest is zeros
    (a fresh preallocated buffer) or, with ``junk_after``, leftovers of an earlier sequence."""
    gen = torch.Generator().manual_seed(seed)
    q_new = torch.randn(batch, n_heads, n_new, d_head, generator=gen, dtype=dtype) * q_scale
    k_new, v_new = (torch.randn(batch, n_kv_heads, n_new, d_head, generator=gen, dtype=dtype) for _ in range(2))
    k_cache, v_cache = (torch.randn(batch, n_kv_heads, capacity, d_head, generator=gen, dtype=dtype) for _ in range(2))
    if not junk_after:
        k_cache[:, :, length:] = 0.0
        v_cache[:, :, length:] = 0.0
    return Case((q_new, k_new, v_new, k_cache, v_cache, length), label=label, check_grad=check_grad)


def cached_step_cases() -> list[Case]:
    return [
        _step_case(
            "one new token after 1 cached, buffer of 3, 2 query heads sharing 1 key/value head",
            batch=1,
            n_heads=2,
            n_kv_heads=1,
            d_head=4,
            length=1,
            n_new=1,
            capacity=3,
            seed=0,
        ),
        _step_case(
            "a 4-token prompt into an empty buffer of 6 (4 query heads, 2 key/value heads)",
            batch=1,
            n_heads=4,
            n_kv_heads=2,
            d_head=8,
            length=0,
            n_new=4,
            capacity=6,
            seed=1,
        ),
        _step_case(
            "one new token after 5 cached, batch of 2, 2 heads, old values left in the unused slots",
            batch=2,
            n_heads=2,
            n_kv_heads=2,
            d_head=8,
            length=5,
            n_new=1,
            capacity=8,
            seed=2,
            junk_after=True,
        ),
        _step_case(
            "3 new tokens after 4 cached, a cache of exactly 4 (a growing cache)",
            batch=1,
            n_heads=4,
            n_kv_heads=2,
            d_head=8,
            length=4,
            n_new=3,
            capacity=4,
            seed=3,
        ),
        _step_case(
            "multi-query: 8 query heads, 1 key/value head, one token after 7 cached",
            batch=1,
            n_heads=8,
            n_kv_heads=1,
            d_head=16,
            length=7,
            n_new=1,
            capacity=12,
            seed=4,
        ),
        _step_case(
            "2 new tokens after 3 cached, batch of 3, 4 query heads over 2 key/value heads, d_head=6, "
            "old values left in the unused slots",
            batch=3,
            n_heads=4,
            n_kv_heads=2,
            d_head=6,
            length=3,
            n_new=2,
            capacity=9,
            seed=5,
            junk_after=True,
        ),
        _step_case(
            "float64: 2 new tokens after 2 cached",
            batch=2,
            n_heads=2,
            n_kv_heads=2,
            d_head=4,
            length=2,
            n_new=2,
            capacity=5,
            seed=6,
            dtype=torch.float64,
        ),
        _step_case(
            "gradients: 2 new tokens after 2 cached, batch of 2",
            batch=2,
            n_heads=2,
            n_kv_heads=1,
            d_head=4,
            length=2,
            n_new=2,
            capacity=4,
            seed=7,
            check_grad=True,
        ),
        # Scores beyond +-100 overflow exp in float32 unless each row's maximum is subtracted first; the
        # weights are then nearly one-hot, so float32 rounding of the scores stays far inside the tolerances.
        _step_case(
            "large scores (queries x 100): 2 new tokens after 3 cached, batch of 2, 4 query heads over 2",
            batch=2,
            n_heads=4,
            n_kv_heads=2,
            d_head=8,
            length=3,
            n_new=2,
            capacity=6,
            seed=8,
            q_scale=100.0,
        ),
    ]


ROPE = "q_new, k_new = (apply_rope(q_new, positions), apply_rope(k_new, positions))"
KEYS = "keys = torch.cat([k_cache[:, :, :length], k_new], dim=-2)"
VALUES = "values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)"
MASK = "mask = causal_mask(length + n_new)[-n_new:]"
RESULT = "return grouped_query_attention(q_new, keys, values, mask), keys, values"


def cache_after_step(args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> dict[int, Any]:
    """k_cache and v_cache (arguments 4 and 5) with the step's keys and values written at
    positions length .. length + T - 1: a correct solution may append by writing into the cache."""
    k_cache, v_cache, length = args[3], args[4], args[5]
    _, keys, values = output
    updated = {}
    for index, cache, new in ((3, k_cache, keys), (4, v_cache, values)):
        cache = cache.clone()
        cache[:, :, length : new.shape[-2]] = new[:, :, length:]
        updated[index] = cache
    return updated


register(
    Exercise(
        name="cached_attention_step",
        lesson=LESSON,
        reference=cached_attention_step,
        cases=cached_step_cases,
        updates_in_place=cache_after_step,
        mistakes=catalogue(
            LESSON,
            "cached_attention_step",
            (
                "append_on_wrong_axis",
                "append the new keys/values along the positions axis, dim=-2 of (B, heads, positions, d_head), "
                "not the heads axis (dim=1).",
                edit(KEYS, "keys = torch.cat([k_cache[:, :, :length], k_new], dim=1)"),
                edit(VALUES, "values = torch.cat([v_cache[:, :, :length], v_new], dim=1)"),
                edit(MASK, "mask = causal_mask(keys.shape[-2])[-n_new:]"),
            ),
            (
                "cache_not_sliced",
                "only the first `length` positions of the cache hold tokens: use k_cache[:, :, :length] "
                "(the rest is unused preallocated space), then append.",
                edit(KEYS, "keys = torch.cat([k_cache, k_new], dim=-2)"),
                edit(VALUES, "values = torch.cat([v_cache, v_new], dim=-2)"),
                edit(MASK, "mask = causal_mask(keys.shape[-2])[-n_new:]"),
            ),
            (
                "stale_positions",
                "the new tokens sit at positions length .. length + T - 1: rotate them with "
                "apply_rope(x, torch.arange(length, length + T)), not with the default positions 0 .. T - 1.",
                edit(ROPE, "q_new, k_new = apply_rope(q_new), apply_rope(k_new)"),
            ),
            (
                "positions_off_by_one",
                "the first new token sits at position `length` (positions 0 .. length - 1 are cached): "
                "torch.arange(length, length + T), not torch.arange(length + 1, length + T + 1).",
                edit(
                    "positions = torch.arange(length, length + n_new)",
                    "positions = torch.arange(length + 1, length + n_new + 1)",
                ),
            ),
            (
                "cache_rotated_again",
                "the cached keys were rotated when they were stored: apply RoPE to the new keys only, "
                "not to the whole cache again.",
                edit(KEYS, "keys = apply_rope(torch.cat([k_cache[:, :, :length], k_new], dim=-2))"),
            ),
            (
                "values_rotated",
                "RoPE rotates queries and keys only (it changes their dot products); the values are appended as they are.",
                edit(VALUES, "values = torch.cat([v_cache[:, :, :length], apply_rope(v_new, positions)], dim=-2)"),
            ),
            (
                "query_not_rotated",
                "rotate the new queries too (apply_rope(q_new, positions)): RoPE works through the dot product of a "
                "rotated query with a rotated key.",
                edit(ROPE, "k_new = apply_rope(k_new, positions)"),
            ),
            (
                "causal_mask_top_left",
                "new query i sits at position length + i and may see every key up to there: take the last T rows "
                "of the full causal mask, causal_mask(length + T)[-T:]; causal_mask(T, length + T) is aligned "
                "top-left and hides almost the whole cache.",
                edit(MASK, "mask = causal_mask(n_new, length + n_new)"),
            ),
            (
                "no_causal_mask",
                "a single new token may see every key, but with several new tokens at once (a prompt) each must "
                "not see the ones after it: keep the causal mask rows causal_mask(length + T)[-T:].",
                edit(RESULT, "return grouped_query_attention(q_new, keys, values), keys, values"),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit(
                    RESULT,
                    "return grouped_query_attention(q_new, keys, values, mask).detach(), keys.detach(), values.detach()",
                ),
            ),
            (
                "keys_not_rotated",
                "rotate the new keys too (apply_rope(k_new, positions)) before appending them: the cache holds "
                "rotated keys, and a rotated query against unrotated keys loses the positions.",
                edit(ROPE, "q_new = apply_rope(q_new, positions)"),
            ),
            (
                "query_heads_grouped_cyclically",
                "consecutive query heads share a key/value head: query head h reads key/value head "
                "h // (n_heads // n_kv_heads), so expand keys and values with repeat_interleave(group, dim=1) "
                "(or call grouped_query_attention); .repeat(1, group, 1, 1) pairs head h with h % n_kv_heads.",
                edit(
                    RESULT,
                    "group = q_new.shape[1] // keys.shape[1]\n"
                    "return grouped_query_attention(q_new, keys.repeat(1, group, 1, 1), values.repeat(1, group, 1, 1), "
                    "mask), keys, values",
                ),
            ),
            (
                "softmax_without_max_subtraction",
                "exp of a score above ~88 overflows float32 to inf, and inf / inf is NaN: subtract each row's maximum "
                "before exp (the scores' shift cancels in the ratio), or use torch.softmax or the course's softmax.",
                edit(
                    RESULT,
                    "group = q_new.shape[1] // keys.shape[1]\n"
                    "scores = q_new @ keys.repeat_interleave(group, dim=1).transpose(-1, -2) / q_new.shape[-1] ** 0.5\n"
                    "scores = scores.masked_fill(~mask, float('-inf'))\n"
                    "weights = torch.exp(scores) / torch.exp(scores).sum(dim=-1, keepdim=True)\n"
                    "return weights @ values.repeat_interleave(group, dim=1), keys, values",
                ),
            ),
            (
                "writes_into_the_cache",
                "build new tensors, torch.cat([k_cache[:, :, :length], k_new], dim=-2), instead of writing the new "
                "tokens into k_cache and v_cache: that changes the caller's tensors, which this exercise forbids "
                "(and autograd refuses on a cache that requires grad).",
                edit(VALUES, ""),
                edit(
                    KEYS,
                    "if k_cache.shape[-2] >= length + n_new:\n"
                    "    k_cache[:, :, length:length + n_new] = k_new\n"
                    "    v_cache[:, :, length:length + n_new] = v_new\n"
                    "    keys, values = k_cache[:, :, :length + n_new], v_cache[:, :, :length + n_new]\n"
                    "else:\n"
                    "    keys = torch.cat([k_cache[:, :, :length], k_new], dim=-2)\n"
                    "    values = torch.cat([v_cache[:, :, :length], v_new], dim=-2)",
                ),
            ),
        ),
    )
)
