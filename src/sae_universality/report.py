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


def plot_semantic_bars(semantic: pd.DataFrame, out_path: str | Path, title: str) -> None:
    """Per (layer_a, layer_b) with a scored category: every metric per category, against its null.

    Bars are the observed scores (grouped by category, one colour per metric,
    solid = p < 0.05, pale = not); the black marker on each bar is the null
    mean +- 2 std of random pairings. Layer pairs where no category reached
    `min_pairs` get no panel; the figure's footnote lists the largest skipped
    categories with their pair counts, so an empty result still says why.
    """
    plt = _pyplot()
    metrics = list(dict.fromkeys(semantic["metric"])) if len(semantic) else []
    skipped_rows = semantic[semantic["skipped"].astype(bool)] if len(semantic) else semantic
    scored_rows = semantic[~semantic["skipped"].astype(bool)] if len(semantic) else semantic
    cells = list(scored_rows.groupby(["layer_a", "layer_b"], sort=True)) if len(scored_rows) else []
    columns = min(4, max(1, len(cells)))
    rows = int(np.ceil(max(1, len(cells)) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(max(9.0, 4.6 * columns), 3.4 * rows + 0.9), squeeze=False)
    for axis in axes.flat[len(cells):]:
        axis.axis("off")
    colours = plt.get_cmap("tab10")
    width = 0.8 / max(1, len(metrics))
    for axis, ((layer_a, layer_b), cell) in zip(axes.flat, cells):
        categories = list(dict.fromkeys(cell["category"]))
        for index, metric in enumerate(metrics):
            rows_of_metric = cell[cell["metric"] == metric].set_index("category").reindex(categories)
            positions = np.arange(len(categories)) + (index - (len(metrics) - 1) / 2) * width
            significant = rows_of_metric["p"].to_numpy() < SIGNIFICANCE
            shades = [(*colours(index)[:3], 1.0 if flag else 0.35) for flag in significant]
            axis.bar(positions, rows_of_metric["observed"], width, color=shades, label=metric)
            axis.errorbar(positions, rows_of_metric["null_mean"], yerr=2 * rows_of_metric["null_std"], fmt="_",
                          color="black", capsize=2, linewidth=0.8, markersize=6)
        n_pairs = cell.groupby("category", sort=False)["n_pairs"].first().reindex(categories)
        axis.set_xticks(range(len(categories)), [f"{c}\n(n={int(n)})" for c, n in zip(categories, n_pairs)], fontsize=7)
        axis.set_title(f"layer {layer_a} vs {layer_b}", fontsize=9)
        axis.set_ylim(min(0.0, float(np.nanmin(cell["observed"]))) if len(cell) else 0, 1.05)
    if cells:
        axes.flat[0].legend(fontsize=6, loc="lower right", ncol=2)
    else:
        axes.flat[0].axis("off")
        axes.flat[0].text(0.5, 0.6, "no semantic category reached min_pairs in any layer pair", ha="center",
                          va="center", fontsize=10, transform=axes.flat[0].transAxes)
    if len(skipped_rows):
        largest = (skipped_rows.groupby("category")["n_pairs"].max().sort_values(ascending=False))
        note = "skipped (too few pairs; most in any layer pair): " + ", ".join(f"{c} {int(n)}" for c, n in largest.items())
        figure.text(0.01, 0.005, textwrap.fill(note, 180), fontsize=7, va="bottom")
    figure.suptitle(f"{title}: semantic categories, every metric (solid = p < 0.05) vs random pairings "
                    "(black: null mean +- 2 std)", fontsize=9)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    _save(figure, out_path, plt)


def _save(figure, out_path, plt) -> None:
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
