"""Interactive figures for lessons 01–04: move a control, the figure is redrawn.

Each builder returns a :class:`PlotWidget`: the controls above an output area holding a matplotlib
figure. Its ``readout`` holds the numbers the current figure shows, so tests (and curious
learners) can read them without looking at pixels.

- :func:`word_picker` (lesson 01): pick a word, see its attention weights and the weighted average.
- :func:`scaling_explorer` (lesson 03): a d_k slider, with and without the 1/sqrt(d_k) scaling.
- :func:`temperature_explorer` (lesson 04): a temperature slider over fixed scores.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from PIL import Image as PILImage
from torch import Tensor

from .._validation import require_float, require_rank, shape_of
from ..attention import scaled_dot_product_attention
from ..decoder import Decoder
from ..positional import apply_rope
from ..qkv import attention_scores, scaled_attention_scores
from ..softmax import entropy, softmax
from .plotting import plot_attention, plot_weights_bar
from .sentences import Sentence


class PlotWidget(widgets.VBox):
    """Controls above a figure that ``draw`` redraws whenever one of them changes.

    Args:
        controls: the widgets whose ``value`` the figure depends on.
        draw: makes the figure from the controls' current values and returns the numbers it shows.
    """

    def __init__(self, controls: Sequence[widgets.ValueWidget], draw: Callable[[], dict[str, float]]) -> None:
        self.output = widgets.Output()
        self.controls = list(controls)
        super().__init__([*controls, self.output])
        self._draw = draw
        self.readout: dict[str, float] = {}
        for control in controls:
            control.observe(self._on_change, names="value")
        self.redraw()

    def _on_change(self, change: object) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Redraw the figure into the output area and refresh ``readout``."""
        with self.output:
            self.output.clear_output(wait=True)
            self.readout = self._draw()
            figure = plt.gcf()
            plt.show()
            plt.close(figure)


def word_picker(sentence: Sentence, extra_queries: Mapping[str, Tensor] | None = None) -> PlotWidget:
    r"""Pick a word: its weights $\mathrm{softmax}(x_i \cdot x_j)$ over the sentence and the weighted average.

    Plain dot-product attention of lesson 01 (no projections, no scaling): the picked word's
    embedding is the query, every word's embedding is both key and value.

    Args:
        sentence: the tokens and embeddings ``(L, d_model)``.
        extra_queries: more choices for the picker, label -> query embedding ``(d_model,)``
            (e.g. a word already mixed with its context).

    Returns:
        a :class:`PlotWidget`; ``readout`` has ``top_weight``, ``top_position`` and one entry per
        feature of the weighted average.
    """
    x = sentence.embeddings  # (L, d_model)
    queries: dict[str, Tensor] = {f"{i}: {token}": x[i] for i, token in enumerate(sentence.tokens)}
    for label, query in (extra_queries or {}).items():
        require_float(f"extra_queries[{label!r}]", query)
        require_rank(f"extra_queries[{label!r}]", query, 1, "(d_model,)")
        if query.shape[0] != x.shape[1]:
            raise ValueError(
                f"extra_queries[{label!r}] must have d_model={x.shape[1]} entries, got shape {shape_of(query)}"
            )
        queries[label] = query
    picker = widgets.Dropdown(options=list(queries), value=list(queries)[0], description="query word")

    def draw() -> dict[str, float]:
        query = queries[picker.value]
        output, weights = scaled_dot_product_attention(query[None], x, x, scale=1.0, return_weights=True)
        output, weights = output[0], weights[0]  # (d_model,), (L,)
        figure, (left, right) = plt.subplots(1, 2, figsize=(13, 3.6), width_ratios=(3, 2))
        plot_weights_bar(weights, sentence.tokens, title=f"Weights of {picker.value!r} over the sentence", ax=left)
        positions = torch.arange(len(sentence.features))
        right.bar(positions - 0.2, query.numpy(), width=0.4, label="the word itself")
        right.bar(positions + 0.2, output.numpy(), width=0.4, label="weighted average")
        right.set_xticks(positions.tolist(), list(sentence.features), rotation=45, ha="right")
        right.set_xlabel("feature")
        right.set_ylabel("value")
        right.set_title("Embedding before and after attention")
        right.legend()
        figure.tight_layout()
        top = int(weights.argmax())
        return {"top_weight": float(weights[top]), "top_position": float(top)} | {
            name: float(value) for name, value in zip(sentence.features, output, strict=True)
        }

    return PlotWidget([picker], draw)


def _scores_for(d_k: int, n_queries: int, n_keys: int, seed: int) -> tuple[Tensor, Tensor]:
    """Unscaled and scaled scores ``(n_queries, n_keys)`` of standard normal queries and keys."""
    generator = torch.Generator().manual_seed(seed + d_k)
    q = torch.randn(n_queries, d_k, generator=generator)
    k = torch.randn(n_keys, d_k, generator=generator)
    return attention_scores(q, k), scaled_attention_scores(q, k)


def scaling_explorer(n_queries: int = 512, n_keys: int = 16, *, seed: int = 0) -> PlotWidget:
    r"""A d_k slider: scores of random unit-variance q and k, with and without dividing by $\sqrt{d_k}$.

    Left: the distribution of the scores. Right: the mean largest weight and the mean entropy of
    each query's softmax (entropy shown as a fraction of $\ln n_{keys}$, the uniform maximum).

    Args:
        n_queries: queries sampled per d_k (more gives smoother histograms).
        n_keys: keys each query spreads its weight over.
        seed: seeds the samples (each d_k gets its own fixed sample).

    Returns:
        a :class:`PlotWidget`; ``readout`` has ``std``, ``max_weight`` and ``entropy`` for the
        ``unscaled`` and ``scaled`` scores (e.g. ``readout["unscaled_std"]``).
    """
    d_k_slider = widgets.SelectionSlider(options=[2**p for p in range(11)], value=64, description="d_k")
    uniform_entropy = math.log(n_keys)

    def draw() -> dict[str, float]:
        d_k = d_k_slider.value
        readout: dict[str, float] = {}
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6))
        unscaled, scaled = _scores_for(d_k, n_queries, n_keys, seed)
        for label, scores in (("unscaled", unscaled), ("scaled", scaled)):
            weights = softmax(scores, dim=-1)  # (n_queries, n_keys)
            readout[f"{label}_std"] = float(scores.std())
            readout[f"{label}_max_weight"] = float(weights.amax(dim=-1).mean())
            readout[f"{label}_entropy"] = float(entropy(weights).mean()) / uniform_entropy
            left.hist(
                scores.flatten().numpy(),
                bins=40,
                alpha=0.6,
                density=True,
                label=f"{label}: std {readout[f'{label}_std']:.1f}",
            )
        left.set_xlabel("score q·k")
        left.set_ylabel("density")
        left.set_title(f"Scores of random q, k with d_k = {d_k}")
        left.legend()
        labels = ["largest weight", "entropy / ln(n_keys)"]
        positions = torch.arange(2)
        for offset, label in ((-0.2, "unscaled"), (0.2, "scaled")):
            values = [readout[f"{label}_max_weight"], readout[f"{label}_entropy"]]
            right.bar(positions + offset, values, width=0.4, label=label)
        right.set_xticks(positions.tolist(), labels)
        right.axhline(1 / n_keys, color="k", linestyle=":", label=f"1/{n_keys}: even spread's largest weight")
        right.set_ylim(0, 1.3)
        right.set_ylabel(f"mean over {n_queries} queries")
        right.set_title(f"How saturated is the softmax over {n_keys} keys?")
        right.legend(loc="upper center", ncols=2, fontsize=8)
        figure.tight_layout()
        return readout

    return PlotWidget([d_k_slider], draw)


