"""KV cache (lesson 09): the decoder against an independent PyTorch forward, cached decoding against
recomputation (MHA, GQA, MQA; both cache kinds; greedy and sampled), the cached step against full
causal attention, and the memory formula against the cache tensors' real sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import apply_rope
from attention_course.decoder import Decoder, DecoderConfig
from attention_course.generation import decode_step, generate, new_cache, prefill
from attention_course.kv_cache import (
    GrowingKVCache,
    PreallocatedKVCache,
    cached_attention_step,
    grouped_query_attention,
    kv_cache_bytes,
)
from attention_course.measure import largest_allocation

# float32 agreement between two orders of the same sums: logits here are O(1) and come out of
# 2 layers of d_model=32 dot products; reordered float32 sums differ by a few ulp per layer
# (observed max |difference| ~1e-6), so 1e-5 absolute leaves a margin of ~10x and still fails
# on any real bug (those differ by 1e-2 or more).
ATOL = 1e-5
RTOL = 1e-5
KV_HEADS = {"MHA": 4, "GQA": 2, "MQA": 1}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Token-by-token decoding runs thousands of tiny ops: on a shared 2-core machine, waiting for a
    second OpenMP thread costs more than it saves (this module took 5x longer with 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(n_kv_heads: int = 4, seed: int = 0, **sizes: int) -> Decoder:
    torch.manual_seed(seed)
    config = DecoderConfig(
        **{
            "vocab_size": 50,
            "d_model": 32,
            "n_layers": 2,
            "n_heads": 4,
            "n_kv_heads": n_kv_heads,
            "max_seq_len": 96,
            **sizes,
        }
    )
    return Decoder(config).eval()


def prompt_tokens(batch: int = 2, length: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ the model against an oracle


def rope_by_complex_numbers(x: torch.Tensor) -> torch.Tensor:
    """Half-split RoPE written independently: pair (x_i, x_{i+d/2}) is the complex number
    x_i + i x_{i+d/2}, multiplied by e^{i p theta_i}."""
    length, d = x.shape[-2:]
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turn = torch.polar(torch.ones(length, d // 2, dtype=torch.float64), torch.arange(length)[:, None] * theta)
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2 :].double()) * turn
    return torch.cat([z.real, z.imag], dim=-1).float()


def oracle_forward(model: Decoder, tokens: torch.Tensor) -> torch.Tensor:
    """The same network written with torch.nn.functional only (PyTorch's own GQA attention)."""
    config = model.config
    batch, length = tokens.shape
    h, hkv, d = config.n_heads, config.n_kv_heads, config.d_head
    x = model.embed.weight[tokens]
    for block in model.blocks:
        a = F.layer_norm(x, (config.d_model,), block.norm_attn.weight, block.norm_attn.bias)
        q, k, v = (a @ block.attn.qkv_proj.weight.T).split([h * d, hkv * d, hkv * d], dim=-1)
        q, k, v = (t.view(batch, length, -1, d).transpose(1, 2) for t in (q, k, v))
        heads = F.scaled_dot_product_attention(
            rope_by_complex_numbers(q), rope_by_complex_numbers(k), v, is_causal=True, enable_gqa=True
        )
        x = x + heads.transpose(1, 2).reshape(batch, length, h * d) @ block.attn.o_proj.weight.T
        m = F.layer_norm(x, (config.d_model,), block.norm_mlp.weight, block.norm_mlp.bias)
        x = x + block.mlp[2](F.gelu(block.mlp[0](m)))
    x = F.layer_norm(x, (config.d_model,), model.norm.weight, model.norm.bias)
    return x @ model.lm_head.weight.T


@pytest.mark.parametrize("kind", KV_HEADS)
def test_decoder_matches_an_independent_pytorch_forward(kind: str) -> None:
    model = tiny_model(KV_HEADS[kind])
    tokens = prompt_tokens(batch=2, length=11)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), oracle_forward(model, tokens), atol=ATOL, rtol=RTOL)


def test_earlier_positions_ignore_a_token_appended_later() -> None:
    # Why caching is allowed at all: under the causal mask nothing at position i depends on i+1.
    model, tokens = tiny_model(), prompt_tokens(length=9)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens[:, :8]), model(tokens)[:, :8], atol=ATOL, rtol=RTOL)


# ------------------------------------------------------------------ cached decoding = recomputing


