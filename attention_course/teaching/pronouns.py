"""Templated sentence pairs for testing whether an attention head resolves a pronoun (lesson 12).

Each pair is one sentence with two nouns and a pronoun; only the last word changes, and it flips
what the pronoun refers to: the subject ("The fox could not catch the rabbit because it was too
slow") or the object ("... because it was too fast"). A head that follows the subject, the nearer
noun, or the animate noun gets exactly half of each pair right, so 50 % is the baseline every such
shortcut scores; only a head that reads the last word can do better.

The pairs come in four kinds, by animacy of (subject, object): animate/animate, inanimate/inanimate,
animate/inanimate and inanimate/animate, so that "attends to the animal" is not a way to score.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PronounPair:
    """``template`` has ``{end}``; ``subject_end`` makes the pronoun mean ``subject``, ``object_end`` ``obj``."""

    template: str
    subject: str
    obj: str
    pronoun: str
    subject_end: str
    object_end: str
    kind: str  # "animate/animate", "inanimate/inanimate", "animate/inanimate", "inanimate/animate"

    def sentences(self) -> list[tuple[str, str, str]]:
        """``(sentence, referent, other noun)`` for both endings: the subject reading first."""
        return [
            (self.template.format(end=self.subject_end), self.subject, self.obj),
            (self.template.format(end=self.object_end), self.obj, self.subject),
        ]


def _pair(
    template: str, subject: str, obj: str, pronoun: str, subject_end: str, object_end: str, kind: str
) -> PronounPair:
    return PronounPair(template, subject, obj, pronoun, subject_end, object_end, kind)


AA, II, AI, IA = "animate/animate", "inanimate/inanimate", "animate/inanimate", "inanimate/animate"

PRONOUN_PAIRS: tuple[PronounPair, ...] = (
    _pair("The fox could not catch the rabbit because it was too {end}.", "fox", "rabbit", "it", "slow", "fast", AA),
    _pair(
        "The trophy did not fit in the suitcase because it was too {end}.",
        "trophy",
        "suitcase",
        "it",
        "big",
        "small",
        II,
    ),
    _pair("The tiger jumped out of the tree because it was {end}.", "tiger", "tree", "it", "thirsty", "burning", AI),
    _pair("The fence could not stop the bull because it was too {end}.", "fence", "bull", "it", "low", "strong", IA),
    _pair("The mouse ran from the cat because it was {end}.", "mouse", "cat", "it", "scared", "hungry", AA),
    _pair(
        "The table would not fit through the door because it was too {end}.",
        "table",
        "door",
        "it",
        "wide",
        "narrow",
        II,
    ),
    _pair("The dog could not carry the log because it was too {end}.", "dog", "log", "it", "weak", "heavy", AI),
    _pair("The branch could not hold the bear because it was too {end}.", "branch", "bear", "it", "thin", "heavy", IA),
    _pair("The lion attacked the zebra because it was {end}.", "lion", "zebra", "it", "hungry", "weak", AA),
    _pair("The car passed the truck because it was {end}.", "car", "truck", "it", "fast", "slow", II),
    _pair(
        "The horse would not cross the bridge because it was {end}.", "horse", "bridge", "it", "scared", "broken", AI
    ),
    _pair("The cage could not hold the tiger because it was {end}.", "cage", "tiger", "it", "broken", "strong", IA),
    _pair("The bird fled from the snake because it was {end}.", "bird", "snake", "it", "afraid", "dangerous", AA),
    _pair("The hammer broke the glass because it was {end}.", "hammer", "glass", "it", "heavy", "fragile", II),
    _pair("The dog ignored the food because it was {end}.", "dog", "food", "it", "full", "rotten", AI),
    _pair(
        "The boat could not carry the elephant because it was too {end}.",
        "boat",
        "elephant",
        "it",
        "small",
        "heavy",
        IA,
    ),
    _pair("The nurse helped the woman because she was {end}.", "nurse", "woman", "she", "kind", "sick", AA),
    _pair("The ball broke the window because it was {end}.", "ball", "window", "it", "hard", "thin", II),
    _pair("The bird could not open the box because it was too {end}.", "bird", "box", "it", "weak", "heavy", AI),
    _pair("The river stopped the deer because it was too {end}.", "river", "deer", "it", "deep", "tired", IA),
    _pair("The man could not lift the boy because he was too {end}.", "man", "boy", "he", "weak", "heavy", AA),
    _pair("The book did not fit on the shelf because it was too {end}.", "book", "shelf", "it", "big", "small", II),
    _pair("The cat knocked over the vase because it was {end}.", "cat", "vase", "it", "playful", "unsteady", AI),
    _pair("The rope could not hold the goat because it was too {end}.", "rope", "goat", "it", "thin", "strong", IA),
)
"""24 pairs, 6 of each kind, 48 sentences."""