def temperature_explorer(scores: Tensor, tokens: Sequence[str]) -> PlotWidget:
    r"""A temperature slider over fixed scores: the weights $\mathrm{softmax}(s / T)$ as bars.

    Args:
        scores: one query's scores ``(S,)``.
        tokens: the S key tokens, for the bar labels.

    Returns:
        a :class:`PlotWidget`; ``readout`` has ``max_weight`` and ``entropy`` (nats).
    """
    require_float("scores", scores)
    require_rank("scores", scores, 1, "(S,)")
    if len(tokens) != scores.shape[0]:
        raise ValueError(f"need one token per score, got scores {shape_of(scores)} and {len(tokens)} tokens")
    slider = widgets.FloatLogSlider(value=1.0, base=10, min=-1.5, max=1.5, step=0.05, description="T")

    def draw() -> dict[str, float]:
        weights = softmax(scores, temperature=slider.value)  # (S,)
        readout = {"max_weight": float(weights.max()), "entropy": float(entropy(weights))}
        figure, ax = plt.subplots(figsize=(max(7.0, 1 + 0.6 * len(tokens)), 3.4))
        plot_weights_bar(
            weights,
            tokens,
            ax=ax,
            title=f"softmax(scores / T) at T = {slider.value:.2f}\n"
            f"largest weight {readout['max_weight']:.2f}, "
            f"entropy {readout['entropy']:.2f} nats (even spread: {math.log(len(tokens)):.2f})",
        )
        figure.tight_layout()
        return readout

    return PlotWidget([slider], draw)


# ----------------------------------------------------------------------------------------------------
# Lessons 07, 08, 09, 10 and 12 (issue 20): alignment over training, the RoPE dial, the decode
# stepper, the sparse-pattern picker and the head view. Each one precomputes what it shows, so a
# control move only draws; each draw function also makes the committed static picture
# (:func:`save_figure`) with a fixed state.