@pytest.mark.parametrize("cache_kind", ["preallocated", "growing"])
@pytest.mark.parametrize("kind", KV_HEADS)
def test_cached_greedy_generation_equals_recomputation(kind: str, cache_kind: str) -> None:
    model, prompt = tiny_model(KV_HEADS[kind]), prompt_tokens()
    tokens, logits = generate(model, prompt, 40, use_cache=False)
    cached_tokens, cached_logits = generate(model, prompt, 40, cache_kind=cache_kind)
    assert torch.equal(cached_tokens, tokens)
    torch.testing.assert_close(cached_logits, logits, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", KV_HEADS)
def test_cached_sampling_equals_recomputation(kind: str) -> None:
    model, prompt = tiny_model(KV_HEADS[kind]), prompt_tokens()
    runs = [
        generate(model, prompt, 30, use_cache=use_cache, temperature=1.5, generator=torch.Generator().manual_seed(7))
        for use_cache in (False, True)
    ]
    assert torch.equal(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[1][1], runs[0][1], atol=ATOL, rtol=RTOL)
    assert len(set(runs[0][0][0].tolist())) > 5, "temperature 1.5 should sample many different tokens"


def test_prompt_fed_in_chunks_equals_one_pass() -> None:
    # Several new tokens after a non-empty cache: the causal mask must be aligned bottom-right.
    model, tokens = tiny_model(2), prompt_tokens(length=12)
    with torch.no_grad():
        whole = model(tokens)
        for cache in (new_cache(model, 2, "preallocated"), new_cache(model, 2, "growing")):
            chunks = [model(tokens[:, a:b], cache=cache) for a, b in ((0, 5), (5, 6), (6, 12))]
            torch.testing.assert_close(torch.cat(chunks, dim=1), whole, atol=ATOL, rtol=RTOL)
            assert cache.length == 12


def test_a_learners_step_drops_into_the_growing_cache() -> None:
    model, prompt, calls = tiny_model(1), prompt_tokens(), []

    def learner_step(*args):
        calls.append(args[-1])
        return cached_attention_step(*args)

    tokens, _ = generate(model, prompt, 6, cache_kind="growing", step_fn=learner_step)
    assert torch.equal(tokens, generate(model, prompt, 6, use_cache=False)[0])
    # prefill + 5 decode steps, each through both layers, at lengths 0, 5, 6, ..., 9.
    assert calls == [length for length in (0, 5, 6, 7, 8, 9) for _ in range(2)]


def test_prefill_then_decode_steps_by_hand() -> None:
    model, prompt = tiny_model(2), prompt_tokens(batch=1, length=4)
    with torch.no_grad():
        cache = new_cache(model, 1)
        logits = prefill(model, prompt, cache)[:, -1]
        sequence = prompt
        for _ in range(3):
            token = logits.argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, token], dim=1)
            logits = decode_step(model, token, cache)
            torch.testing.assert_close(logits, model(sequence)[:, -1], atol=ATOL, rtol=RTOL)
    assert cache.length == 7


# ------------------------------------------------------------------ the cached step and GQA


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2),
    n_kv_heads=st.sampled_from([1, 2, 4]),
    group=st.sampled_from([1, 2, 3]),
    d_half=st.integers(1, 8),
    length=st.integers(0, 12),
    n_new=st.integers(1, 5),
    slack=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_cached_step_is_the_last_rows_of_full_causal_attention(
    batch, n_kv_heads, group, d_half, length, n_new, slack, seed
) -> None:
    g = torch.Generator().manual_seed(seed)
    n_heads, d_head, total = n_kv_heads * group, 2 * d_half, length + n_new
    q, k, v = (torch.randn(batch, h, total, d_head, generator=g) for h in (n_heads, n_kv_heads, n_kv_heads))
    q_rot, k_rot = apply_rope(q), apply_rope(k)
    full = F.scaled_dot_product_attention(q_rot, k_rot, v, is_causal=True, enable_gqa=True)
    junk = torch.randn(batch, n_kv_heads, slack, d_head, generator=g)  # unused preallocated space
    k_cache, v_cache = torch.cat([k_rot[:, :, :length], junk], dim=2), torch.cat([v[:, :, :length], junk], dim=2)
    out, keys, values = cached_attention_step(
        q[:, :, length:], k[:, :, length:], v[:, :, length:], k_cache, v_cache, length
    )
    # RoPE angles up to ~17 rad in float32 and sums over <= 17 keys: agreement to ~1e-6.
    torch.testing.assert_close(out, full[:, :, length:], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(keys, k_rot, atol=ATOL, rtol=RTOL)
    assert torch.equal(values, v)


def test_cached_step_changes_none_of_its_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 2, 1, 4, generator=g)] + [torch.randn(1, 1, n, 4, generator=g) for n in (1, 1, 5, 5)]
    before = [t.clone() for t in inputs]
    cached_attention_step(*inputs, 3)
    assert all(torch.equal(a, b) for a, b in zip(inputs, before, strict=True))


