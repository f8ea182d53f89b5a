"""Small hand-made sentences with embeddings you can read (lessons 01–05).

Real embeddings have hundreds of dimensions that mean nothing to a human. The ones here have a
handful, each named (``"animal"``, ``"water"``, ...), and every number was chosen by hand, so a
learner can predict a dot product before computing it.

- :func:`tiger_sentence`: "The tiger jumped out of a tree to get a drink because it was thirsty".
  Which word should "it" attend to?
- :func:`mole_sentence`: "mole" in three contexts (animal, chemistry, skin), each pulling the
  ambiguous word towards its own sense.
- :func:`padded_batch`: a few short sentences of different lengths, padded into one batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

TIGER_FEATURES: tuple[str, ...] = ("thing", "animal", "plant", "water", "motion", "grammar")
"""The named dimensions of the tiger sentence's embeddings."""

TIGER_TEXT = "The tiger jumped out of a tree to get a drink because it was thirsty"

# One row per distinct word: how much of each feature it has (0 = none). Nouns are "things";
# "it" stands for a thing that could be the animal or the plant; "thirsty" describes a living
# thing that needs water; little words carry only "grammar".
_TIGER_VOCABULARY: dict[str, dict[str, float]] = {
    "The": {"grammar": 1.0},
    "tiger": {"thing": 1.0, "animal": 2.0},
    "jumped": {"animal": 0.5, "motion": 2.0},
    "out": {"motion": 0.5, "grammar": 0.5},
    "of": {"grammar": 1.0},
    "a": {"grammar": 1.0},
    "tree": {"thing": 1.0, "plant": 2.0},
    "to": {"grammar": 1.0},
    "get": {"motion": 0.5, "grammar": 0.5},
    "drink": {"thing": 1.0, "water": 2.0},
    "because": {"grammar": 1.0},
    "it": {"thing": 1.0, "animal": 0.5, "plant": 0.5},
    "was": {"grammar": 1.0},
    "thirsty": {"animal": 1.0, "water": 1.0},
}

MOLE_SENSES: tuple[str, ...] = ("animal", "chemistry", "skin")
"""The named dimensions of the mole sentences' embeddings: one per meaning of "mole"."""

MOLE_CONTEXTS: dict[str, str] = {
    "animal": "the mole dug a tunnel under the garden",
    "chemistry": "one mole of carbon weighs twelve grams",
    "skin": "the doctor removed a mole from my skin",
}
"""Three sentences, one per sense of "mole", keyed by that sense."""

# "mole" alone is an even mix of its three senses; each context word leans towards one sense.
_MOLE_VOCABULARY: dict[str, dict[str, float]] = {
    "mole": {"animal": 1.0, "chemistry": 1.0, "skin": 1.0},
    "dug": {"animal": 1.5},
    "tunnel": {"animal": 1.5},
    "garden": {"animal": 1.0},
    "carbon": {"chemistry": 2.0},
    "weighs": {"chemistry": 1.0},
    "twelve": {"chemistry": 0.5},
    "grams": {"chemistry": 1.5},
    "doctor": {"skin": 1.5},
    "removed": {"skin": 1.0},
    "skin": {"skin": 2.0},
}


@dataclass(frozen=True)
class Sentence:
    """A tokenised sentence with one hand-made embedding per token.

    Attributes:
        tokens: the L words, in order.
        embeddings: float32 ``(L, d_model)``; row ``i`` embeds ``tokens[i]``.
        features: the d_model names of the embedding dimensions.
    """

    tokens: tuple[str, ...]
    embeddings: Tensor
    features: tuple[str, ...]

    def __post_init__(self) -> None:
        expected = (len(self.tokens), len(self.features))
        if tuple(self.embeddings.shape) != expected:
            raise ValueError(
                f"embeddings must have shape (L, d_model) = {expected}, got {tuple(self.embeddings.shape)}"
            )

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, word: str) -> int:
        """Position of the first occurrence of ``word``; ``ValueError`` names the sentence if absent."""
        if word not in self.tokens:
            raise ValueError(f"word {word!r} is not in the sentence {' '.join(self.tokens)!r}")
        return self.tokens.index(word)

    def vector(self, word: str) -> Tensor:
        """The embedding ``(d_model,)`` of the first occurrence of ``word``."""
        return self.embeddings[self.index(word)]


def embed(words: Sequence[str], vocabulary: Mapping[str, Mapping[str, float]], features: Sequence[str]) -> Tensor:
    """Stack hand-made embeddings.

    Args:
        words: L words, each a key of ``vocabulary``.
        vocabulary: word -> {feature name: value}; features left out are 0.
        features: the d_model feature names, in the order of the embedding's columns.

    Returns:
        float32 ``(L, d_model)``.
    """
    rows = []
    for word in words:
        if word not in vocabulary:
            raise ValueError(f"word {word!r} has no embedding; known words: {', '.join(sorted(vocabulary))}")
        unknown = set(vocabulary[word]) - set(features)
        if unknown:
            raise ValueError(f"word {word!r} uses features {sorted(unknown)} not among {list(features)}")
        rows.append([float(vocabulary[word].get(name, 0.0)) for name in features])
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(features))