class FigureWidget(widgets.VBox):
    """Controls above one figure (a PNG in an Image widget, its title on top) redrawn whenever a control changes.

    Faster than :class:`PlotWidget` for the same picture: the figure is made once and only its axes
    are rebuilt; it is laid out once (``tight_layout`` on the first draw) and encoded straight to a PNG.

    Args:
        title: the figure's overall title.
        controls: the widgets whose ``value`` the figure depends on.
        draw: ``draw(figure) -> readout``: fills the (cleared) figure from the controls' current values
            and returns the numbers it shows.
        figsize: the figure's size in inches.
        dpi: pixels per inch of the PNG.
    """

    def __init__(
        self,
        title: str,
        controls: Sequence[widgets.ValueWidget],
        draw: Callable[[Figure], dict[str, float]],
        figsize: tuple[float, float],
        dpi: int = 80,
    ) -> None:
        # An Image widget, not an Output: its picture travels as widget state, so nothing is printed
        # into the cell while the front end is still creating the widget (an Output's first contents
        # can land in the cell instead), and its fixed size keeps the page from moving while it loads.
        width, height = round(figsize[0] * dpi), round(figsize[1] * dpi)
        self.image = widgets.Image(format="png", width=str(width), height=str(height))
        self.title = title  # drawn on the figure, above its panels
        self.controls = list(controls)
        super().__init__([*controls, self.image])
        self.figure = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(self.figure)
        self.dpi = dpi
        self._draw = draw
        self.readout: dict[str, float] = {}
        self.png = b""
        self._margins: dict[str, float] = {}
        for control in controls:
            control.observe(self._on_change, names="value")
        self.redraw()

    def _on_change(self, change: object) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Redraw the figure, encode it as ``png`` and show it; refresh ``readout``."""
        self.figure.clear()  # (this also resets the margins)
        if self._margins:
            self.figure.subplots_adjust(**self._margins)
        self.readout = self._draw(self.figure)
        self.figure.suptitle(self.title, fontweight="bold", fontsize=11)
        if not self._margins:  # lay out once; later draws reuse the margins (laying out costs as much as drawing)
            self.figure.tight_layout()
            pars = self.figure.subplotpars
            self._margins = {name: float(getattr(pars, name)) for name in ("left", "bottom", "right", "top", "wspace")}
        canvas = self.figure.canvas
        assert isinstance(canvas, FigureCanvasAgg)  # attached in __init__
        canvas.draw()  # one render; savefig would render again for the PNG
        buffer = io.BytesIO()
        PILImage.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).save(
            buffer, format="png", compress_level=1
        )
        self.png = buffer.getvalue()
        self.image.value = self.png


def save_figure(widget: FigureWidget, path: str | os.PathLike[str], **state: object) -> Path:
    """Set the widget's controls (by ``description``) to ``state`` and save what it then shows as a PNG.

    The picture is the widget's own drawing, made by its draw function. The file is written when it is
    missing, or always when the environment variable ``ATTENTION_COURSE_SAVE_FIGURES`` is ``1`` (so
    that re-running a lesson under nbval leaves the committed pictures alone).

    Returns:
        the path of the picture.
    """
    controls = {control.description: control for control in widget.controls}
    unknown = set(state) - set(controls)
    if unknown:
        raise ValueError(f"no control named {sorted(unknown)}; the widget has {sorted(controls)}")
    for name, value in state.items():
        controls[name].value = value
    target = Path(path)
    if not target.exists() or os.environ.get("ATTENTION_COURSE_SAVE_FIGURES") == "1":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(widget.png)
    return target


def alignment_stepper(
    steps: Sequence[int],
    alignments: Tensor,
    written: Tensor,
    source: Sequence[int],
    losses: Sequence[float] | None = None,
) -> FigureWidget:
    """A training-step slider over saved snapshots of a toy encoder–decoder's cross-attention (lesson 07).

    Nothing is trained in the callback: the snapshots come from ``train_toy(..., on_step=...)``.

    Args:
        steps: the training step of each snapshot (ascending).
        alignments: ``(n_snapshots, T, S)`` cross-attention weights of one source at those steps.
        written: ``(n_snapshots, T)`` what greedy decoding wrote at those steps.
        source: the S source digits.
        losses: the training loss at every step (drawn beside the heatmap), or None.

    Returns:
        a :class:`FigureWidget`; ``readout`` has ``step``, ``mirrored`` (share of output steps whose
        largest weight is on the mirrored source position) and ``sharpness`` (mean largest weight).
    """
    require_float("alignments", alignments)
    require_rank("alignments", alignments, 3, "(n_snapshots, T, S)")
    if len(steps) != alignments.shape[0] or tuple(written.shape) != tuple(alignments.shape[:2]):
        raise ValueError(
            f"need one step and one written row per snapshot, got {len(steps)} steps, alignments "
            f"{shape_of(alignments)} and written {shape_of(written)}"
        )
    n_out, n_in = alignments.shape[1:]
    mirror = torch.arange(n_in - 1, n_in - 1 - n_out, -1)  # (T,)
    slider = widgets.SelectionSlider(
        options=list(steps),
        value=steps[-1],
        description="training step",
        style={"description_width": "initial"},
        layout={"width": "60%"},
    )

    def draw(figure: Figure) -> dict[str, float]:
        at = list(steps).index(slider.value)
        weights = alignments[at]  # (T, S)
        readout = {
            "step": float(slider.value),
            "mirrored": float((weights.argmax(-1) == mirror).float().mean()),
            "sharpness": float(weights.max(-1).values.mean()),
        }
        (left, right) = figure.subplots(1, 2, width_ratios=(3, 2))
        plot_attention(
            weights,
            [f"out {t}: {d}" for t, d in enumerate(written[at].tolist())],
            [f"in {s}: {d}" for s, d in enumerate(source)],
            ax=left,
            annotate=False,
            title=f"Cross-attention after {slider.value} steps\n"
            f"{readout['mirrored']:.0%} of outputs read the mirrored digit",
        )
        if losses is not None:
            right.semilogy(range(1, len(losses) + 1), list(losses), color="tab:gray")
            if slider.value >= 1:
                right.semilogy([slider.value], [losses[slider.value - 1]], "o", color="tab:red", markersize=9)
            right.set_ylabel("training loss (log scale)")
        right.axvline(slider.value, color="tab:red", linestyle=":")
        right.set_xlabel("training step")
        right.set_title(f"Where the snapshot sits (step {slider.value})")
        return readout

    return FigureWidget("Cross-attention over training: move the step", [slider], draw, figsize=(11, 4))


def rope_dial(d_head: int = 16, n_positions: int = 32, *, seed: int = 0) -> FigureWidget:
    r"""The RoPE dial (lesson 08): a position and a frequency index -> the rotated pair, and the score
    of two tokens as a function of their offset only.

    Left: pair ``i`` (coordinates ``i`` and ``i + d/2``, the half-split layout) of one vector at
    positions ``0 .. m``, turned by $m\,\theta_i$. Right: the score $q'_m \cdot k'_{m+\Delta}$ of a
    fixed query and key (one of three random pairs, the "tokens" picker) as the key's offset $\Delta$ varies, for the query at position ``m`` and at
    position 0 (the two curves lie on each other), with pair ``i``'s own share of the score.

    Returns:
        a :class:`FigureWidget`; ``readout`` has ``angle`` (radians, of pair ``i`` at ``m``),
        ``score_gap`` (largest difference between the two curves) and ``pair_share`` at offset 1.
    """
    if d_head <= 0 or d_head % 2:
        raise ValueError(f"d_head must be a positive even number, got {d_head}")
    half = d_head // 2
    generator = torch.Generator().manual_seed(seed)
    span = 2 * n_positions
    positions = torch.arange(span)
    rotated = {}  # tokens -> (q at every position, k at every position), each (2P, d)
    for n in range(1, 4):
        q, k = torch.randn(d_head, generator=generator), torch.randn(d_head, generator=generator)
        rotated[f"query {n} · key {n}"] = (
            apply_rope(q.expand(span, d_head), positions),
            apply_rope(k.expand(span, d_head), positions),
        )
    tokens = widgets.Dropdown(options=list(rotated), value=next(iter(rotated)), description="tokens")
    offsets = torch.arange(n_positions)  # the key sits Δ positions after the query
    pair_angle = 10000.0 ** (-torch.arange(half) * 2 / d_head)  # θ_i, (d/2,)
    position_slider = widgets.IntSlider(value=3, min=0, max=n_positions - 1, description="position m")
    pair_slider = widgets.IntSlider(value=0, min=0, max=half - 1, description="pair i")

    def draw(figure: Figure) -> dict[str, float]:
        m, i = position_slider.value, pair_slider.value
        q_at, k_at = rotated[tokens.value]
        (left, right) = figure.subplots(1, 2, width_ratios=(2, 3))
        trail = torch.arange(m + 1).float() * pair_angle[i]
        left.add_patch(Circle((0, 0), 1.0, fill=False, color="lightgray"))
        left.plot(torch.cos(trail).numpy(), torch.sin(trail).numpy(), ".", color="tab:gray", markersize=4)
        angle = float(m * pair_angle[i])
        left.annotate(
            "",
            xy=(math.cos(angle), math.sin(angle)),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 2},
        )
        left.annotate("", xy=(1, 0), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "tab:blue"})
        left.set_xlim(-1.25, 1.25)
        left.set_ylim(-1.25, 1.25)
        left.set_aspect("equal")
        left.set_xlabel(f"coordinate {i}")
        left.set_ylabel(f"coordinate {i + half}")
        left.set_title(
            f"Pair {i} at position {m}: turned {angle:.2f} rad\n(θ_{i} = {float(pair_angle[i]):.4f} rad per position)"
        )
        scores_here = (q_at[m] * k_at[m + offsets]).sum(-1)  # (P,) query at m, key at m + Δ
        scores_zero = (q_at[0] * k_at[offsets]).sum(-1)  # query at 0
        pair_scores = q_at[m, [i, i + half]] @ k_at[m + offsets][:, [i, i + half]].T  # (P,) pair i's share
        right.plot(offsets.numpy(), scores_zero.numpy(), color="tab:gray", lw=5, alpha=0.4, label="query at 0")
        right.plot(offsets.numpy(), scores_here.numpy(), color="tab:red", label=f"query at {m}")
        right.plot(
            offsets.numpy(),
            pair_scores.numpy(),
            color="tab:blue",
            linestyle="--",
            label=f"pair {i}'s share (period {2 * math.pi / float(pair_angle[i]):.0f})",
        )
        right.axhline(0, color="k", lw=0.5)
        right.set_xlabel("offset Δ = key position − query position")
        right.set_ylabel("score q'·k'")
        right.set_title(f"{tokens.value}: the score depends on the offset only")
        right.legend(fontsize=8, loc="upper right")
        return {
            "angle": angle,
            "score_gap": float((scores_here - scores_zero).abs().max()),
            "pair_share": float(pair_scores[1]),
            "score_at_1": float(scores_here[1]),
        }

    return FigureWidget(
        "The RoPE dial: a position and a pair turn the vector; the score sees only the offset",
        [tokens, position_slider, pair_slider],
        draw,
        figsize=(11, 4.2),
    )


def decode_stepper(model: Decoder, prompt: Tensor, n_new: int = 24) -> FigureWidget:
    """Decode token by token with a growing KV cache (lesson 09): the cache, its bytes, and the work
    of recomputing every step versus reading the cache.

    Everything is decoded once, up front; the slider only picks which step to show.

    Args:
        model: a :class:`~attention_course.decoder.Decoder`.
        prompt: int ``(1, P)`` prompt tokens.
        n_new: tokens to generate.

    Returns:
        a :class:`FigureWidget`; ``readout`` has ``length`` (cached tokens), ``cache_bytes``,
        ``recompute_pairs`` and ``cached_pairs`` (query-key pairs per layer and head, for the
        chosen step or in total so far).
    """
    from ..generation import decode_step, new_cache, prefill  # the widget module stays importable without them
    from ..kv_cache import GrowingKVCache

    require_rank("prompt", prompt, 2, "(1, P)")
    cache = new_cache(model, batch_size=1, kind="growing")
    assert isinstance(cache, GrowingKVCache)
    n_prompt = prompt.shape[1]
    tokens, cache_bytes = prompt[0].tolist(), []
    with torch.no_grad():
        logits = prefill(model, prompt, cache)[:, -1]
        cache_bytes.append(cache.memory_bytes())
        for _ in range(n_new):
            token = logits.argmax(dim=-1, keepdim=True)
            tokens.append(int(token))
            logits = decode_step(model, token, cache)
            cache_bytes.append(cache.memory_bytes())
    layer_keys = cache.keys[0]
    assert layer_keys is not None  # filled by the prefill
    keys = layer_keys[0, 0]  # (P + n_new, d_head): layer 0, batch 0, kv head 0
    lengths = torch.arange(n_prompt, n_prompt + n_new + 1)  # cached tokens after each step (step 0 = prefill)
    recompute = lengths * (lengths + 1) // 2  # causal pairs when the whole sequence is recomputed
    cached = lengths.clone()  # one new query against every cached key
    cached[0] = recompute[0]  # the prefill is the same pass either way
    step_slider = widgets.IntSlider(value=n_new // 2, min=0, max=n_new, description="step")
    count = widgets.Dropdown(options=["this step", "total so far"], value="this step", description="work")
    vmax = float(keys.abs().max())

    def draw(figure: Figure) -> dict[str, float]:
        step = step_slider.value
        length = n_prompt + step
        (left, middle, right) = figure.subplots(1, 3, width_ratios=(2, 2, 2))
        shown = torch.full_like(keys, float("nan"))
        shown[:length] = keys[:length]
        left.imshow(shown.numpy(), cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
        left.axhline(n_prompt - 0.5, color="k", lw=1)
        left.set_yticks(range(0, len(tokens), 4))
        left.set_xlabel("d_head")
        left.set_ylabel("cached position")
        left.set_title(f"Layer 0 keys after step {step}\n({length} cached; last token fed: {tokens[length - 1]})")
        middle.plot(range(n_new + 1), [b / 1024 for b in cache_bytes], color="tab:gray")
        middle.plot([step], [cache_bytes[step] / 1024], "o", color="tab:red", markersize=9)
        middle.set_xlabel("decode step (0 = prompt)")
        middle.set_ylabel("cache, KiB (all layers)")
        middle.set_title(f"Cache memory: {cache_bytes[step] / 1024:.1f} KiB")
        if count.value == "this step":
            values = [int(recompute[step]), int(cached[step])]
        else:
            values = [int(recompute[: step + 1].sum()), int(cached[: step + 1].sum())]
        bars = right.bar(["recompute\nevery token", "read the\ncache"], values, color=["tab:orange", "tab:green"])
        right.bar_label(bars, [f"{v:,}" for v in values])
        right.set_ylim(0, 1.15 * int(recompute.sum() if count.value != "this step" else recompute.max()))
        right.set_ylabel("query-key pairs per layer and head")
        right.set_title(f"Work, {count.value}: {values[0] / values[1]:.1f}× less cached")
        return {
            "length": float(length),
            "cache_bytes": float(cache_bytes[step]),
            "recompute_pairs": float(values[0]),
            "cached_pairs": float(values[1]),
        }

    return FigureWidget(
        "Decode stepper: the KV cache grows one token per step", [count, step_slider], draw, figsize=(13, 4.2)
    )


def pattern_picker(n: int = 64, block_size: int = 8, max_layers: int = 6, *, seed: int = 0) -> FigureWidget:
    """Build a sparse pattern (lesson 10): window, dilation, global tokens and random blocks -> the
    mask, its density, and the receptive field over depth.

    On ``n // 2``, ``n`` or ``2 * n`` tokens (the "tokens" picker), the mask is the union of a dilated
    window (``window`` keys each side, ``dilation`` apart), the
    first ``global tokens`` positions as global rows and columns, and ``random blocks`` random key
    blocks of ``block_size`` per query block (BigBird's random links).

    Returns:
        a :class:`FigureWidget`; ``readout`` has ``density`` and ``layers_to_full`` (layers until every
        token reaches every position; ``max_layers + 1`` when it never does within ``max_layers``).
    """
    from ..sparse import bigbird_pattern, dilated_window_pattern, longformer_pattern

    length = widgets.Dropdown(options=[n // 2, n, 2 * n], value=n, description="tokens")
    window = widgets.IntSlider(value=2, min=1, max=8, description="window")
    dilation = widgets.IntSlider(value=1, min=1, max=4, description="dilation")
    n_global = widgets.IntSlider(value=0, min=0, max=4, description="global tokens")
    n_random = widgets.IntSlider(value=0, min=0, max=3, description="random blocks")
    for control in (window, dilation, n_global, n_random):
        control.style = {"description_width": "initial"}

    def draw(figure: Figure) -> dict[str, float]:
        n = length.value
        mask = dilated_window_pattern(n, window.value, dilation.value).mask()
        mask = mask | longformer_pattern(n, 0, list(range(n_global.value))).mask()
        if n_random.value:
            mask = mask | bigbird_pattern(n, 0, [], n_random.value, block_size, seed=seed).mask()
        step = (mask | torch.eye(n, dtype=torch.bool)).numpy().astype("float32")  # receptive_field's step, in NumPy:
        reached, shares = step > 0, []  # a 64 x 64 product is faster there than through torch's thread pool
        for _ in range(max_layers):
            shares.append(float(reached.mean()))
            reached = (step @ reached.astype("float32")) > 0
        reach = torch.tensor(shares)  # (layers,) share of (position, input) pairs reached
        full = [layer + 1 for layer in range(max_layers) if reach[layer] >= 1.0]
        density = float(mask.float().mean())
        (left, right) = figure.subplots(1, 2)
        left.imshow(mask.numpy(), cmap="Greys", interpolation="nearest")
        left.set_xlabel("key position")
        left.set_ylabel("query position")
        left.set_title(
            f"w={window.value}, r={dilation.value}, {n_global.value} global, "
            f"{n_random.value} random\ndensity {density:.1%} of {n}×{n}"
        )
        right.plot(range(1, max_layers + 1), (100 * reach).numpy(), "o-")
        right.set_ylim(0, 105)
        right.set_xlabel("layers stacked")
        right.set_ylabel("% of (position, input) pairs reached")
        right.set_title(
            "Receptive field over depth: "
            + (f"everything after {full[0]} layers" if full else f"not everything within {max_layers} layers")
        )
        return {"density": density, "layers_to_full": float(full[0] if full else max_layers + 1)}

    return FigureWidget(
        "Pattern picker: build a sparse attention pattern",
        [length, window, dilation, n_global, n_random],
        draw,
        figsize=(11, 4.4),
    )


def head_view(
    views: Mapping[str, tuple[Sequence[str], Tensor]], *, sentence: str | None = None, layer: int = 0, head: int = 0
) -> FigureWidget:
    """A head view in the manner of BertViz (lesson 12): the tokens twice, side by side, and a line from
    each query token (left) to each key token (right) whose opacity and width grow with the weight.

    Args:
        views: sentence -> (its L tokens, attention weights ``(layers, heads, L, L)``), computed once.
        sentence, layer, head: what to show first.

    Returns:
        a :class:`FigureWidget` with a sentence picker and layer and head sliders; ``readout`` has
        ``layer``, ``head``, ``top_weight`` and ``top_query``/``top_key`` (positions of the strongest line) and
        ``mean_distance`` (weighted mean |query − key| in tokens).
    """
    if not views:
        raise ValueError("views must hold at least one sentence")
    for text, (tokens, weights) in views.items():
        require_rank(f"views[{text!r}] weights", weights, 4, "(layers, heads, L, L)")
        if weights.shape[-1] != len(tokens) or weights.shape[-2] != len(tokens):
            raise ValueError(f"views[{text!r}]: weights {shape_of(weights)} do not match its {len(tokens)} tokens")
    first = next(iter(views.values()))[1]
    longest = max(len(tokens) for tokens, _ in views.values())
    sentence_picker = widgets.Dropdown(
        options=list(views), value=sentence or next(iter(views)), description="sentence", layout={"width": "95%"}
    )
    layer_slider = widgets.IntSlider(value=layer, min=0, max=first.shape[0] - 1, description="layer")
    head_slider = widgets.IntSlider(value=head, min=0, max=first.shape[1] - 1, description="head")

    def draw(figure: Figure) -> dict[str, float]:
        from matplotlib.collections import LineCollection

        tokens, all_weights = views[sentence_picker.value]
        weights = all_weights[layer_slider.value, head_slider.value].float()  # (L, L)
        n_tokens = len(tokens)
        y = -torch.arange(n_tokens).float()
        i, j = torch.meshgrid(torch.arange(n_tokens), torch.arange(n_tokens), indexing="ij")
        segments = torch.stack(
            [torch.stack([torch.zeros_like(y[i]), y[i]], -1), torch.stack([torch.ones_like(y[j]), y[j]], -1)], dim=-2
        ).reshape(-1, 2, 2)
        flat = weights.reshape(-1)
        colours = torch.zeros(flat.numel(), 4)
        colours[:, 2] = 0.75  # blue lines, opacity = weight
        colours[:, 3] = flat.clamp(0, 1)
        ax = figure.subplots()
        ax.add_collection(
            LineCollection(list(segments.numpy()), colors=colours.numpy(), linewidths=(0.5 + 4 * flat).numpy())
        )
        for position, token in enumerate(tokens):
            ax.text(-0.03, -position, token, ha="right", va="center", fontsize=9)
            ax.text(1.03, -position, token, ha="left", va="center", fontsize=9)
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(-n_tokens + 0.5, 0.8)
        ax.axis("off")
        ax.text(0, 0.6, "query (attending)", ha="center", fontsize=9, style="italic")
        ax.text(1, 0.6, "key (attended to)", ha="center", fontsize=9, style="italic")
        top = int(flat.argmax())
        ax.set_title(
            f"Layer {layer_slider.value}, head {head_slider.value}: strongest line "
            f"{tokens[top // n_tokens]} → {tokens[top % n_tokens]} ({float(flat[top]):.2f})"
        )
        distance = (weights * (i - j).abs().float()).sum() / n_tokens
        return {
            "layer": float(layer_slider.value),
            "head": float(head_slider.value),
            "top_weight": float(flat[top]),
            "top_query": float(top // n_tokens),
            "top_key": float(top % n_tokens),
            "mean_distance": float(distance),
        }

    return FigureWidget(
        "Head view: query → key lines, as strong as the weights",
        [sentence_picker, layer_slider, head_slider],
        draw,
        figsize=(6.5, max(4.0, 0.32 * longest + 1.2)),
    )


def tile_stepper(q: Tensor, k: Tensor, v: Tensor, block_q: int = 4, block_k: int = 4) -> PlotWidget:
    r"""Step through ``tiled_attention`` on one head, tile by tile (lesson 11).

    Left: the tiles visited so far (grey) and the current one (red), over the final attention
    weights. Middle: the running maximum $m$ and sum $\ell$ of the current query tile's rows. Right:
    the partial output $o / \ell$ of those rows (dots) against the final output (crosses).

    Args:
        q: ``(L, 2)``; k: ``(S, 2)``; v: ``(S, 2)``: one head with two features, so outputs are points.
        block_q, block_k: tile sizes.

    Returns:
        a :class:`PlotWidget` with a tile slider and a *causal* box; ``readout`` has ``tiles`` (visited
        in this mode), ``q_start``, ``k_start`` and ``distance``, the largest distance of the current
        query tile's partial outputs from their final values.
    """
    from matplotlib.patches import Rectangle

    from ..flash import tiled_attention_steps

    for name, t in (("q", q), ("k", k), ("v", v)):
        require_float(name, t)
        require_rank(name, t, 2, "(positions, 2)")
    if v.shape[1] != 2:
        raise ValueError(f"v must have 2 features (the outputs are drawn as points), got shape {shape_of(v)}")
    steps = {causal: tiled_attention_steps(q, k, v, causal, block_q, block_k) for causal in (False, True)}
    slider = widgets.IntSlider(value=1, min=1, max=len(steps[False]), description="tile")
    causal_box = widgets.Checkbox(value=False, description="causal")
    causal_box.observe(lambda change: setattr(slider, "max", len(steps[change["new"]])), names="value")

    def draw() -> dict[str, float]:
        visited = steps[causal_box.value]
        step = min(slider.value, len(visited))
        current = visited[step - 1]
        final, weights = scaled_dot_product_attention(q, k, v, causal=causal_box.value, return_weights=True)
        rows = torch.arange(current.q_start, current.q_stop)
        figure, (ax_map, ax_stats, ax_out) = plt.subplots(1, 3, figsize=(14, 3.8))
        ax_map.imshow(weights, cmap="Blues", vmin=0, vmax=float(weights.max()))
        for seen in visited[:step]:
            is_current = seen is current
            ax_map.add_patch(
                Rectangle(
                    (seen.k_start - 0.5, seen.q_start - 0.5),
                    seen.k_stop - seen.k_start,
                    seen.q_stop - seen.q_start,
                    fill=not is_current,
                    alpha=1 if is_current else 0.35,
                    facecolor="grey",
                    edgecolor="red" if is_current else "grey",
                    linewidth=3,
                )
            )
        ax_map.set(
            title=f"tile {step} of {len(visited)}: queries {current.q_start}-{current.q_stop - 1}, "
            f"keys {current.k_start}-{current.k_stop - 1}",
            xlabel="key",
            ylabel="query",
        )
        width = 0.4
        ax_stats.bar(rows - width / 2, current.running_max, width, label="running max m")
        ax_stats.bar(rows + width / 2, current.running_sum, width, label="running sum ℓ")
        ax_stats.set(title="m and ℓ of this query tile", xlabel="query", ylabel="value", xticks=rows.tolist())
        ax_stats.legend()
        ax_out.scatter(*current.partial_output.T, label="partial output o / ℓ")
        ax_out.scatter(*final[rows].T, marker="x", s=80, label="final output")
        for row, (x, y), (fx, fy) in zip(
            rows.tolist(), current.partial_output.tolist(), final[rows].tolist(), strict=True
        ):
            ax_out.plot([x, fx], [y, fy], ":", color="grey")  # how far this row still has to go
            ax_out.annotate(str(row), (x, y), textcoords="offset points", xytext=(4, 4))
        ax_out.set(title="partial against final output", xlabel="output feature 0", ylabel="output feature 1")
        ax_out.legend()
        figure.tight_layout()
        distance = float((current.partial_output - final[rows]).norm(dim=-1).max())
        return {
            "tiles": float(len(visited)),
            "q_start": float(current.q_start),
            "k_start": float(current.k_start),
            "distance": distance,
        }

    return PlotWidget([slider, causal_box], draw)


# --- Lessons 02, 05, 06 (issue 20): query explorer, mask builder, head explorer -------------------------
#
# Each builder takes the state it starts in as keyword arguments, so :func:`save_picture` can draw the
# committed static picture of a lesson with the very draw function its widget uses.


class _StatefulPlotWidget(PlotWidget):
    """A :class:`PlotWidget` that draws once per new state of its controls, into an image it updates in place.

    One move can change two controls (a head slider clamped when the number of heads drops), which
    would otherwise draw the same figure twice. The figure is shown as an ``Image`` widget whose
    bytes are replaced on each move, rather than cleared and displayed again in the output area:
    fast moves (a slider dragged) then cannot leave the area empty, and one draw (no tight
    bounding-box pass, as the inline backend makes) halves the time a move takes.
    """

    def __init__(self, controls: Sequence[widgets.ValueWidget], draw: Callable[[], dict[str, float]]) -> None:
        self._drawn_state: tuple[object, ...] | None = None
        self._image = widgets.Image(format="png")
        super().__init__(controls, draw)
        # The image is a child of the box, not a view displayed inside the output area: the static
        # HTML build (html_build.static_widgets) then has no nested widget view left to render.
        self.children = (*self.controls, self._image, self.output)

    def _state(self) -> tuple[object, ...]:
        return tuple(control.value for control in self.controls)

    def _on_change(self, change: object) -> None:
        if self._state() != self._drawn_state:
            self.redraw()

    def redraw(self) -> None:
        """Draw the figure for the controls' values, put it in the image, and refresh ``readout``."""
        self._drawn_state = self._state()
        with self.output:  # an error in draw shows in the output area, as in PlotWidget
            self.readout = self._draw()
            figure = plt.gcf()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=80)  # as the committed pictures; fewer pixels to encode
            plt.close(figure)
            self._image.value = buffer.getvalue()