@settings(max_examples=25, deadline=None)
@given(
    n_kv_heads=st.sampled_from([1, 2, 3]),
    group=st.sampled_from([1, 2, 4]),
    n_queries=st.integers(1, 6),
    n_keys=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_grouped_query_attention_matches_pytorch(n_kv_heads, group, n_queries, n_keys, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, n_kv_heads * group, n_queries, 8, generator=g)
    k, v = (torch.randn(2, n_kv_heads, n_keys, 8, generator=g) for _ in range(2))
    mask = torch.rand(n_queries, n_keys, generator=g) > 0.3
    mask[:, 0] = True  # no fully masked rows: PyTorch returns NaN there, the course returns zeros
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    # Same sums in a different order (float32, <= 9 keys of width 8).
    torch.testing.assert_close(grouped_query_attention(q, k, v, mask), expected, atol=ATOL, rtol=RTOL)


@settings(max_examples=25, deadline=None)
@given(
    n_kv_heads=st.sampled_from([1, 2, 3]),
    group=st.sampled_from([1, 2, 4]),
    n_queries=st.integers(1, 5),
    n_keys=st.integers(2, 9),
    per_head=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_grouped_query_attention_takes_4d_masks(n_kv_heads, group, n_queries, n_keys, per_head, seed) -> None:
    """A (B, 1, 1, S) padding mask (and a per-head (B, H, L, S) one) means the same as for PyTorch, even
    when B equals the number of key/value heads (where a naive broadcast lines B up with the heads)."""
    g = torch.Generator().manual_seed(seed)
    batch = n_kv_heads  # the case that used to go silently wrong
    q = torch.randn(batch, n_kv_heads * group, n_queries, 8, generator=g)
    k, v = (torch.randn(batch, n_kv_heads, n_keys, 8, generator=g) for _ in range(2))
    shape = (batch, n_kv_heads * group, n_queries, n_keys) if per_head else (batch, 1, 1, n_keys)
    mask = torch.rand(shape, generator=g) > 0.4
    mask[..., 0] = True  # no fully masked rows (PyTorch gives NaN there)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    torch.testing.assert_close(grouped_query_attention(q, k, v, mask), expected, atol=ATOL, rtol=RTOL)


def test_grouped_query_attention_refuses_ambiguous_masks() -> None:
    q, k = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 5, 8)
    with pytest.raises(ValueError, match=r"mask must be \(S,\), \(L, S\) or \(B, heads, L, S\)"):
        grouped_query_attention(q, k, k, torch.ones(2, 3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        grouped_query_attention(q, k, k, torch.ones(2, 2, 3, 5, dtype=torch.bool))  # 2 is not 1 or 4 heads


def test_grouped_query_attention_copies_no_key_per_query_head() -> None:
    """32 query heads on 4 key/value heads, S = 4096: nothing as large as one K cache is allocated."""
    q = torch.randn(1, 32, 1, 64)
    k, v = (torch.randn(1, 4, 4096, 64) for _ in range(2))
    cache_bytes = k.numel() * k.element_size()  # 4 MiB
    out, largest = largest_allocation(grouped_query_attention, q, k, v)
    # The largest tensor is the scores (1, 4, 8, 4096) floats: 512 KiB, an eighth of the K cache; the old
    # broadcast made a 32 MiB copy of K (8x the cache).
    assert largest <= cache_bytes // 4, largest
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, enable_gqa=True), atol=ATOL, rtol=RTOL)


# ------------------------------------------------------------------ memory


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", KV_HEADS)
def test_memory_formula_matches_a_preallocated_cache(kind: str, dtype: torch.dtype) -> None:
    cache = PreallocatedKVCache(3, 2, KV_HEADS[kind], 40, 16, dtype=dtype)
    real = sum(t.numel() * t.element_size() for t in (cache.keys, cache.values))
    assert cache.memory_bytes() == real == kv_cache_bytes(3, KV_HEADS[kind], 16, 40, dtype.itemsize, batch_size=2)


@pytest.mark.parametrize("kind", KV_HEADS)
def test_memory_formula_matches_a_growing_cache_after_generation(kind: str) -> None:
    model, prompt = tiny_model(KV_HEADS[kind]), prompt_tokens(batch=3)
    cache = GrowingKVCache(model.config.n_layers)
    with torch.no_grad():
        prefill(model, prompt, cache)
        for _ in range(7):
            decode_step(model, torch.zeros(3, 1, dtype=torch.long), cache)
    real = sum(t.numel() * t.element_size() for layer in zip(cache.keys, cache.values, strict=True) for t in layer)
    config = model.config
    assert cache.length == 12
    assert real == cache.memory_bytes() == kv_cache_bytes(config.n_layers, KV_HEADS[kind], config.d_head, 12, 4, 3)


def test_memory_formula_for_published_configs() -> None:
    # GPT-2 small: 12 layers, 12 heads of 64, 1024 tokens, float16 -> 36 MiB.
    assert kv_cache_bytes(12, 12, 64, 1024, 2) == 36 * 2**20
    # Llama-2-7B (MHA, 32 heads of 128, 32 layers) at 4096 tokens in float16: exactly 2 GiB; 8 KV heads (GQA): 1/4.
    assert kv_cache_bytes(32, 32, 128, 4096, 2) == 2 * 2**30
    assert kv_cache_bytes(32, 8, 128, 4096, 2) == 2**30 // 2


# ------------------------------------------------------------------ bad input


def test_bad_inputs_are_named() -> None:
    q, k = torch.zeros(1, 2, 1, 4), torch.zeros(1, 1, 1, 4)
    cache = torch.zeros(1, 1, 3, 4)
    with pytest.raises(ValueError, match="k_cache"):
        cached_attention_step(q, k, k, cache, cache, 4)
    with pytest.raises(ValueError, match="k_cache and v_cache"):
        cached_attention_step(q, k, k, torch.zeros(1, 2, 3, 4), cache, 1)
    with pytest.raises(ValueError, match="k_new"):
        cached_attention_step(q, torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4), cache, cache, 1)
    with pytest.raises(ValueError, match="q_new must have exactly 4 dimensions"):
        cached_attention_step(q[0], k, k, cache, cache, 1)
    with pytest.raises(TypeError, match="length"):
        cached_attention_step(q, k, k, cache, cache, 1.0)
    with pytest.raises(ValueError, match="divide"):
        grouped_query_attention(torch.zeros(1, 3, 1, 4), torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    with pytest.raises(ValueError, match="n_kv_heads"):
        DecoderConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="d_model"):
        DecoderConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="n_tokens"):
        kv_cache_bytes(1, 1, 1, -1)
    with pytest.raises(ValueError, match="n_layers"):
        kv_cache_bytes(0, 1, 1, 1)


