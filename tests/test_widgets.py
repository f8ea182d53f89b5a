"""Each widget builds, and moving its control changes what it shows."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course.cross_attention import cross_attention_alignment, train_toy
from attention_course.decoder import Decoder, DecoderConfig
from attention_course.kv_cache import kv_cache_bytes
from attention_course.softmax import entropy
from attention_course.sparse import sliding_window_mask
from attention_course.teaching.sentences import tiger_sentence
from attention_course.teaching.widgets import (
    FigureWidget,
    alignment_stepper,
    decode_stepper,
    head_view,
    pattern_picker,
    rope_dial,
    save_figure,
    scaling_explorer,
    temperature_explorer,
    word_picker,
)

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


# ---- lessons 07, 08, 09, 10 and 12 (issue 20) --------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
FIGURE_LINK = re.compile(r"\(((?:\.\./)?figures/[\w.-]+\.png)\)")


def _moves_change_everything(widget: FigureWidget, targets: dict[str, object]) -> None:
    """Setting each control to its target changes the picture and the readout."""
    controls = {control.description: control for control in widget.controls}
    assert set(targets) == set(controls), "every control gets moved"
    assert widget.title and widget.png.startswith(b"\x89PNG") and widget.image.value == widget.png
    for name, value in targets.items():
        before_png, before = widget.png, dict(widget.readout)
        controls[name].value = value
        assert widget.png != before_png, name
        assert widget.readout != before, name


def test_alignment_stepper_shows_the_snapshot_of_each_step() -> None:
    model_snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    source = torch.tensor([[3, 1, 4, 1, 5, 9]])

    def snapshot(step: int, model: object) -> None:
        if step % 20 == 0:
            model_snapshots[step] = cross_attention_alignment(model, source)

    _, losses = train_toy("reverse", steps=60, seed=0, on_step=snapshot)
    steps = sorted(model_snapshots)
    assert steps == [0, 20, 40, 60]
    alignments = torch.stack([model_snapshots[s][1][0] for s in steps])
    written = torch.stack([model_snapshots[s][0][0] for s in steps])
    widget = alignment_stepper(steps, alignments, written, source[0].tolist(), losses)
    assert widget.readout["step"] == 60
    _moves_change_everything(widget, {"training step": 0})
    assert widget.readout["step"] == 0
    with pytest.raises(ValueError, match="one step and one written row per snapshot"):
        alignment_stepper([0], alignments, written, source[0].tolist())


def test_rope_dial_scores_depend_on_the_offset_only() -> None:
    widget = rope_dial(d_head=16, n_positions=32)
    _moves_change_everything(widget, {"tokens": "query 2 · key 2", "position m": 20, "pair i": 3})
    # float32 rotations of O(1) vectors: the two curves agree to rounding (observed ~1e-6).
    assert widget.readout["score_gap"] < 1e-4
    assert widget.readout["angle"] == pytest.approx(20 * 10000.0 ** (-6 / 16), rel=1e-6)


def test_decode_stepper_counts_the_cache_and_the_work() -> None:
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64))
    widget = decode_stepper(model.eval(), torch.tensor([[1, 2, 3, 4, 5]]), n_new=10)
    _moves_change_everything(widget, {"step": 10, "work": "total so far"})
    readout = widget.readout
    assert readout["length"] == 15
    # growing cache: 2 layers x (K and V) x (1, 2 kv heads, 15 positions, d_head 8) float32
    assert readout["cache_bytes"] == kv_cache_bytes(2, 2, 8, 15, bytes_per_element=4)
    assert readout["recompute_pairs"] == 15 + sum(n * (n + 1) // 2 for n in range(6, 16))
    assert readout["cached_pairs"] == 15 + sum(range(6, 16))


def test_pattern_picker_density_and_reach() -> None:
    widget = pattern_picker(n=64)
    sparse_reach = widget.readout["layers_to_full"]
    _moves_change_everything(widget, {"window": 4, "dilation": 3, "global tokens": 1, "random blocks": 2, "tokens": 32})
    assert widget.readout["layers_to_full"] <= 2 < sparse_reach  # a global token links everything in two hops
    controls = {control.description: control for control in widget.controls}
    for name, value in {"tokens": 64, "window": 8, "dilation": 1, "global tokens": 0, "random blocks": 0}.items():
        controls[name].value = value
    assert widget.readout["density"] == pytest.approx(sliding_window_mask(64, 8).float().mean().item())


def test_head_view_draws_the_chosen_head() -> None:
    tokens = ["[CLS]", "the", "tiger", "drank", "[SEP]"]
    attention = torch.zeros(2, 3, 5, 5)
    attention[..., 0] = 1.0  # every head looks at [CLS] ...
    attention[1, 2] = torch.eye(5).roll(-1, dims=1)  # ... except layer 1, head 2: the next token
    other = torch.softmax(torch.randn(2, 3, 3, 3), dim=-1)
    widget = head_view({"tiger": (tokens, attention), "short": (["a", "b", "c"], other)})
    assert (widget.readout["top_key"], widget.readout["mean_distance"]) == (0.0, 2.0)
    _moves_change_everything(widget, {"layer": 1, "head": 2, "sentence": "short"})
    widget.controls[0].value = "tiger"
    assert widget.readout["mean_distance"] == pytest.approx(8 / 5)  # 4 steps of 1, and 4 back to the start
    with pytest.raises(ValueError, match="do not match"):
        head_view({"bad": (tokens[:2], attention)})


def test_save_figure_writes_the_widgets_own_picture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    widget = rope_dial()
    path = save_figure(widget, tmp_path / "figures" / "dial.png", **{"position m": 5})
    assert path.read_bytes() == widget.png and widget.readout["angle"] == pytest.approx(5.0)
    widget.controls[1].value = 6  # the position slider
    save_figure(widget, path)  # exists, and no ATTENTION_COURSE_SAVE_FIGURES: left alone
    assert path.read_bytes() != widget.png
    monkeypatch.setenv("ATTENTION_COURSE_SAVE_FIGURES", "1")
    save_figure(widget, path)
    assert path.read_bytes() == widget.png
    with pytest.raises(ValueError, match="no control named"):
        save_figure(widget, path, speed=1)


def test_every_static_widget_picture_a_lesson_shows_exists() -> None:
    found = 0
    for notebook in sorted((REPO / "notebooks").glob("*.py")):
        for link in FIGURE_LINK.findall(notebook.read_text(encoding="utf-8")):
            found += 1
            assert (notebook.parent / link).is_file(), f"{notebook.name} shows {link}, which is missing"
    assert found >= 5
