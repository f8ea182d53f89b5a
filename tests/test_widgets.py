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


# --- Lessons 02, 05, 06 (issue 20): query explorer, mask builder, head explorer ---------------------------

from pathlib import Path  # noqa: E402  (kept with the tests of this block, which the lead merges as one)

from attention_course.qkv import qkv_projection  # noqa: E402
from attention_course.teaching.widgets import head_explorer, mask_builder, query_explorer, save_picture  # noqa: E402

FIGURES = Path(__file__).resolve().parent.parent / "notebooks" / "figures"


def _assert_every_move_changes_the_readout(widget) -> None:
    """Each move changes the numbers shown, and the picture (the PNG bytes of the widget's image)."""
    before, picture = dict(widget.readout), widget._image.value
    for control in widget.controls:
        options = list(getattr(control, "options", [])) or list(range(control.min, control.max + 1))
        values = [value[1] if isinstance(value, tuple) else value for value in options]
        control.value = values[(values.index(control.value) + 1) % len(values)]
        assert widget.readout != before and widget._image.value != picture, control.description
        before, picture = dict(widget.readout), widget._image.value


def _hand_made_qkv() -> tuple:
    sentence = tiger_sentence()
    w_q = torch.zeros(6, 6)
    w_q[3, 1] = w_q[1, 0] = 1.0  # water -> animal, animal -> thing, as in lesson 02
    return sentence, qkv_projection(sentence.embeddings, w_q, torch.eye(6), torch.eye(6))


def test_query_explorer_shows_the_lookup_of_the_picked_word() -> None:
    sentence, (q, k, v) = _hand_made_qkv()
    x = sentence.embeddings
    widget = query_explorer(
        sentence.tokens, {"x": (x, x, x), "hand-made": (q, k, v)}, word="thirsty", projection="hand-made"
    )
    i = sentence.index("thirsty")
    weights = torch.softmax(k @ q[i], dim=-1)  # the oracle: one query's softmax over its scores
    assert widget.readout["position"] == i and widget.readout["top_position"] == sentence.index("tiger")
    assert [widget.readout[f"weight_{j}"] for j in range(len(sentence))] == pytest.approx(weights.tolist(), abs=1e-6)
    assert [widget.readout[f"out_{c}"] for c in range(6)] == pytest.approx((weights @ v).tolist(), abs=1e-6)
    _assert_every_move_changes_the_readout(widget)
    with pytest.raises(ValueError, match="one row per token"):
        query_explorer(["a"], {"x": (x, x, x)})


def test_mask_builder_combines_masks_and_zeroes_fully_masked_rows() -> None:
    sentence = tiger_sentence()
    widget = mask_builder(
        sentence.tokens[:8], sentence.embeddings[:8], causal=True, pad_side="left", n_real=5, window=2, use_window=True
    )
    # Three pads in front, causal: each pad query sees only pads before it, which are hidden.
    assert widget.readout["fully_masked"] == 3
    assert [widget.readout[f"row_sum_{i}"] for i in range(8)] == pytest.approx([0, 0, 0, 1, 1, 1, 1, 1], abs=1e-6)
    assert widget.readout["masked_weight"] == 0.0
    # 5 real keys; causal window of half-width 2: query i sees keys max(3, i-2)..i -> 1+2+3+3+3.
    assert widget.readout["allowed"] == 12
    _assert_every_move_changes_the_readout(widget)
    causal, side, length, _, window = widget.controls
    causal.value, window.value = False, False  # no causal mask, no window
    side.value, length.value = "right", 6
    assert widget.readout["allowed"] == 8 * 6 and widget.readout["fully_masked"] == 0  # padding alone


