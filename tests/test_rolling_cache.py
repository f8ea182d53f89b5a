"""The rolling sink + window cache against dense attention with the equivalent mask, both position schemes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course.decoder import Decoder, DecoderConfig
from attention_course.generation import decode_step, new_cache, prefill
from attention_course.rolling_cache import (
    RollingKVCache,
    chronological_slots,
    ring_slot,
    rolling_attention_step,
    rolling_reference,
    sink_window_mask,
)

# float32, softmax over at most a dozen keys: agreement to a few ulps; 1e-5 is the course's float32 budget.
ATOL = 1e-5


def _sequence(batch: int, n_heads: int, n_kv: int, n: int, d: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, n_heads, n, d, generator=gen),
        torch.randn(batch, n_kv, n, d, generator=gen),
        torch.randn(batch, n_kv, n, d, generator=gen),
    )


@pytest.mark.parametrize("scheme", ["absolute", "in_cache"])
@pytest.mark.parametrize(("n_sinks", "window"), [(0, 4), (2, 3), (1, 1), (3, 5)])
def test_every_step_matches_dense_reference_across_many_wraps(scheme: str, n_sinks: int, window: int) -> None:
    n = (n_sinks + window) * 6 + 3  # six wraps and a bit
    q, k, v = _sequence(2, 4, 2, n, 8, seed=n_sinks * 10 + window)
    expected = rolling_reference(q, k, v, n_sinks, window, scheme)
    k_cache = torch.zeros(2, 2, n_sinks + window, 8)
    v_cache = torch.zeros_like(k_cache)
    for p in range(n):
        out, k_cache, v_cache = rolling_attention_step(
            q[:, :, p : p + 1], k[:, :, p : p + 1], v[:, :, p : p + 1], k_cache, v_cache, p, n_sinks, scheme
        )
        torch.testing.assert_close(out, expected[:, :, p : p + 1], atol=ATOL, rtol=1e-4, msg=f"step {p}")
    assert k_cache.shape == (2, 2, n_sinks + window, 8)  # constant memory


def test_absolute_scheme_is_plain_rope_with_the_mask() -> None:
    """Independent oracle for the absolute scheme: torch's SDPA on RoPE'd q, k with the sink-window mask."""
    from attention_course.positional import apply_rope

    q, k, v = _sequence(1, 2, 2, 20, 8, seed=5)
    mask = sink_window_mask(20, 2, 4)
    oracle = torch.nn.functional.scaled_dot_product_attention(apply_rope(q), apply_rope(k), v, attn_mask=mask)
    torch.testing.assert_close(rolling_reference(q, k, v, 2, 4, "absolute"), oracle, atol=ATOL, rtol=1e-4)


def test_in_cache_scheme_differs_from_absolute_after_the_wrap() -> None:
    q, k, v = _sequence(1, 2, 2, 12, 8, seed=6)
    absolute = rolling_reference(q, k, v, 1, 3, "absolute")
    in_cache = rolling_reference(q, k, v, 1, 3, "in_cache")
    torch.testing.assert_close(absolute[:, :, :4], in_cache[:, :, :4], atol=ATOL, rtol=1e-4)  # before the wrap
    assert (absolute[:, :, 5:] - in_cache[:, :, 5:]).abs().max() > 1e-3  # sinks are far away only in one scheme


def test_slots() -> None:
    assert [ring_slot(p, 2, 3) for p in range(9)] == [0, 1, 2, 3, 4, 2, 3, 4, 2]
    assert chronological_slots(3, 2, 3).tolist() == [0, 1, 2, 3]
    assert chronological_slots(5, 2, 3).tolist() == [0, 1, 3, 4, 2]  # token 5 overwrote token 2 in slot 2
    assert chronological_slots(6, 2, 3).tolist() == [0, 1, 4, 2, 3]


def test_inputs_not_changed() -> None:
    q, k, v = _sequence(1, 2, 1, 1, 4, seed=7)
    k_cache, v_cache = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    before = k_cache.clone(), v_cache.clone()
    rolling_attention_step(q, k, v, k_cache, v_cache, 9, 1, "in_cache")
    assert torch.equal(k_cache, before[0]) and torch.equal(v_cache, before[1])


@pytest.mark.parametrize("scheme", ["absolute", "in_cache"])
def test_decoder_with_a_big_enough_rolling_cache_matches_the_ordinary_cache(scheme: str) -> None:
    """Nothing evicted: the rolling cache must give the ordinary cache's logits (prefill + decode)."""
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    model = Decoder(config).eval()
    prompt = torch.randint(0, 32, (2, 5))
    rolling = RollingKVCache(2, 2, 2, config.d_head, n_sinks=2, window=30, scheme=scheme)
    ordinary = new_cache(model, 2)
    with torch.no_grad():
        a, b = prefill(model, prompt, rolling)[:, -1], prefill(model, prompt, ordinary)[:, -1]
        for _ in range(10):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # two layers of float32 arithmetic
            token = a.argmax(-1, keepdim=True)
            a, b = decode_step(model, token, rolling), decode_step(model, token, ordinary)
    assert rolling.memory_bytes() == 2 * 2 * 2 * 2 * 32 * config.d_head * 4


def test_bad_inputs() -> None:
    q, k, v = _sequence(1, 2, 1, 1, 4, seed=8)
    cache = torch.zeros(1, 1, 3, 4)
    with pytest.raises(ValueError, match="scheme must be"):
        rolling_attention_step(q, k, v, cache, cache, 0, 1, "relative")
    with pytest.raises(ValueError, match="room for the 3 sinks"):
        rolling_attention_step(q, k, v, cache, cache, 0, 3)
    with pytest.raises(ValueError, match="one new token"):
        rolling_attention_step(q.expand(1, 2, 2, 4), k, v, cache, cache, 0, 1)
    with pytest.raises(ValueError, match="window must be >= 1"):
        RollingKVCache(1, 1, 1, 4, n_sinks=2, window=0)


@settings(max_examples=25, deadline=None)
@given(
    n_sinks=st.integers(0, 3),
    window=st.integers(1, 5),
    extra=st.integers(0, 12),
    scheme=st.sampled_from(["absolute", "in_cache"]),
    seed=st.integers(0, 2**16),
)
def test_property_rolling_equals_dense_for_any_buffer(
    n_sinks: int, window: int, extra: int, scheme: str, seed: int
) -> None:
    n = n_sinks + window + extra
    q, k, v = _sequence(1, 2, 1, n, 4, seed=seed)
    expected = rolling_reference(q, k, v, n_sinks, window, scheme)
    k_cache = v_cache = torch.zeros(1, 1, n_sinks + window, 4)
    for p in range(n):
        out, k_cache, v_cache = rolling_attention_step(
            q[:, :, p : p + 1], k[:, :, p : p + 1], v[:, :, p : p + 1], k_cache, v_cache, p, n_sinks, scheme
        )
        torch.testing.assert_close(out, expected[:, :, p : p + 1], atol=ATOL, rtol=1e-4)
