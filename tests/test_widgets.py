"""Each widget builds, and moving its control changes what it shows."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course.softmax import entropy
from attention_course.teaching.sentences import tiger_sentence
from attention_course.teaching.widgets import scaling_explorer, temperature_explorer, word_picker

# Draw off screen in this process only: an MPLBACKEND variable would leak into the notebook
# kernels that nbval and the browser test start from the same pytest worker.
matplotlib.use("Agg")


def test_entropy() -> None:
    assert float(entropy(torch.tensor([1.0, 0.0, 0.0]))) == 0.0
    assert float(entropy(torch.full((4,), 0.25))) == pytest.approx(math.log(4))
    with pytest.raises(TypeError, match="weights"):
        entropy(torch.tensor([1, 0]))


@settings(max_examples=50, deadline=None)
@given(logits=st.lists(st.floats(-30, 30), min_size=1, max_size=12))
def test_entropy_lies_between_zero_and_log_n(logits: list[float]) -> None:
    weights = torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=-1)
    value = float(entropy(weights))
    # float64 rounding only: a few ulps of ln(n) at most.
    assert -1e-12 <= value <= math.log(len(logits)) + 1e-12


def test_word_picker_follows_the_picked_word() -> None:
    sentence = tiger_sentence()
    in_context = sentence.vector("it") + sentence.vector("thirsty")
    widget = word_picker(sentence, {"it (was thirsty)": in_context})
    first = dict(widget.readout)
    assert first["top_position"] == 0.0  # "The" attends to the little words, itself first
    widget.children[0].value = "it (was thirsty)"
    assert widget.readout != first
    assert widget.readout["top_position"] == sentence.index("tiger")
    with pytest.raises(ValueError, match="d_model=6"):
        word_picker(sentence, {"bad": torch.zeros(3)})


def test_scaling_explorer_saturates_only_without_scaling() -> None:
    widget = scaling_explorer(n_queries=128)
    slider = widget.children[0]
    slider.value = 1
    small = dict(widget.readout)
    slider.value = 1024
    large = widget.readout
    assert large["unscaled_std"] > 10 * small["unscaled_std"]  # std grows like sqrt(d_k): about 32x
    assert large["unscaled_max_weight"] > 0.8 > small["unscaled_max_weight"]
    # Scaled scores keep unit spread, so the softmax looks alike at both ends of the slider. The
    # bounds are loose: at d_k = 1 a score is the product of two normals (heavy tails), and the 16
    # keys of a query share that query, so the 2048 scores are far from independent.
    assert 0.7 < large["scaled_std"] < 1.5 and 0.7 < small["scaled_std"] < 1.5
    assert large["scaled_entropy"] == pytest.approx(small["scaled_entropy"], abs=0.1)


def test_temperature_explorer_flattens_as_t_grows() -> None:
    widget = temperature_explorer(torch.tensor([2.0, 1.0, 0.0]), ["a", "b", "c"])
    slider = widget.children[0]
    slider.value = 0.05
    cold = dict(widget.readout)
    slider.value = 20.0
    hot = widget.readout
    assert cold["max_weight"] > 0.99
    assert hot["entropy"] == pytest.approx(math.log(3), abs=0.01)
    with pytest.raises(ValueError, match="one token per score"):
        temperature_explorer(torch.zeros(3), ["a"])
