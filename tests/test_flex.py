"""FlexAttention (eager, CPU) under every lesson-10 pattern == the course's dense masked attention."""

from __future__ import annotations

import pytest
import torch

from attention_course import scaled_dot_product_attention
from attention_course.flex import (
    alibi_score_mod,
    flex,
    flex_pattern_attention,
    pattern_block_mask,
    sink_window_pattern,
    soft_cap_score_mod,
)
from attention_course.sparse import (
    bigbird_pattern,
    block_sparse_attention,
    dilated_window_pattern,
    fixed_pattern,
    longformer_pattern,
    sliding_window_pattern,
    strided_pattern,
)

N = 40  # not a multiple of the block size: the last tile is partial
# float32; flex's reference path computes the same softmax in a different order: a few ulps.
ATOL = 1e-5

PATTERNS = [
    sliding_window_pattern(N, 3),
    sliding_window_pattern(N, 3, causal=True),
    dilated_window_pattern(N, 2, 3),
    dilated_window_pattern(N, 2, 3, causal=True),
    strided_pattern(N, 6),
    strided_pattern(N, 6, causal=False),
    fixed_pattern(N, 8, 2),
    fixed_pattern(N, 8, 2, causal=False),
    longformer_pattern(N, 2, [0, 17]),
    longformer_pattern(N, 2, [0, 17], causal=True),
    bigbird_pattern(N, 2, [0], 2, 8),
    bigbird_pattern(N, 2, [0], 2, 8, causal=True),
    sink_window_pattern(N, 2, 5),
]


def _qkv(seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, N, 8, generator=gen) for _ in range(3))


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
def test_every_pattern_matches_dense_masked_attention(pattern) -> None:
    q, k, v = _qkv()
    dense = scaled_dot_product_attention(q, k, v, pattern.mask())
    torch.testing.assert_close(flex_pattern_attention(q, k, v, pattern, block_size=16), dense, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(
        flex_pattern_attention(q, k, v, pattern, use_block_mask=False), dense, atol=ATOL, rtol=1e-4
    )


def test_block_mask_matches_the_course_layout() -> None:
    pattern = longformer_pattern(64, 3, [0])
    block_mask = pattern_block_mask(pattern, block_size=16)
    dense_blocks = block_mask.to_dense()[0, 0].bool()  # (4, 4): which tiles flex visits
    assert torch.equal(dense_blocks, pattern.layout(16))
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 64, 8, generator=gen) for _ in range(3))
    torch.testing.assert_close(
        flex(q, k, v, block_mask=block_mask),
        block_sparse_attention(q, k, v, pattern.layout(16), 16, mask_fn=pattern.allows),
        atol=ATOL,
        rtol=1e-4,
    )


def test_score_mods_match_their_dense_formulas() -> None:
    q, k, v = _qkv(2)
    i, j = torch.arange(N)[:, None], torch.arange(N)[None, :]
    scores = q @ k.transpose(-2, -1) / 8**0.5  # (B, H, N, N)
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / 3) for h in range(3)])[:, None, None]
    alibi = torch.softmax(scores - slopes * (i - j), dim=-1) @ v
    torch.testing.assert_close(flex(q, k, v, score_mod=alibi_score_mod(3)), alibi, atol=ATOL, rtol=1e-4)
    capped = torch.softmax(2.0 * torch.tanh(scores / 2.0), dim=-1) @ v
    torch.testing.assert_close(flex(q, k, v, score_mod=soft_cap_score_mod(2.0)), capped, atol=ATOL, rtol=1e-4)


def test_bad_inputs() -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="pattern is for N=10"):
        flex_pattern_attention(q, k, v, sliding_window_pattern(10, 2))
    with pytest.raises(ValueError, match="exactly 4 dimensions"):
        flex(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="cap must be positive"):
        soft_cap_score_mod(0.0)
