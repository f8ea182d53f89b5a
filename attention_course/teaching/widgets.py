"""Interactive figures for lessons 01–04: move a control, the figure is redrawn.

Each builder returns a :class:`PlotWidget`: the controls above an output area holding a matplotlib
figure. Its ``readout`` holds the numbers the current figure shows, so tests (and curious
learners) can read them without looking at pixels.

- :func:`word_picker` (lesson 01): pick a word, see its attention weights and the weighted average.
- :func:`scaling_explorer` (lesson 03): a d_k slider, with and without the 1/sqrt(d_k) scaling.
- :func:`temperature_explorer` (lesson 04): a temperature slider over fixed scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from .._validation import require_float, require_rank, shape_of
from ..attention import scaled_dot_product_attention
from ..qkv import attention_scores, scaled_attention_scores
from ..softmax import entropy, softmax
from .plotting import plot_weights_bar
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
            ax_map.add_patch(Rectangle((seen.k_start - 0.5, seen.q_start - 0.5), seen.k_stop - seen.k_start,
                                       seen.q_stop - seen.q_start, fill=not is_current, alpha=1 if is_current else 0.35,
                                       facecolor="grey", edgecolor="red" if is_current else "grey", linewidth=3))
        ax_map.set(title=f"tile {step} of {len(visited)}: queries {current.q_start}-{current.q_stop - 1}, "
                   f"keys {current.k_start}-{current.k_stop - 1}", xlabel="key", ylabel="query")
        width = 0.4
        ax_stats.bar(rows - width / 2, current.running_max, width, label="running max m")
        ax_stats.bar(rows + width / 2, current.running_sum, width, label="running sum ℓ")
        ax_stats.set(title="m and ℓ of this query tile", xlabel="query", ylabel="value", xticks=rows.tolist())
        ax_stats.legend()
        ax_out.scatter(*current.partial_output.T, label="partial output o / ℓ")
        ax_out.scatter(*final[rows].T, marker="x", s=80, label="final output")
        for row, (x, y), (fx, fy) in zip(rows.tolist(), current.partial_output.tolist(), final[rows].tolist(),
                                         strict=True):
            ax_out.plot([x, fx], [y, fy], ":", color="grey")  # how far this row still has to go
            ax_out.annotate(str(row), (x, y), textcoords="offset points", xytext=(4, 4))
        ax_out.set(title="partial against final output", xlabel="output feature 0", ylabel="output feature 1")
        ax_out.legend()
        figure.tight_layout()
        distance = float((current.partial_output - final[rows]).norm(dim=-1).max())
        return {"tiles": float(len(visited)), "q_start": float(current.q_start), "k_start": float(current.k_start),
                "distance": distance}

    return PlotWidget([slider, causal_box], draw)
