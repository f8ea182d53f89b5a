"""MLA: the naive (up-projected) and absorbed forms against ordinary attention on the rebuilt K and V."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attention_course.mla import (
    LatentKVCache,
    MLAWeights,
    mla_absorbed_step,
    mla_cache_bytes,
    mla_forward,
    mla_naive_step,
)
from attention_course.positional import apply_rope

# float32 over a few dozen-term dot products: the forms associate the products differently, which
# moves the last bits (~1e-7 relative); 1e-5 is the course's float32 budget.
ATOL = 1e-5


def _uncompressed(x: torch.Tensor, w: MLAWeights) -> torch.Tensor:
    """Plain causal multi-head attention (torch's SDPA) on K, V up-projected from the latents."""
    q_nope, q_rope = w.queries(x)
    q = torch.cat([q_nope, apply_rope(q_rope)], dim=-1)  # (B, H, N, d_nope + d_rope)
    latents, k_rope = w.cache_entries(x, 0)
    keys, values = w.up_projected(latents, k_rope)
    heads = F.scaled_dot_product_attention(q, keys, values, is_causal=True)  # (B, H, N, d_v)
    return torch.einsum("bhtv,hvd->btd", heads, w.w_o)


@pytest.mark.parametrize(
    ("batch", "n_heads", "d_latent", "d_nope", "d_rope", "d_v"),
    [(1, 2, 8, 4, 2, 6), (2, 4, 16, 8, 4, 8), (3, 3, 5, 6, 2, 4)],
)
def test_naive_absorbed_and_uncompressed_agree(
    batch: int, n_heads: int, d_latent: int, d_nope: int, d_rope: int, d_v: int
) -> None:
    d_model, n = 12, 9
    w = MLAWeights.random(d_model, n_heads, d_latent, d_nope, d_rope, d_v, seed=1)
    x = torch.randn(batch, n, d_model, generator=torch.Generator().manual_seed(2))
    expected = _uncompressed(x, w)
    for absorbed in (False, True):
        cache = LatentKVCache(1, batch, n, d_latent, d_rope)
        prompt = mla_forward(x[:, :4], w, cache, absorbed=absorbed)  # prefill 4 tokens
        cache.advance(4)
        steps = [prompt]
        for t in range(4, n):  # then one token at a time
            steps.append(mla_forward(x[:, t : t + 1], w, cache, absorbed=absorbed))
            cache.advance(1)
        torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=ATOL, rtol=1e-4)


def test_forms_agree_step_by_step() -> None:
    gen = torch.Generator().manual_seed(3)
    w = MLAWeights.random(16, 4, 10, 6, 4, 5, seed=3)
    q_nope, q_rope = torch.randn(2, 4, 1, 6, generator=gen), torch.randn(2, 4, 1, 4, generator=gen)
    latents, k_rope = torch.randn(2, 7, 10, generator=gen), torch.randn(2, 7, 4, generator=gen)
    args = (q_nope, q_rope, latents, k_rope, w.w_uk, w.w_uv, w.w_o)
    torch.testing.assert_close(mla_absorbed_step(*args), mla_naive_step(*args), atol=ATOL, rtol=1e-4)


def test_absorbed_form_never_builds_per_head_keys() -> None:
    """The absorbed step's largest tensor is smaller than the naive step's per-head keys/values."""
    from attention_course.measure import largest_allocation

    gen = torch.Generator().manual_seed(4)
    w = MLAWeights.random(64, 16, 32, 64, 16, 64, seed=4)
    args = (
        torch.randn(1, 16, 1, 64, generator=gen),
        torch.randn(1, 16, 1, 16, generator=gen),
        torch.randn(1, 512, 32, generator=gen),
        torch.randn(1, 512, 16, generator=gen),
        w.w_uk,
        w.w_uv,
        w.w_o,
    )
    _, naive = largest_allocation(mla_naive_step, *args)
    _, absorbed = largest_allocation(mla_absorbed_step, *args)
    per_head_keys = 16 * 512 * 64 * 4
    assert naive >= per_head_keys
    assert absorbed < per_head_keys / 4


def test_cache_memory_matches_formula() -> None:
    cache = LatentKVCache(3, 2, 50, 24, 8)
    assert cache.memory_bytes() == mla_cache_bytes(3, 24, 8, 50, bytes_per_element=4, batch_size=2)


def test_bad_inputs() -> None:
    w = MLAWeights.random(8, 2, 6, 4, 2, 4)
    good = (
        torch.randn(1, 2, 1, 4),
        torch.randn(1, 2, 1, 2),
        torch.randn(1, 3, 6),
        torch.randn(1, 3, 2),
        w.w_uk,
        w.w_uv,
        w.w_o,
    )
    with pytest.raises(ValueError, match="w_uk must be"):
        mla_absorbed_step(*good[:4], w.w_uk.transpose(1, 2), *good[5:])
    with pytest.raises(ValueError, match="exactly 3 dimensions"):
        mla_naive_step(*good[:2], good[2][0], *good[3:])
    with pytest.raises(ValueError, match="d_rope must be even"):
        MLAWeights.random(8, 2, 4, 4, 3, 4)
    cache = LatentKVCache(1, 1, 2, 6, 2)
    with pytest.raises(ValueError, match="holds 2 tokens"):
        mla_forward(torch.randn(1, 3, 8), w, cache)
