"""The hand-made lesson data: shapes, the stories the lessons tell with it, and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import scaled_dot_product_attention
from attention_course.teaching.sentences import (
    MOLE_CONTEXTS,
    MOLE_SENSES,
    PAD,
    TIGER_FEATURES,
    Sentence,
    embed,
    mole_sentence,
    padded_batch,
    tiger_sentence,
    tiger_word,
)


def _weights_of(sentence: Sentence, query: torch.Tensor) -> torch.Tensor:
    """Lesson 01's attention: softmax of plain dot products, no scaling. ``(L,)``."""
    _, weights = scaled_dot_product_attention(
        query[None], sentence.embeddings, sentence.embeddings, scale=1.0, return_weights=True
    )
    return weights[0]


def test_tiger_sentence_shapes_and_words() -> None:
    sentence = tiger_sentence()
    assert len(sentence) == 15
    assert sentence.embeddings.shape == (15, len(TIGER_FEATURES))
    assert sentence.embeddings.dtype == torch.float32
    assert torch.equal(sentence.vector("tiger"), tiger_word("tiger"))
    assert sentence.index("it") == 12


def test_it_alone_is_ambiguous_and_thirsty_resolves_it() -> None:
    """Lesson 01's claim: bare "it" weighs tiger and tree equally; "it" + "thirsty" prefers the tiger."""
    sentence = tiger_sentence()
    bare = _weights_of(sentence, sentence.vector("it"))
    tiger, tree = sentence.index("tiger"), sentence.index("tree")
    assert bare[tiger] == pytest.approx(float(bare[tree]))
    in_context = _weights_of(sentence, sentence.vector("it") + sentence.vector("thirsty"))
    assert int(in_context.argmax()) == tiger
    assert in_context[tiger] > 3 * in_context[tree]


@pytest.mark.parametrize("sense", list(MOLE_CONTEXTS))
def test_mole_moves_towards_its_context(sense: str) -> None:
    """The weighted average of "mole" leans towards the sentence's sense, which "mole" alone does not."""
    sentence = mole_sentence(sense)
    assert sentence.features == MOLE_SENSES
    mole = sentence.vector("mole")
    assert torch.all(mole == mole[0])  # alone, an even mix of the three senses
    output = _weights_of(sentence, mole) @ sentence.embeddings
    assert int(output.argmax()) == MOLE_SENSES.index(sense)


def test_padded_batch() -> None:
    tokens, embeddings, lengths = padded_batch(["a b c", "a"], d_model=4, seed=1)
    assert tokens == [["a", "b", "c"], ["a", PAD, PAD]]
    assert embeddings.shape == (2, 3, 4)
    assert lengths.tolist() == [3, 1]
    assert torch.equal(embeddings[0, 0], embeddings[1, 0])  # same word, same vector
    assert not torch.equal(embeddings[0, 1], embeddings[0, 2])
    again = padded_batch(["a b c", "a"], d_model=4, seed=1)[1]
    assert torch.equal(embeddings, again)


_words = st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=6).map(" ".join)


@settings(max_examples=30, deadline=None)
@given(texts=st.lists(_words, min_size=1, max_size=4), d_model=st.integers(1, 5))
def test_padded_batch_properties(texts: list[str], d_model: int) -> None:
    """Padding sits exactly past each sentence's length; equal words (and pads) share one vector."""
    tokens, embeddings, lengths = padded_batch(texts, d_model=d_model)
    max_len = max(len(t.split()) for t in texts)
    assert embeddings.shape == (len(texts), max_len, d_model)
    assert lengths.tolist() == [len(t.split()) for t in texts]
    flat_tokens = [word for row in tokens for word in row]
    flat_vectors = embeddings.reshape(-1, d_model)
    for b, row in enumerate(tokens):
        assert row[: lengths[b]] == texts[b].split()
        assert all(word == PAD for word in row[lengths[b] :])
    for i, word in enumerate(flat_tokens):
        first = flat_tokens.index(word)
        assert torch.equal(flat_vectors[i], flat_vectors[first])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="'zebra'"):
        tiger_sentence().index("zebra")
    with pytest.raises(ValueError, match="sense must be one of"):
        mole_sentence("music")
    with pytest.raises(ValueError, match="no embedding"):
        embed(["unknown"], {"known": {}}, ["f"])
    with pytest.raises(ValueError, match="features"):
        embed(["w"], {"w": {"colour": 1.0}}, ["f"])
    with pytest.raises(ValueError, match=r"\(L, d_model\)"):
        Sentence(("a", "b"), torch.zeros(3, 2), ("f", "g"))
    with pytest.raises(ValueError, match="at least one sentence"):
        padded_batch([])
    with pytest.raises(ValueError, match="at least one word"):
        padded_batch(["a", " "])