def test_head_explorer_cuts_the_same_weights_into_heads() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 12, generator=generator)
    w_q, w_k, w_v, w_o = (torch.randn(12, 12, generator=generator) for _ in range(4))
    widget = head_explorer(list("abcde"), x, w_q, w_k, w_v, w_o, n_heads=4, head=3)
    heads, head = widget.controls
    assert widget.readout["params_per_head"] == 3 * 12 * 3 + 3 * 12
    assert widget.readout["params_total"] == 4 * 12**2
    oracle = torch.nn.MultiheadAttention(12, 4, bias=False, batch_first=True)
    with torch.no_grad():
        oracle.in_proj_weight.copy_(torch.cat([w_q.T, w_k.T, w_v.T]))
        oracle.out_proj.weight.copy_(w_o.T)
        expected, expected_weights = oracle(x[None], x[None], x[None], average_attn_weights=False)
    # float32, different order of operations: agreement to a few ulps of values of size ~10.
    assert [widget.readout[f"out_{i}_{c}"] for i in range(5) for c in range(12)] == pytest.approx(
        expected[0].flatten().tolist(), abs=1e-4
    )
    assert [widget.readout[f"weight_{i}_{j}"] for i in range(5) for j in range(5)] == pytest.approx(
        expected_weights[0, 3].flatten().tolist(), abs=1e-5
    )
    draws = []
    draw = widget._draw
    widget._draw = lambda: draws.append(1) or draw()
    heads.value = 2  # fewer heads: the head slider is clamped to the last head, and the figure drawn once
    assert head.max == 1 and head.value == 1 and widget.readout["head"] == 1
    assert len(draws) == 1
    assert widget.readout["params_total"] == 4 * 12**2 and widget.readout["params_per_head"] == 2 * 4 * 12 * 6 / 2
    _assert_every_move_changes_the_readout(widget)
    with pytest.raises(ValueError, match="must divide"):
        head_explorer(list("abcde"), x, w_q, w_k, w_v, w_o, n_heads=5)


def test_save_picture_draws_the_widget_state(tmp_path: Path) -> None:
    sentence = tiger_sentence()
    widget = mask_builder(sentence.tokens[:8], sentence.embeddings[:8])
    path = save_picture(widget, tmp_path / "mask.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert save_picture(widget, tmp_path / "again.png").read_bytes() == path.read_bytes()  # no time stamp


@pytest.mark.parametrize("lesson, name", [("02", "query_explorer"), ("05", "mask_builder"), ("06", "head_explorer")])
def test_each_widget_has_its_static_picture_under_it(lesson: str, name: str) -> None:
    picture = f"figures/{lesson}_{name}.png"
    assert (FIGURES.parent / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    notebook = next((FIGURES.parent).glob(f"{lesson}_*.py")).read_text(encoding="utf-8")
    assert f"{name}(" in notebook and f"]({picture})" in notebook


def test_the_html_build_carries_the_static_pictures(tmp_path: Path) -> None:
    import nbformat

    from attention_course.teaching import html_build

    (tmp_path / "notebooks" / "figures").mkdir(parents=True)
    (tmp_path / "notebooks" / "figures" / "01_x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    lesson = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · X\n\n![x](figures/01_x.png)")])
    nbformat.write(lesson, tmp_path / "notebooks" / "01_x.ipynb")
    html_build.build(tmp_path, tmp_path / "html")
    assert 'src="figures/01_x.png"' in (tmp_path / "html" / "notebooks" / "01_x.html").read_text(encoding="utf-8")
    assert (tmp_path / "html" / "notebooks" / "figures" / "01_x.png").exists()


@pytest.mark.parametrize("lesson", ["02_queries_keys_values", "05_masking", "06_multi_head_attention"])
def test_the_static_html_keeps_no_live_widget(lesson: str) -> None:
    import json

    import nbformat

    from attention_course.teaching import html_build

    nb = nbformat.read(FIGURES.parent / f"{lesson}.ipynb", as_version=4)
    assert html_build.static_widgets(nb) >= 1
    assert html_build.WIDGET_VIEW not in json.dumps(nb)
