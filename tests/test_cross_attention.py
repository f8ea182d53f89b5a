"""Cross-attention against nn.MultiheadAttention, its properties, and the toy encoder–decoder."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attention_course import multi_head_attention
from attention_course.cross_attention import (
    BOS,
    attend_memory,
    cross_attention,
    cross_attention_alignment,
    encode_memory,
    greedy_decode,
    make_batch,
    teacher_forcing_input,
    toy_accuracy,
    train_toy,
)

# float32 with d_model <= 32: each output is a few dot products of length <= 32 whose rounding
# errors (~1e-7 relative) stay well below 1e-5; a real bug (wrong head, mask, scale) moves
# outputs by ~1e-1.
ATOL = 1e-5


def _weights(d_model: int, generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(d_model, d_model, generator=generator) / math.sqrt(d_model) for _ in range(4)]


def _inputs(batch: int, n_dec: int, n_enc: int, d_model: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    decoder = torch.randn(batch, n_dec, d_model, generator=generator)
    encoder = torch.randn(batch, n_enc, d_model, generator=generator)
    return decoder, encoder, _weights(d_model, generator)


@pytest.mark.parametrize("with_mask", [False, True])
def test_matches_torch_multihead_attention(with_mask: bool) -> None:
    torch.manual_seed(0)
    d_model, n_heads = 16, 4
    mha = nn.MultiheadAttention(d_model, n_heads, bias=False, batch_first=True)
    decoder, encoder, _ = _inputs(3, 5, 7, d_model)
    encoder_mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [True] * 1 + [False] * 6]) if with_mask else None
    with torch.no_grad():
        expected, expected_weights = mha(
            decoder,
            encoder,
            encoder,
            key_padding_mask=None if encoder_mask is None else ~encoder_mask,  # torch: True = ignore
            average_attn_weights=False,
        )
    w_q, w_k, w_v = (w.T for w in mha.in_proj_weight.detach().chunk(3))  # nn.Linear layout -> equation layout
    got, weights = cross_attention(
        decoder, encoder, w_q, w_k, w_v, mha.out_proj.weight.detach().T, n_heads, encoder_mask
    )
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(weights, expected_weights, atol=ATOL, rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    n_dec=st.integers(1, 6),
    n_enc=st.integers(1, 6),
    n_heads=st.sampled_from([1, 2, 4]),
    d_head=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_equals_multi_head_attention_with_encoder_keys(batch, n_dec, n_enc, n_heads, d_head, seed) -> None:
    d_model = n_heads * d_head
    decoder, encoder, weights = _inputs(batch, n_dec, n_enc, d_model, seed)
    lengths = torch.randint(1, n_enc + 1, (batch,), generator=torch.Generator().manual_seed(seed))
    encoder_mask = torch.arange(n_enc) < lengths[:, None]
    got, got_weights = cross_attention(decoder, encoder, *weights, n_heads, encoder_mask)
    expected, expected_weights = multi_head_attention(
        decoder, encoder, encoder, *weights, n_heads, mask=encoder_mask[:, None, None, :]
    )
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(got_weights, expected_weights, atol=ATOL, rtol=1e-4)
    assert got.shape == (batch, n_dec, d_model) and got_weights.shape == (batch, n_heads, n_dec, n_enc)
    torch.testing.assert_close(got_weights.sum(-1), torch.ones(batch, n_heads, n_dec))
    assert not got_weights.masked_select(~encoder_mask[:, None, None, :]).any()


def test_every_decoder_position_reads_the_whole_source() -> None:
    """No causal mask: the first decoder position already weighs the last encoder position."""
    decoder, encoder, weights = _inputs(2, 3, 5, 8)
    _, attention = cross_attention(decoder, encoder, *weights, 2)
    assert (attention > 0).all()
    # ...and changing only the last source token changes what decoder position 0 reads.
    changed = encoder.clone()
    changed[:, -1] += 1.0
    before = cross_attention(decoder, encoder, *weights, 2)[0][:, 0]
    after = cross_attention(decoder, changed, *weights, 2)[0][:, 0]
    assert (before - after).abs().max() > 1e-3


def test_decoder_positions_do_not_read_each_other() -> None:
    """Row t of the output depends on decoder row t only (cross-attention mixes encoder positions only)."""
    decoder, encoder, weights = _inputs(2, 4, 5, 8)
    changed = decoder.clone()
    changed[:, 2] = torch.randn(2, 8)
    before = cross_attention(decoder, encoder, *weights, 4)[0]
    after = cross_attention(changed, encoder, *weights, 4)[0]
    untouched = [0, 1, 3]
    torch.testing.assert_close(after[:, untouched], before[:, untouched])
    assert (after[:, 2] - before[:, 2]).abs().max() > 1e-3


def test_padded_source_positions_change_nothing() -> None:
    decoder, encoder, weights = _inputs(2, 3, 6, 8)
    encoder_mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    garbage = encoder.clone()
    garbage[0, 4:] = 100.0
    clean = cross_attention(decoder, encoder, *weights, 2, encoder_mask)[0]
    torch.testing.assert_close(cross_attention(decoder, garbage, *weights, 2, encoder_mask)[0], clean)


def test_permuting_the_source_permutes_only_the_weights() -> None:
    """Without positions, attention treats the source as a set: output unchanged, weights' columns permuted."""
    decoder, encoder, weights = _inputs(1, 3, 5, 8)
    order = torch.tensor([3, 0, 4, 1, 2])
    out, attention = cross_attention(decoder, encoder, *weights, 2)
    out_perm, attention_perm = cross_attention(decoder, encoder[:, order], *weights, 2)
    torch.testing.assert_close(out_perm, out, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(attention_perm, attention[..., order])


def test_memory_computed_once_gives_the_same_steps() -> None:
    """Decoding one position at a time against a cached memory equals the all-at-once pass."""
    decoder, encoder, (w_q, w_k, w_v, w_o) = _inputs(2, 4, 5, 8)
    full, full_weights = cross_attention(decoder, encoder, w_q, w_k, w_v, w_o, 2)
    memory = encode_memory(encoder, w_k, w_v, 2)
    steps = [attend_memory(decoder[:, t : t + 1], memory, w_q, w_o) for t in range(4)]
    torch.testing.assert_close(torch.cat([out for out, _ in steps], dim=1), full, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(torch.cat([w for _, w in steps], dim=2), full_weights, atol=ATOL, rtol=1e-4)


def test_gradients_match_torch() -> None:
    """Autograd through the reference gives the same gradients as through nn.MultiheadAttention."""
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, bias=False, batch_first=True, dtype=torch.float64)
    decoder = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    encoder = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    mha(decoder, encoder, encoder)[0].square().sum().backward()
    expected = decoder.grad.clone(), encoder.grad.clone()
    decoder.grad = encoder.grad = None
    w_q, w_k, w_v = (w.T for w in mha.in_proj_weight.detach().chunk(3))
    cross_attention(decoder, encoder, w_q, w_k, w_v, mha.out_proj.weight.detach().T, 2)[0].square().sum().backward()
    # float64: agreement to ~1e-12; 1e-9 leaves room for a different summation order.
    torch.testing.assert_close((decoder.grad, encoder.grad), expected, atol=1e-9, rtol=1e-9)


def test_bad_inputs_name_the_argument() -> None:
    decoder, encoder, weights = _inputs(2, 3, 5, 8)
    with pytest.raises(TypeError, match="decoder_states"):
        cross_attention(decoder.long(), encoder, *weights, 2)
    with pytest.raises(ValueError, match="encoder_states"):
        cross_attention(decoder, encoder[0], *weights, 2)
    with pytest.raises(ValueError, match=r"share batch size and d_model.*\(2, 3, 8\).*\(2, 5, 6\)"):
        cross_attention(decoder, encoder[..., :6], *weights, 2)
    with pytest.raises(ValueError, match=r"w_k must be \(d_model, d_model\)"):
        cross_attention(decoder, encoder, weights[0], weights[1][:, :4], *weights[2:], 2)
    with pytest.raises(ValueError, match="n_heads=3"):
        cross_attention(decoder, encoder, *weights, 3)
    with pytest.raises(ValueError, match="encoder_mask"):
        cross_attention(decoder, encoder, *weights, 2, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="encoder_mask"):
        cross_attention(decoder, encoder, *weights, 2, torch.ones(2, 5))


def test_toy_data() -> None:
    generator = torch.Generator().manual_seed(0)
    src, tgt = make_batch("reverse", 4, 5, generator)
    assert torch.equal(tgt, src.flip(-1)) and src.dtype == torch.int64 and 0 <= src.min() and src.max() <= 9
    src, tgt = make_batch("sort", 4, 5, generator)
    assert torch.equal(tgt, src.sort(-1).values)
    assert torch.equal(teacher_forcing_input(torch.tensor([[4, 5, 6]])), torch.tensor([[BOS, 4, 5]]))
    with pytest.raises(ValueError, match="task"):
        make_batch("shuffle", 4, 5, generator)


@pytest.fixture(scope="module")
def reverse_model():
    # The lesson's budget: 150 steps train in a few seconds on one CPU thread.
    model, losses = train_toy("reverse", steps=150, seed=0)
    return model, losses


def test_reverse_model_learns_from_a_fixed_seed(reverse_model) -> None:
    model, losses = reverse_model
    token_accuracy, sequence_accuracy = toy_accuracy(model, "reverse")
    # Seed 0 reaches 100 % on 512 fresh sequences; the margin absorbs float differences across CPUs.
    assert token_accuracy >= 0.99 and sequence_accuracy >= 0.95, (token_accuracy, sequence_accuracy)
    assert losses[-1] < 0.1 < losses[0]


def test_reverse_alignment_is_the_anti_diagonal(reverse_model) -> None:
    model, _ = reverse_model
    src, _ = make_batch("reverse", 64, model.length, torch.Generator().manual_seed(5))
    tokens, alignment = cross_attention_alignment(model, src)
    assert alignment.shape == (64, model.length, model.length)
    read = alignment.argmax(-1)  # (B, T): the source position each output step reads most
    anti_diagonal = torch.arange(model.length - 1, -1, -1)
    assert (read == anti_diagonal).float().mean() >= 0.95
    assert alignment.mean(0).flip(-1).diagonal().mean() > 0.8  # most weight sits on the anti-diagonal


def test_greedy_decoding_agrees_with_teacher_forcing(reverse_model) -> None:
    """Encoding the source once and decoding step by step gives the teacher-forced pass's predictions."""
    model, _ = reverse_model
    src, _ = make_batch("reverse", 32, model.length, torch.Generator().manual_seed(9))
    tokens, weights = greedy_decode(model, src)
    with torch.no_grad():
        logits, forced_weights = model(src, teacher_forcing_input(tokens))
    assert torch.equal(logits.argmax(-1), tokens)
    torch.testing.assert_close(weights, forced_weights, atol=ATOL, rtol=1e-4)