def tiger_sentence() -> Sentence:
    """ "The tiger jumped out of a tree to get a drink because it was thirsty": 15 tokens, d_model 6.

    Returns:
        a :class:`Sentence` with embeddings ``(15, 6)`` over :data:`TIGER_FEATURES`.
    """
    tokens = tuple(TIGER_TEXT.split())
    return Sentence(tokens, embed(tokens, _TIGER_VOCABULARY, TIGER_FEATURES), TIGER_FEATURES)


def tiger_word(word: str) -> Tensor:
    """The embedding ``(6,)`` of one word of the tiger sentence's vocabulary."""
    return embed([word], _TIGER_VOCABULARY, TIGER_FEATURES)[0]


def mole_sentence(sense: str) -> Sentence:
    """The sentence of :data:`MOLE_CONTEXTS` in which "mole" has the meaning ``sense``.

    Args:
        sense: ``"animal"``, ``"chemistry"`` or ``"skin"``.

    Returns:
        a :class:`Sentence` with embeddings ``(L, 3)`` over :data:`MOLE_SENSES`; words that carry
        no sense ("the", "a", ...) embed as zeros.
    """
    if sense not in MOLE_CONTEXTS:
        raise ValueError(f"sense must be one of {list(MOLE_CONTEXTS)}, got {sense!r}")
    tokens = tuple(MOLE_CONTEXTS[sense].split())
    vocabulary = {word: _MOLE_VOCABULARY.get(word, {}) for word in tokens}
    return Sentence(tokens, embed(tokens, vocabulary, MOLE_SENSES), MOLE_SENSES)


PAD = "<pad>"
"""The token that fills the end of shorter sentences in a padded batch."""

BATCH_TEXTS: tuple[str, ...] = (
    "the tiger was thirsty",
    "it drank",
    "the tree grew tall",
)
"""Three sentences of different lengths (4, 2 and 4 words) for the padding examples of lesson 05."""


def padded_batch(
    texts: Sequence[str] = BATCH_TEXTS, d_model: int = 8, *, seed: int = 0
) -> tuple[list[list[str]], Tensor, Tensor]:
    """Pad sentences to a common length and give each token a random embedding.

    Every distinct word gets one fixed random vector (the same word, the same vector); ``PAD``
    positions get a random vector too, so that a missing mask shows up as a changed output.

    Args:
        texts: B sentences, words separated by spaces.
        d_model: embedding width.
        seed: seeds the random embeddings.

    Returns:
        ``tokens`` (B lists of S words, padded with :data:`PAD`), ``embeddings`` float32
        ``(B, S, d_model)`` and ``lengths`` int64 ``(B,)``, the number of real words per sentence.
    """
    if not texts:
        raise ValueError("texts must hold at least one sentence, got none")
    split = [text.split() for text in texts]
    if any(not words for words in split):
        raise ValueError(f"every sentence needs at least one word, got {list(texts)}")
    max_len = max(len(words) for words in split)
    tokens = [words + [PAD] * (max_len - len(words)) for words in split]
    vocabulary = sorted({word for row in tokens for word in row})
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(len(vocabulary), d_model, generator=generator)
    ids = torch.tensor([[vocabulary.index(word) for word in row] for row in tokens])  # (B, S)
    lengths = torch.tensor([len(words) for words in split])
    return tokens, table[ids], lengths


# --- "The skilled surgeon operated on the patient with a …": next-word prediction (lessons 01–02) ---------

SURGEON_FEATURES: tuple[str, ...] = ("person", "medicine", "tool", "skill", "grammar")
"""The named dimensions of the surgeon sentence's embeddings."""

SURGEON_TEXT = "The skilled surgeon operated on the patient with a"
"""The context; the next word is what a language model predicts."""

_SURGEON_VOCABULARY: dict[str, dict[str, float]] = {
    "The": {"grammar": 1.0},
    "the": {"grammar": 1.0},
    "on": {"grammar": 1.0},
    "a": {"grammar": 1.0},
    "skilled": {"skill": 1.5},
    "surgeon": {"person": 1.0, "medicine": 2.0, "skill": 0.5},
    "operated": {"medicine": 1.5},
    "patient": {"person": 1.0, "medicine": 1.0},
    "with": {"tool": 2.0, "grammar": 0.5},  # "with a ..." announces an instrument
    # candidates for the next word
    "scalpel": {"tool": 1.5, "medicine": 1.5},
    "hammer": {"tool": 2.0},
    "nurse": {"person": 1.0, "medicine": 1.5},
    "smile": {"person": 1.0, "skill": 0.5},
}

SURGEON_CANDIDATES: tuple[str, ...] = ("scalpel", "hammer", "nurse", "smile")
"""Next words to choose from: a medical tool, a tool, a medical person, something else."""


def surgeon_sentence() -> Sentence:
    """ "The skilled surgeon operated on the patient with a": 9 tokens, d_model 5 over :data:`SURGEON_FEATURES`."""
    tokens = tuple(SURGEON_TEXT.split())
    return Sentence(tokens, embed(tokens, _SURGEON_VOCABULARY, SURGEON_FEATURES), SURGEON_FEATURES)


def surgeon_candidates() -> Sentence:
    """The candidate next words of :data:`SURGEON_CANDIDATES` as a :class:`Sentence` (their embeddings ``(4, 5)``)."""
    return Sentence(
        SURGEON_CANDIDATES, embed(SURGEON_CANDIDATES, _SURGEON_VOCABULARY, SURGEON_FEATURES), SURGEON_FEATURES
    )
