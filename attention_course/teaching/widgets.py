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
            left.hist(scores.flatten().numpy(), bins=40, alpha=0.6, density=True,
                      label=f"{label}: std {readout[f'{label}_std']:.1f}")
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
        plot_weights_bar(weights, tokens, ax=ax,
                         title=f"softmax(scores / T) at T = {slider.value:.2f}\n"
                               f"largest weight {readout['max_weight']:.2f}, "
                               f"entropy {readout['entropy']:.2f} nats (even spread: {math.log(len(tokens)):.2f})")
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

    def __init__(self, title: str, controls: Sequence[widgets.ValueWidget], draw: Callable[[Figure], dict[str, float]],
                 figsize: tuple[float, float], dpi: int = 80) -> None:
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
        canvas.draw()  # one render; savefig would render again for the PNG
        buffer = io.BytesIO()
        PILImage.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).save(
            buffer, format="png", compress_level=1)
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
        raise ValueError(f"need one step and one written row per snapshot, got {len(steps)} steps, alignments "
                         f"{shape_of(alignments)} and written {shape_of(written)}")
    n_out, n_in = alignments.shape[1:]
    mirror = torch.arange(n_in - 1, n_in - 1 - n_out, -1)  # (T,)
    slider = widgets.SelectionSlider(options=list(steps), value=steps[-1], description="training step",
                                     style={"description_width": "initial"}, layout={"width": "60%"})

    def draw(figure: Figure) -> dict[str, float]:
        at = list(steps).index(slider.value)
        weights = alignments[at]  # (T, S)
        readout = {"step": float(slider.value),
                   "mirrored": float((weights.argmax(-1) == mirror).float().mean()),
                   "sharpness": float(weights.max(-1).values.mean())}
        (left, right) = figure.subplots(1, 2, width_ratios=(3, 2))
        plot_attention(weights, [f"out {t}: {d}" for t, d in enumerate(written[at].tolist())],
                       [f"in {s}: {d}" for s, d in enumerate(source)], ax=left, annotate=False,
                       title=f"Cross-attention after {slider.value} steps\n"
                             f"{readout['mirrored']:.0%} of outputs read the mirrored digit")
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
        rotated[f"query {n} · key {n}"] = (apply_rope(q.expand(span, d_head), positions),
                                           apply_rope(k.expand(span, d_head), positions))
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
        left.annotate("", xy=(math.cos(angle), math.sin(angle)), xytext=(0, 0),
                      arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 2})
        left.annotate("", xy=(1, 0), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "tab:blue"})
        left.set_xlim(-1.25, 1.25)
        left.set_ylim(-1.25, 1.25)
        left.set_aspect("equal")
        left.set_xlabel(f"coordinate {i}")
        left.set_ylabel(f"coordinate {i + half}")
        left.set_title(f"Pair {i} at position {m}: turned {angle:.2f} rad\n"
                       f"(θ_{i} = {float(pair_angle[i]):.4f} rad per position)")
        scores_here = (q_at[m] * k_at[m + offsets]).sum(-1)  # (P,) query at m, key at m + Δ
        scores_zero = (q_at[0] * k_at[offsets]).sum(-1)  # query at 0
        pair_scores = q_at[m, [i, i + half]] @ k_at[m + offsets][:, [i, i + half]].T  # (P,) pair i's share
        right.plot(offsets.numpy(), scores_zero.numpy(), color="tab:gray", lw=5, alpha=0.4, label="query at 0")
        right.plot(offsets.numpy(), scores_here.numpy(), color="tab:red", label=f"query at {m}")
        right.plot(offsets.numpy(), pair_scores.numpy(), color="tab:blue", linestyle="--",
                   label=f"pair {i}'s share (period {2 * math.pi / float(pair_angle[i]):.0f})")
        right.axhline(0, color="k", lw=0.5)
        right.set_xlabel("offset Δ = key position − query position")
        right.set_ylabel("score q'·k'")
        right.set_title(f"{tokens.value}: the score depends on the offset only")
        right.legend(fontsize=8, loc="upper right")
        return {"angle": angle, "score_gap": float((scores_here - scores_zero).abs().max()),
                "pair_share": float(pair_scores[1]), "score_at_1": float(scores_here[1])}

    return FigureWidget("The RoPE dial: a position and a pair turn the vector; the score sees only the offset",
                        [tokens, position_slider, pair_slider], draw, figsize=(11, 4.2))


