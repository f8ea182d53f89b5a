"""Figures shared by the lessons: attention heatmaps with tokens on both axes, bar charts of weights."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor


def plot_attention(
    weights: Tensor,
    query_tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
    *,
    title: str = "Attention weights",
    ax: Axes | None = None,
    annotate: bool | None = None,
    cmap: str = "viridis",
    colorbar_label: str = "weight",
) -> Axes:
    """Heatmap of a ``(L, S)`` weight matrix: queries on the rows (y), keys on the columns (x).

    Args:
        weights: ``(L, S)`` tensor or array.
        query_tokens: L labels for the rows (default: positions).
        key_tokens: S labels for the columns (default: ``query_tokens`` when square).
        title: the figure's title.
        ax: draw into this axes (default: a new figure).
        annotate: write each weight in its cell (default: when the matrix is at most 12×12).
        cmap: matplotlib colormap.
        colorbar_label: what the colours mean (e.g. "1 = may attend" for a mask).

    Returns:
        the axes drawn into.
    """
    w = torch.as_tensor(weights).detach().float().cpu()
    if w.dim() != 2:
        raise ValueError(f"weights must be a 2-D (L, S) matrix, got shape {tuple(w.shape)}")
    n_queries, n_keys = w.shape
    query_tokens = list(query_tokens) if query_tokens is not None else [str(i) for i in range(n_queries)]
    if key_tokens is None:
        key_tokens = query_tokens if n_keys == n_queries else [str(j) for j in range(n_keys)]
    if len(query_tokens) != n_queries or len(key_tokens) != n_keys:
        raise ValueError(
            f"need {n_queries} query and {n_keys} key labels for weights {tuple(w.shape)}, "
            f"got {len(query_tokens)} and {len(key_tokens)}"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(1 + 0.45 * n_keys, 1 + 0.4 * n_queries))
    image = ax.imshow(w.numpy(), cmap=cmap, vmin=0.0, vmax=max(1e-9, float(w.max())))
    ax.set_xticks(range(n_keys), key_tokens, rotation=60, ha="right")
    ax.set_yticks(range(n_queries), query_tokens)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    if annotate is None:
        annotate = n_queries <= 12 and n_keys <= 12
    if annotate:
        for i in range(n_queries):
            for j in range(n_keys):
                value = float(w[i, j])
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if value > 0.6 * float(w.max()) else "white",
                )
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)
    return ax


def plot_weights_bar(
    weights: Tensor,
    tokens: Sequence[str],
    *,
    title: str = "Attention weights",
    ax: Axes | None = None,
) -> Axes:
    """Bar chart of one query's weights ``(S,)`` over its keys."""
    w = torch.as_tensor(weights).detach().float().cpu()
    if w.dim() != 1 or len(tokens) != w.shape[0]:
        raise ValueError(
            f"weights must be (S,) with one token label each, got {tuple(w.shape)} and {len(tokens)} labels"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(1 + 0.5 * len(tokens), 3))
    ax.bar(range(len(tokens)), w.numpy(), color="tab:blue")
    ax.set_xticks(range(len(tokens)), list(tokens), rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_xlabel("key token")
    ax.set_ylabel("weight")
    ax.set_title(title)
    return ax