def test_bad_generation_calls_are_named() -> None:
    model, prompt = tiny_model(), prompt_tokens()
    with pytest.raises(TypeError, match="tokens must be integer"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, prompt, 200)
    with pytest.raises(ValueError, match="kind"):
        new_cache(model, 2, "paged")
    cache = new_cache(model, 2, capacity=6)
    with torch.no_grad():
        prefill(model, prompt, cache)
        with pytest.raises(ValueError, match="empty cache"):
            prefill(model, prompt, cache)
        with pytest.raises(ValueError, match="one new token"):
            decode_step(model, prompt[:, :2], cache)
        decode_step(model, prompt[:, :1], cache)
        with pytest.raises(ValueError, match="holds 6 tokens"):
            decode_step(model, prompt[:, :1], cache)


def test_cache_sizes_must_be_whole_counts() -> None:
    with pytest.raises(TypeError, match="n_layers must be an int"):
        kv_cache_bytes(2.5, 4, 64, 100)
    with pytest.raises(ValueError, match="n_tokens must be >= 0"):
        kv_cache_bytes(2, 4, 64, -1)
    with pytest.raises(ValueError, match="bytes_per_element must be positive"):
        kv_cache_bytes(2, 4, 64, 100, bytes_per_element=0)
    assert kv_cache_bytes(2, 4, 64, 0) == 0
    with pytest.raises(TypeError, match="capacity must be an int"):
        PreallocatedKVCache(2, 1, 4, 8.0, 16)
    with pytest.raises(TypeError, match="n_layers must be an int"):
        GrowingKVCache(True)
