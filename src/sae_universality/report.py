"""Figures of the report: heatmaps like the paper's, bar charts of semantic subspaces.

Pure functions of the long score tables written by similarity_stage; each
writes one PNG atomically.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_path

SIGNIFICANCE = 0.05


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmaps(scores: pd.DataFrame, out_path: str | Path, title: str) -> None:
    """One heatmap per metric: layer of A (rows) x layer of B (columns), value in each cell.

    Cells whose permutation p >= 0.05 (or that were skipped) are hatched and
    their value is shown in grey: not distinguishable from a random pairing.
    """
    plt = _pyplot()
    metrics = list(dict.fromkeys(scores["metric"]))
    layers_a = sorted(scores["layer_a"].unique())
    layers_b = sorted(scores["layer_b"].unique())
    columns = min(3, len(metrics))
    rows = int(np.ceil(len(metrics) / columns))
    panel_width = max(3.4, 1.4 + 0.75 * len(layers_b))
    panel_height = max(2.8, 1.2 + 0.55 * len(layers_a))
    figure, axes = plt.subplots(rows, columns, figsize=(panel_width * columns, panel_height * rows + 0.4), squeeze=False)
    for axis in axes.flat[len(metrics):]:
        axis.axis("off")
    for axis, metric in zip(axes.flat, metrics):
        cells = scores[scores["metric"] == metric].set_index(["layer_a", "layer_b"])
        values = np.full((len(layers_a), len(layers_b)), np.nan)
        p_values = np.full_like(values, np.nan)
        for i, layer_a in enumerate(layers_a):
            for j, layer_b in enumerate(layers_b):
                if (layer_a, layer_b) in cells.index:
                    values[i, j] = cells.loc[(layer_a, layer_b), "observed"]
                    p_values[i, j] = cells.loc[(layer_a, layer_b), "p"]
        image = axis.imshow(values, cmap="viridis", vmin=np.nanmin(values) if np.isfinite(values).any() else 0,
                            vmax=np.nanmax(values) if np.isfinite(values).any() else 1, aspect="auto")
        for i in range(len(layers_a)):
            for j in range(len(layers_b)):
                significant = np.isfinite(p_values[i, j]) and p_values[i, j] < SIGNIFICANCE
                text = "–" if not np.isfinite(values[i, j]) else f"{values[i, j]:.2f}"
                bright = np.isfinite(values[i, j]) and image.norm(values[i, j]) > 0.6  # viridis is light at the top
                color = ("black" if bright else "white") if significant else ("dimgray" if bright else "lightgrey")
                axis.text(j, i, text, ha="center", va="center", fontsize=8, color=color,
                          fontweight="bold" if significant else "normal")
                if not significant:
                    axis.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="grey", linewidth=0))
        axis.set_xticks(range(len(layers_b)), layers_b)
        axis.set_yticks(range(len(layers_a)), layers_a)
        axis.set_xlabel(f"layer of {scores['model_b'].iloc[0]}")
        axis.set_ylabel(f"layer of {scores['model_a'].iloc[0]}")
        axis.set_title(metric)
        colorbar = figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        colorbar.locator = plt.MaxNLocator(4)
        colorbar.update_ticks()
    figure.suptitle(f"{title}\nhatched, grey: p >= 0.05 against random pairings", fontsize=10)
    figure.tight_layout()
    _save(figure, out_path, plt)


def plot_semantic_bars(semantic: pd.DataFrame, out_path: str | Path, title: str, metric: str = "svcca") -> None:
    """Per category: observed score (bar) and the null mean +- 2 std (black marker) for one metric.

    One panel per (layer_a, layer_b) that has any scored category; skipped
    categories are listed in the panel with their pair counts.
    """
    plt = _pyplot()
    data = semantic[semantic["metric"] == metric]
    cells = data.groupby(["layer_a", "layer_b"], sort=True)
    n_cells = max(1, cells.ngroups)
    columns = min(4, n_cells)
    rows = int(np.ceil(n_cells / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat[cells.ngroups:]:
        axis.axis("off")
    for axis, ((layer_a, layer_b), cell) in zip(axes.flat, cells):
        scored = cell[~cell["skipped"].astype(bool)]
        skipped = cell[cell["skipped"].astype(bool)]
        positions = np.arange(len(scored))
        colors = ["tab:blue" if p < SIGNIFICANCE else "lightsteelblue" for p in scored["p"]]
        axis.bar(positions, scored["observed"], color=colors)
        axis.errorbar(positions, scored["null_mean"], yerr=2 * scored["null_std"], fmt="_", color="black", capsize=3)
        axis.set_xticks(positions, [f"{c}\n(n={n})" for c, n in zip(scored["category"], scored["n_pairs"])],
                        rotation=45, ha="right", fontsize=7)
        axis.set_title(f"layer {layer_a} vs {layer_b}", fontsize=9)
        axis.set_ylim(0, 1.05)
        if len(skipped):
            note = "skipped (pairs): " + ", ".join(f"{c} ({n})" for c, n in zip(skipped["category"], skipped["n_pairs"]))
            axis.text(0.02, 0.98, textwrap.fill(note, 55), transform=axis.transAxes, fontsize=6, va="top")
    figure.suptitle(f"{title}: {metric} per semantic category (bar; dark = p < 0.05) vs random pairings "
                    "(black: null mean +- 2 std)", fontsize=9)
    figure.tight_layout()
    _save(figure, out_path, plt)


def _save(figure, out_path, plt) -> None:
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