def decode_stepper(model: torch.nn.Module, prompt: Tensor, n_new: int = 24) -> FigureWidget:
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

    require_rank("prompt", prompt, 2, "(1, P)")
    cache = new_cache(model, batch_size=1, kind="growing")
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
    keys = cache.keys[0][0, 0]  # (P + n_new, d_head): layer 0, batch 0, kv head 0
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
        return {"length": float(length), "cache_bytes": float(cache_bytes[step]),
                "recompute_pairs": float(values[0]), "cached_pairs": float(values[1])}

    return FigureWidget("Decode stepper: the KV cache grows one token per step", [count, step_slider], draw,
                        figsize=(13, 4.2))


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
        left.set_title(f"w={window.value}, r={dilation.value}, {n_global.value} global, "
                       f"{n_random.value} random\ndensity {density:.1%} of {n}×{n}")
        right.plot(range(1, max_layers + 1), (100 * reach).numpy(), "o-")
        right.set_ylim(0, 105)
        right.set_xlabel("layers stacked")
        right.set_ylabel("% of (position, input) pairs reached")
        right.set_title("Receptive field over depth: " + (f"everything after {full[0]} layers" if full
                                                          else f"not everything within {max_layers} layers"))
        return {"density": density, "layers_to_full": float(full[0] if full else max_layers + 1)}

    return FigureWidget("Pattern picker: build a sparse attention pattern", [length, window, dilation, n_global, n_random],
                        draw, figsize=(11, 4.4))


def head_view(views: Mapping[str, tuple[Sequence[str], Tensor]], *, sentence: str | None = None,
              layer: int = 0, head: int = 0) -> FigureWidget:
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
    sentence_picker = widgets.Dropdown(options=list(views), value=sentence or next(iter(views)),
                                       description="sentence", layout={"width": "95%"})
    layer_slider = widgets.IntSlider(value=layer, min=0, max=first.shape[0] - 1, description="layer")
    head_slider = widgets.IntSlider(value=head, min=0, max=first.shape[1] - 1, description="head")

    def draw(figure: Figure) -> dict[str, float]:
        from matplotlib.collections import LineCollection

        tokens, all_weights = views[sentence_picker.value]
        weights = all_weights[layer_slider.value, head_slider.value].float()  # (L, L)
        n_tokens = len(tokens)
        y = -torch.arange(n_tokens).float()
        i, j = torch.meshgrid(torch.arange(n_tokens), torch.arange(n_tokens), indexing="ij")
        segments = torch.stack([torch.stack([torch.zeros_like(y[i]), y[i]], -1),
                                torch.stack([torch.ones_like(y[j]), y[j]], -1)], dim=-2).reshape(-1, 2, 2)
        flat = weights.reshape(-1)
        colours = torch.zeros(flat.numel(), 4)
        colours[:, 2] = 0.75  # blue lines, opacity = weight
        colours[:, 3] = flat.clamp(0, 1)
        ax = figure.subplots()
        ax.add_collection(LineCollection(segments.numpy(), colors=colours.numpy(),
                                         linewidths=(0.5 + 4 * flat).numpy()))
        for position, token in enumerate(tokens):
            ax.text(-0.03, -position, token, ha="right", va="center", fontsize=9)
            ax.text(1.03, -position, token, ha="left", va="center", fontsize=9)
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(-n_tokens + 0.5, 0.8)
        ax.axis("off")
        ax.text(0, 0.6, "query (attending)", ha="center", fontsize=9, style="italic")
        ax.text(1, 0.6, "key (attended to)", ha="center", fontsize=9, style="italic")
        top = int(flat.argmax())
        ax.set_title(f"Layer {layer_slider.value}, head {head_slider.value}: strongest line "
                     f"{tokens[top // n_tokens]} → {tokens[top % n_tokens]} ({float(flat[top]):.2f})")
        distance = (weights * (i - j).abs().float()).sum() / n_tokens
        return {"layer": float(layer_slider.value), "head": float(head_slider.value), "top_weight": float(flat[top]),
                "top_query": float(top // n_tokens), "top_key": float(top % n_tokens), "mean_distance": float(distance)}

    return FigureWidget("Head view: query → key lines, as strong as the weights",
                        [sentence_picker, layer_slider, head_slider], draw, figsize=(6.5, max(4.0, 0.32 * longest + 1.2)))