def save_picture(widget: PlotWidget, path: str | Path, *, dpi: int = 80) -> Path:
    """Draw ``widget``'s current state with its own draw function and save it as a PNG.

    The lessons commit one such picture under each widget, for readers without a kernel (the static
    HTML, GitHub). The file carries no time stamp or software version, so redrawing an unchanged
    state rewrites the same bytes.

    Args:
        widget: a widget built by this module, in the state to picture.
        path: where the PNG goes (its folder is created).
        dpi: resolution; 80 keeps the committed files small.

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    widget.readout = widget._draw()
    figure = plt.gcf()
    figure.savefig(path, dpi=dpi, metadata={"Software": None})
    plt.close(figure)
    return path


def query_explorer(
    tokens: Sequence[str],
    projections: Mapping[str, tuple[Tensor, Tensor, Tensor]],
    *,
    word: str | None = None,
    projection: str | None = None,
) -> PlotWidget:
    r"""Pick a word (and a set of queries, keys, values): its query against every key, the scores, the weights, the output.

    Lesson 02's one lookup, laid out left to right: the query $q_i$ above the keys $K$ (one row per
    token), the scores $q_i \cdot k_j$, the weights $\mathrm{softmax}_j$ (unscaled, as in lessons
    01–02) and the output $\sum_j w_j v_j$ next to the word's own value.

    Args:
        tokens: the L tokens.
        projections: label -> ``(q, k, v)``, each ``(L, d)`` (e.g. "Q = K = V = X" and "hand-made W_Q").
            Everything is computed here, once; a control move only redraws.
        word: the word picked first (default: the first token), as ``"i: token"`` or a token.
        projection: the label picked first (default: the first).

    Returns:
        a :class:`PlotWidget` with a word and a projection drop-down; ``readout`` has ``position``,
        ``top_position``, ``top_weight``, ``score_<j>`` and ``weight_<j>`` per key, and ``out_<c>`` per
        output feature.
    """
    if not projections:
        raise ValueError("projections must hold at least one (q, k, v), got none")
    computed: dict[str, tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = {}
    for label, (q, k, v) in projections.items():
        for name, t in (("q", q), ("k", k), ("v", v)):
            require_float(f"projections[{label!r}] {name}", t)
            require_rank(f"projections[{label!r}] {name}", t, 2, "(L, d)")
            if t.shape[0] != len(tokens):
                raise ValueError(
                    f"projections[{label!r}] {name} must have one row per token ({len(tokens)}), "
                    f"got shape {shape_of(t)}"
                )
        _, weights = scaled_dot_product_attention(q, k, v, scale=1.0, return_weights=True)
        computed[label] = (q, k, v, attention_scores(q, k), weights)  # scores and weights (L, L)
    options = [f"{i}: {token}" for i, token in enumerate(tokens)]
    first = options[0] if word is None else next(o for o in options if word in (o, o.split(": ", 1)[1]))
    word_picker_ = widgets.Dropdown(options=options, value=first, description="query word")
    projection_picker = widgets.Dropdown(
        options=list(projections),
        value=projection or list(projections)[0],
        description="Q, K, V",
        style={"description_width": "initial"},
    )
    positions = list(range(len(tokens)))

    def draw() -> dict[str, float]:
        i = options.index(word_picker_.value)
        q, k, v, scores, weights = computed[projection_picker.value]
        row_scores, row_weights = scores[i], weights[i]  # (L,), (L,)
        output = row_weights @ v  # (d_v,)
        figure, axes = plt.subplots(1, 4, figsize=(14, 3.6), width_ratios=(1.3, 1, 1, 1.2))
        lookup, score_ax, weight_ax, out_ax = axes
        table = torch.cat([q[i : i + 1], torch.full((1, q.shape[1]), float("nan")), k])  # query, gap, keys
        limit = max(float(table.nan_to_num().abs().max()), 1e-6)
        lookup.imshow(table.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        lookup.set_yticks(
            [0, *range(2, len(tokens) + 2)], [f"query {tokens[i]}", *(f"key {t}" for t in tokens)], fontsize=7
        )
        lookup.set_xticks(range(q.shape[1]))
        lookup.set_xlabel("feature of q and k")
        lookup.set_title(f"q of {tokens[i]!r} against every key")
        score_ax.barh(positions, row_scores.numpy(), color="tab:gray")
        weight_ax.barh(positions, row_weights.numpy(), color="tab:blue")
        for ax, title, label in ((score_ax, "scores q·k", "score"), (weight_ax, "weights softmax(scores)", "weight")):
            ax.set_yticks(positions, list(tokens) if ax is score_ax else [], fontsize=7)  # one set of labels is enough
            ax.invert_yaxis()
            ax.set_xlabel(label)
            ax.set_title(title)
        weight_ax.set_xlim(0, 1)
        features = torch.arange(v.shape[1])
        out_ax.bar(features - 0.2, v[i].numpy(), width=0.4, color="0.6", label=f"value of {tokens[i]!r}")
        out_ax.bar(features + 0.2, output.numpy(), width=0.4, color="tab:orange", label="output Σ w·v")
        out_ax.set_xticks(features.tolist())
        out_ax.set_xlabel("feature of v")
        out_ax.set_title("output vector")
        out_ax.legend(fontsize=7)
        figure.suptitle(f"{projection_picker.value}: the lookup of {tokens[i]!r}", fontsize=11)
        # Fixed margins: tight_layout would cost about a third of each redraw.
        figure.subplots_adjust(left=0.09, right=0.99, bottom=0.15, top=0.83, wspace=0.3)
        top = int(row_weights.argmax())
        return (
            {"position": float(i), "top_position": float(top), "top_weight": float(row_weights[top])}
            | {f"score_{j}": float(s) for j, s in enumerate(row_scores)}
            | {f"weight_{j}": float(w) for j, w in enumerate(row_weights)}
            | {f"out_{c}": float(o) for c, o in enumerate(output)}
        )

    return _StatefulPlotWidget([word_picker_, projection_picker], draw)


_ON_OFF = [("on", True), ("off", False)]


def mask_builder(
    tokens: Sequence[str],
    embeddings: Tensor,
    *,
    causal: bool = True,
    pad_side: str = "right",
    n_real: int | None = None,
    window: int = 2,
    use_window: bool = True,
    seed: int = 0,
) -> PlotWidget:
    r"""Build a mask from a causal switch, a padding length and side, and a sliding window; see the weights it gives.

    The sequence has ``len(tokens)`` slots: the first ``n_real`` tokens, and ``<pad>`` in the other
    slots (after them with right padding, before them with left padding). The mask is the AND of the
    causal mask, the padding mask over keys (lesson 05) and a window $|i - j| \le w$ (lesson 10). A
    query row with no visible key gets zero weights, drawn as an empty row and named on the left.

    Args:
        tokens: the L tokens of the full sentence.
        embeddings: ``(L, d_model)``, their embeddings (the queries, keys and values).
        causal, pad_side, n_real, window, use_window: the state the widget starts in
            (``n_real`` defaults to ``L - 2``).
        seed: seeds the embedding of ``<pad>``.

    Returns:
        a :class:`PlotWidget`; ``readout`` has ``allowed`` (visible pairs), ``density`` (their share of
        L²), ``fully_masked`` (rows with no visible key), ``masked_weight`` (total weight on hidden
        keys: 0) and ``row_sum_<i>`` per query.
    """
    from ..attention import masked_attention
    from ..masking import causal_mask, combine_masks, key_mask_to_attention_mask, padding_mask
    from ..sparse import sliding_window_mask
    from .sentences import PAD

    require_float("embeddings", embeddings)
    require_rank("embeddings", embeddings, 2, "(L, d_model)")
    n = len(tokens)
    if embeddings.shape[0] != n or n < 2:
        raise ValueError(
            f"need at least 2 tokens and one embedding row each, got {n} tokens and embeddings {shape_of(embeddings)}"
        )
    pad_vector = torch.randn(embeddings.shape[1], generator=torch.Generator().manual_seed(seed))
    causal_picker = widgets.Dropdown(options=_ON_OFF, value=causal, description="causal")
    side_picker = widgets.Dropdown(options=["right", "left"], value=pad_side, description="padding")
    # continuous_update=False: a drag sends one value when released, not one redraw per step
    length_slider = widgets.IntSlider(
        value=n - 2 if n_real is None else n_real, min=1, max=n, description="real tokens", continuous_update=False
    )
    window_slider = widgets.IntSlider(value=window, min=0, max=n - 1, description="window w", continuous_update=False)
    window_picker = widgets.Dropdown(options=_ON_OFF, value=use_window, description="window")

    def draw() -> dict[str, float]:
        n_real_now = length_slider.value
        n_pad = n - n_real_now
        real = list(tokens[:n_real_now])
        if side_picker.value == "right":
            labels, x = real + [PAD] * n_pad, torch.cat([embeddings[:n_real_now], pad_vector.expand(n_pad, -1)])
            lengths_mask = padding_mask(torch.tensor([n_real_now]), n)  # (1, L): True at real tokens
        else:
            labels, x = [PAD] * n_pad + real, torch.cat([pad_vector.expand(n_pad, -1), embeddings[:n_real_now]])
            lengths_mask = padding_mask(torch.tensor([n_real_now]), n).flip(-1)
        parts = [key_mask_to_attention_mask(lengths_mask)[0]]  # (1, L) over keys
        if causal_picker.value:
            parts.append(causal_mask(n))
        if window_picker.value:
            parts.append(sliding_window_mask(n, window_slider.value))
        mask = combine_masks(*parts).expand(n, n)  # type: ignore[union-attr]  # (L, L); never None: parts holds the key mask
        _, weights = masked_attention(x, x, x, mask)  # (L, L)
        empty = [i for i in range(n) if not bool(mask[i].any())]
        figure = plt.figure(figsize=(12, 5))
        # Fixed axes instead of tight_layout, which would cost about a third of each redraw.
        left, right = figure.add_axes((0.07, 0.2, 0.36, 0.62)), figure.add_axes((0.55, 0.2, 0.36, 0.62))
        plot_attention(
            mask.float(),
            labels,
            title="combined mask",
            ax=left,
            cmap="Greys",
            annotate=False,
            colorbar_label="1 = may attend, 0 = hidden",
        )
        plot_attention(weights, labels, title="weights softmax(QKᵀ/√d + M)", ax=right, annotate=False)
        for ax in (left, right):
            for i in empty:
                ax.get_yticklabels()[i].set_color("tab:red")
        for i in empty:  # one label per row rather than n numbers: each cell of text costs time on every redraw
            right.text((n - 1) / 2, i, "all weights 0, output 0", ha="center", va="center", color="white", fontsize=8)
        settings_line = (
            f"causal {'on' if causal_picker.value else 'off'} · {n_real_now} real tokens, "
            f"{n_pad} pads on the {side_picker.value} · window "
            + (f"w = {window_slider.value}" if window_picker.value else f"off (w = {window_slider.value} unused)")
        )
        empty_line = (
            f"; {len(empty)} red rows see no key: their weights and output are 0"
            if empty
            else "; every row sees at least one key"
        )
        figure.suptitle(f"{settings_line}\n{int(mask.sum())} of {n * n} pairs visible{empty_line}", fontsize=10)
        return {
            "allowed": float(mask.sum()),
            "density": float(mask.float().mean()),
            "fully_masked": float(len(empty)),
            "masked_weight": float(weights[~mask].sum()),
        } | {f"row_sum_{i}": float(s) for i, s in enumerate(weights.sum(-1))}

    return _StatefulPlotWidget([causal_picker, side_picker, length_slider, window_slider, window_picker], draw)


def head_explorer(
    tokens: Sequence[str],
    x: Tensor,
    w_q: Tensor,
    w_k: Tensor,
    w_v: Tensor,
    w_o: Tensor,
    *,
    n_heads: int = 2,
    head: int = 0,
) -> PlotWidget:
    r"""Cut the same $W_Q, W_K, W_V, W_O$ into 1, 2, … heads and look at each head's pattern and the merged output.

    Top: every head's weights as a thumbnail (the chosen one framed). Bottom: the chosen head's
    weights with tokens on both axes, and the output $\mathrm{Concat}(\mathrm{head}_1, \dots)\,W_O$
    with the chosen head's columns of the concatenation framed. The title counts the parameters: per
    head $3\,d_\text{model} d_\text{head} + d_\text{head} d_\text{model}$, in all $4 d_\text{model}^2$
    whatever the number of heads.

    Args:
        tokens: the L tokens.
        x: ``(L, d_model)``, their embeddings.
        w_q, w_k, w_v, w_o: ``(d_model, d_model)``, in the equations' layout (``q = x @ w_q``).
        n_heads, head: the state the widget starts in.

    Returns:
        a :class:`PlotWidget` with a number-of-heads slider (the divisors of d_model) and a head
        slider; ``readout`` has ``n_heads``, ``head``, ``params_per_head``, ``params_total``,
        ``weight_<i>_<j>`` of the chosen head, and ``out_<i>_<c>`` of the output.
    """
    from ..multihead import merge_heads, multi_head_attention, split_heads

    require_float("x", x)
    require_rank("x", x, 2, "(L, d_model)")
    d_model = x.shape[1]
    if x.shape[0] != len(tokens):
        raise ValueError(f"x must have one row per token ({len(tokens)}), got shape {shape_of(x)}")
    divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
    if n_heads not in divisors:
        raise ValueError(f"n_heads must divide d_model={d_model} (one of {divisors}), got {n_heads}")
    computed = {}  # n_heads -> (weights (h, L, L), heads (h, L, d_head), output (L, d_model))
    with torch.no_grad():
        for h in divisors:
            output, weights = multi_head_attention(x[None], x[None], x[None], w_q, w_k, w_v, w_o, n_heads=h)
            heads = weights[0] @ split_heads((x @ w_v)[None], h)[0]  # (h, L, d_head): each head's output
            computed[h] = (weights[0], heads, output[0])
    # continuous_update=False: a drag sends one value when released, not one redraw per step
    heads_slider = widgets.SelectionSlider(
        options=divisors, value=n_heads, description="heads h", continuous_update=False
    )
    head_slider = widgets.IntSlider(value=head, min=0, max=n_heads - 1, description="head", continuous_update=False)

    def clamp_head(change: dict) -> None:
        head_slider.max = change["new"] - 1  # ipywidgets clamps the value into the new range

    heads_slider.observe(clamp_head, names="value")
    n_thumbs = max(divisors)

    def draw() -> dict[str, float]:
        h, chosen = heads_slider.value, head_slider.value
        d_head = d_model // h
        weights, heads, output = computed[h]
        per_head = 3 * d_model * d_head + d_head * d_model
        figure = plt.figure(figsize=(13, 6.2))
        # Fixed axes instead of tight_layout, which would cost about a third of each redraw.
        width = min(0.07, 0.86 / n_thumbs)
        for i in range(h):
            thumb = figure.add_axes((0.06 + i * (width + 0.005), 0.76, width, 0.1))
            thumb.imshow(weights[i].numpy(), cmap="viridis", vmin=0, vmax=1)
            thumb.set_xticks([])
            thumb.set_yticks([])
            thumb.set_title(f"head {i}", fontsize=7, color="tab:red" if i == chosen else "black")
            if i == chosen:
                for spine in thumb.spines.values():
                    spine.set_color("tab:red")
                    spine.set_linewidth(3)
        pattern = figure.add_axes((0.08, 0.1, 0.34, 0.56))
        plot_attention(
            weights[chosen],
            tokens,
            title=f"head {chosen} of {h} (d_head = {d_head})",
            ax=pattern,
            annotate=len(tokens) <= 8,
        )
        merged = figure.add_axes((0.56, 0.1, 0.36, 0.56))
        concat = merge_heads(heads[None])[0]  # (L, d_model): head i in columns i*d_head .. (i+1)*d_head - 1
        limit = max(float(concat.abs().max()), 1e-6)
        image = merged.imshow(concat.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        merged.add_patch(
            plt.Rectangle(
                (chosen * d_head - 0.5, -0.5), d_head, len(tokens), fill=False, edgecolor="tab:red", linewidth=2.5
            )
        )
        merged.set_yticks(range(len(tokens)), list(tokens))
        merged.set_xlabel(f"feature (head {chosen} wrote columns {chosen * d_head}–{(chosen + 1) * d_head - 1})")
        merged.set_title("merged heads Concat(head 0, …); W_O then mixes the columns", fontsize=10)
        figure.colorbar(image, ax=merged, fraction=0.046, pad=0.04, label="value")
        figure.suptitle(
            f"h = {h} heads of width {d_head}: {per_head} parameters per head "
            f"(3·{d_model}·{d_head} + {d_head}·{d_model}), {h * per_head} in all = 4·{d_model}² "
            "for every h (biases left out)",
            fontsize=10,
        )
        return (
            {
                "n_heads": float(h),
                "head": float(chosen),
                "params_per_head": float(per_head),
                "params_total": float(h * per_head),
            }
            | {f"weight_{i}_{j}": float(weights[chosen, i, j]) for i in range(len(tokens)) for j in range(len(tokens))}
            | {f"out_{i}_{c}": float(output[i, c]) for i in range(len(tokens)) for c in range(d_model)}
        )

    return _StatefulPlotWidget([heads_slider, head_slider], draw)


def draw_rolling_buffer(ax: plt.Axes, step: int, n_sinks: int, window: int, history: int = 10) -> dict[str, float]:
    """Draw a sink + window rolling buffer (lesson 13) as it wraps: one row per step, one column per slot.

    Row ``t`` shows which token each slot holds after token ``t`` was written: sinks in one colour,
    window tokens in another, the token just written outlined. The last ``history`` steps up to
    ``step`` are drawn.

    Returns:
        ``slot`` (where token ``step`` went), ``oldest`` (the oldest window token still cached) and
        ``filled`` (slots in use).
    """
    from ..rolling_cache import ring_slot

    capacity = n_sinks + window
    first = max(0, step - history + 1)
    holder = [-1] * capacity  # token in each slot
    rows = []
    for t in range(step + 1):
        holder[ring_slot(t, n_sinks, window)] = t
        if t >= first:
            rows.append(list(holder))
    for r, row in enumerate(rows):
        t = first + r
        for slot, token in enumerate(row):
            colour = "#f2f2f2" if token < 0 else ("#f4a259" if slot < n_sinks else "#8cb8e0")
            ax.add_patch(plt.Rectangle((slot, r), 1, 1, facecolor=colour, edgecolor="white"))
            if token >= 0:
                ax.text(
                    slot + 0.5,
                    r + 0.5,
                    str(token),
                    ha="center",
                    va="center",
                    fontsize=9,
                    fontweight="bold" if token == t else "normal",
                )
        new_slot = ring_slot(t, n_sinks, window)
        ax.add_patch(plt.Rectangle((new_slot, r), 1, 1, fill=False, edgecolor="crimson", linewidth=2))
    ax.set_xlim(0, capacity)
    ax.set_ylim(len(rows), 0)
    ax.set_xticks(
        [s + 0.5 for s in range(capacity)],
        [f"slot {s}" + (" (sink)" if s < n_sinks else "") for s in range(capacity)],
        rotation=45,
        ha="right",
        fontsize=8,
    )
    ax.set_yticks(
        [r + 0.5 for r in range(len(rows))], [f"after token {first + r}" for r in range(len(rows))], fontsize=8
    )
    ax.set_xlabel("buffer slot")
    ax.set_ylabel("step")
    oldest = max(n_sinks, step - window + 1)
    ax.set_title(
        f"{n_sinks} sinks + window {window}: token {step} went to slot {ring_slot(step, n_sinks, window)}"
        f" (red); oldest window token kept: {oldest}",
        fontsize=10,
    )
    return {
        "slot": float(ring_slot(step, n_sinks, window)),
        "oldest": float(oldest),
        "filled": float(min(step + 1, capacity)),
    }


def rolling_buffer_explorer(n_sinks: int = 2, window: int = 5, n_tokens: int = 30) -> _StatefulPlotWidget:
    """A step slider over a sink + window rolling buffer (lesson 13): the buffer as it wraps, and the
    positions the chosen scheme gives the cached keys at that step (their rank in token order for
    ``"in_cache"``, their token index for ``"absolute"``).

    Returns:
        a :class:`PlotWidget` that draws into a fixed image; ``readout`` has ``slot``, ``oldest`` and ``filled``.
    """
    from ..rolling_cache import chronological_slots

    scheme = widgets.Dropdown(
        options=[("in the cache (StreamingLLM)", "in_cache"), ("absolute (Mistral)", "absolute")],
        value="in_cache",
        description="positions",
    )
    slider = widgets.IntSlider(
        value=min(n_tokens - 1, n_sinks + 2 * window), min=0, max=n_tokens - 1, description="token"
    )

    def draw() -> dict[str, float]:
        figure, ax = plt.subplots(figsize=(8, 4.2))
        readout = draw_rolling_buffer(ax, slider.value, n_sinks, window)
        order = chronological_slots(slider.value, n_sinks, window).tolist()
        step, capacity = slider.value, n_sinks + window
        tokens = list(range(step + 1)) if step < capacity else [*range(n_sinks), *range(step - window + 1, step + 1)]
        positions = list(range(len(order))) if scheme.value == "in_cache" else tokens
        ax.set_xlabel(f"buffer slot\nslots in token order {order}: their keys' positions {positions}")
        figure.tight_layout()
        return readout

    return _StatefulPlotWidget([scheme, slider], draw)
