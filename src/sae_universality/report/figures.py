"""Figures of the report: heatmaps like the paper's, bar charts of semantic subspaces.

Pure functions of the long score tables written by similarity.stage:
`heatmap_figure` and `semantic_figure` build a matplotlib Figure (no pyplot
state, nothing written), `plot_heatmaps` and `plot_semantic_bars` write it as
one PNG atomically.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path

SIGNIFICANCE = 0.05
DPI = 110


def _significant(frame: pd.DataFrame) -> np.ndarray:
    """The table's own `significant` (adjusted p below the configured level); else raw p < SIGNIFICANCE."""
    if "significant" in frame:
        return frame["significant"].fillna(False).astype(bool).to_numpy()
    return frame["p"].to_numpy(dtype=float) < SIGNIFICANCE


def _cell_text(value: float) -> str:
    """Two decimals, or two significant digits for small scores (RSA and CKA excesses are often 0.01)."""
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.2g}"


def _excess_interval(row) -> str:
    """The excess's 95% interval: the observed score's, shifted by the null mean ("" where there is none)."""
    low, high, null = (float(row.get(key, np.nan)) for key in ("ci_low", "ci_high", "null_mean"))
    if not (np.isfinite(low) and np.isfinite(high) and np.isfinite(null)):
        return ""
    return f"[{_cell_text(low - null)}, {_cell_text(high - null)}]"


def heatmap_figure(scores: pd.DataFrame, title: str, color_by: str = "z"):
    """One heatmap per metric: layer of A (rows) x layer of B (columns); returns the Figure.

    Every panel shares one colour scale and one colour bar, and the number in a cell is the quantity its
    colour shows. color_by "z": the excess over random pairings in null standard deviations, on a scale
    centred at 0 (chance) reaching the largest |z| of any panel; a star marks an adjusted p below 0.05, and
    under the number stand the excess with its 95% interval and the number of pairs. color_by "observed":
    the paper's style, the raw score on the scale [0, 1] of every metric (a negative score shows as 0);
    cells that are not significant are hatched with grey numbers. Each panel's title is its metric.
    """
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    metrics = list(dict.fromkeys(scores["metric"]))
    layers_a = sorted(scores["layer_a"].unique())
    layers_b = sorted(scores["layer_b"].unique())
    columns = min(3, len(metrics))
    rows = int(np.ceil(len(metrics) / columns))
    panel_width = max(3.4, 1.4 + 1.0 * len(layers_b))
    panel_height = max(2.8, 1.2 + 0.75 * len(layers_a))
    figure = Figure(figsize=(panel_width * columns + 1.0, panel_height * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat[len(metrics):]:
        axis.axis("off")
    if color_by == "z":
        every = scores["z"].to_numpy(dtype=float)
        span = float(np.nanmax(np.abs(every))) if np.isfinite(every).any() else 1.0
        norm, colormap = Normalize(-max(span, 1e-6), max(span, 1e-6)), "RdBu_r"  # white is chance
    else:
        norm, colormap = Normalize(0.0, 1.0), "viridis"
    image = None
    for axis, metric in zip(axes.flat, metrics):
        cells = scores[scores["metric"] == metric].copy()
        cells["marked"] = _significant(cells)
        cells = cells.set_index(["layer_a", "layer_b"])
        values = np.full((len(layers_a), len(layers_b)), np.nan)
        marked = np.zeros(values.shape, dtype=bool)
        details = {}
        for i, layer_a in enumerate(layers_a):
            for j, layer_b in enumerate(layers_b):
                if (layer_a, layer_b) in cells.index:
                    row = cells.loc[(layer_a, layer_b)]
                    values[i, j] = row[color_by]
                    marked[i, j] = row["marked"]
                    if color_by == "z" and np.isfinite(float(row["excess"])):
                        pairs = f"\nn={int(row['n_pairs'])}" if np.isfinite(float(row.get("n_pairs", np.nan))) else ""
                        details[i, j] = f"{_cell_text(float(row['excess']))} {_excess_interval(row)}".strip() + pairs
        image = axis.imshow(values, cmap=colormap, norm=norm, aspect="auto")
        for i in range(len(layers_a)):
            for j in range(len(layers_b)):
                if not np.isfinite(values[i, j]):
                    axis.text(j, i, "–", ha="center", va="center", fontsize=8, color="grey")
                    continue
                strength = norm(values[i, j])
                if color_by == "z":
                    dark = abs(strength - 0.5) > 0.3  # the ends of RdBu are dark
                    color = "white" if dark else "black"
                    text = f"{values[i, j]:.1f}" + ("*" if marked[i, j] else "")
                else:
                    bright = strength > 0.6  # viridis is light at the top
                    color = ("black" if bright else "white") if marked[i, j] else ("dimgray" if bright else "lightgrey")
                    text = _cell_text(values[i, j])
                    if not marked[i, j]:
                        axis.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                                 edgecolor="grey", linewidth=0))
                axis.text(j, i, text, ha="center", va="bottom" if (i, j) in details else "center", fontsize=8,
                          color=color, fontweight="bold" if marked[i, j] else "normal")
                if (i, j) in details:
                    axis.text(j, i + 0.05, details[i, j], ha="center", va="top", fontsize=5.5, color=color)
        axis.set_xticks(range(len(layers_b)), layers_b)
        axis.set_yticks(range(len(layers_a)), layers_a)
        axis.set_xlabel(f"layer of {scores['model_b'].iloc[0]}")
        axis.set_ylabel(f"layer of {scores['model_a'].iloc[0]}")
        axis.set_title(metric)
    adjusted = "adjusted " if "p_adjusted" in scores else ""
    subtitle = (f"colour and number: z, the excess over random pairings in null standard deviations (0 = chance; "
                f"one scale for every panel); *: {adjusted}p < 0.05; below: excess [95% interval], pairs"
                if color_by == "z" else
                f"colour and number: raw observed score (as in the paper; one scale, 0 to 1, for every panel); "
                f"hatched, grey: {adjusted}p >= 0.05")
    figure.suptitle(f"{title}\n{textwrap.fill(subtitle, 150)}", fontsize=8)
    figure.tight_layout(rect=(0, 0, 0.93, 1))
    if image is not None:
        colorbar = figure.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02)
        colorbar.set_label("z (excess / null sd)" if color_by == "z" else "observed score", fontsize=7)
    return figure


def plot_heatmaps(scores: pd.DataFrame, out_path: str | Path, title: str, color_by: str = "z") -> None:
    """`heatmap_figure` written as one PNG (see there for what it shows)."""
    _save(heatmap_figure(scores, title, color_by), out_path)


def semantic_figure(semantic: pd.DataFrame, title: str):
    """Per (layer_a, layer_b) with a scored category: every metric per category, against its null; returns
    the Figure.

    Bars are the excess of each observed score over its null mean (grouped by
    category, one colour per metric, solid = adjusted p < 0.05, pale = not), with
    the interval of the observed score shifted the same way as error bars; 0 is chance. Layer pairs where no
    category reached `min_pairs` get no panel; the figure's footnote lists the largest skipped
    categories with their pair counts, so an empty result still says why. Each panel's bars of one
    metric form one container labelled with the metric, in the order of the panel's categories.
    """
    import matplotlib
    from matplotlib.figure import Figure

    metrics = list(dict.fromkeys(semantic["metric"])) if len(semantic) else []
    skipped_rows = semantic[semantic["skipped"].astype(bool)] if len(semantic) else semantic
    scored_rows = semantic[~semantic["skipped"].astype(bool)] if len(semantic) else semantic
    cells = list(scored_rows.groupby(["layer_a", "layer_b"], sort=True)) if len(scored_rows) else []
    columns = min(4, max(1, len(cells)))
    rows = int(np.ceil(max(1, len(cells)) / columns))
    figure = Figure(figsize=(max(9.0, 4.6 * columns), 3.4 * rows + 0.9))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat[len(cells):]:
        axis.axis("off")
    colours = matplotlib.colormaps["tab10"]
    width = 0.8 / max(1, len(metrics))
    for axis, ((layer_a, layer_b), cell) in zip(axes.flat, cells):
        categories = list(dict.fromkeys(cell["category"]))
        for index, metric in enumerate(metrics):
            rows_of_metric = cell[cell["metric"] == metric].set_index("category").reindex(categories)
            positions = np.arange(len(categories)) + (index - (len(metrics) - 1) / 2) * width
            significant = _significant(rows_of_metric)
            shades = [(*colours(index)[:3], 1.0 if flag else 0.35) for flag in significant]
            excess = (rows_of_metric["observed"] - rows_of_metric["null_mean"]).to_numpy(dtype=float)
            low = (rows_of_metric["ci_low"] - rows_of_metric["null_mean"]).to_numpy(dtype=float)
            high = (rows_of_metric["ci_high"] - rows_of_metric["null_mean"]).to_numpy(dtype=float)
            axis.bar(positions, excess, width, color=shades, label=metric)
            # Intervals only where the category had pairs enough to resample.
            has_interval = np.isfinite(low) & np.isfinite(high)
            axis.errorbar(positions[has_interval], excess[has_interval],
                          yerr=[excess[has_interval] - low[has_interval], high[has_interval] - excess[has_interval]],
                          fmt="none", ecolor="black", capsize=2, linewidth=0.8)
        n_pairs = cell.groupby("category", sort=False)["n_pairs"].first().reindex(categories)
        axis.set_xticks(range(len(categories)), [f"{c}\n(n={int(n)})" for c, n in zip(categories, n_pairs)], fontsize=7)
        axis.set_title(f"layer {layer_a} vs {layer_b}", fontsize=9)
        axis.axhline(0.0, color="black", linewidth=0.6)
        axis.set_ylabel("observed - null mean", fontsize=7)
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
    figure.suptitle(f"{title}: semantic categories, excess of every metric over random pairings\n"
                    "(0 = chance; solid = adjusted p < 0.05; error bars: 95% interval)", fontsize=9)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    return figure


def plot_semantic_bars(semantic: pd.DataFrame, out_path: str | Path, title: str) -> None:
    """`semantic_figure` written as one PNG (see there for what it shows)."""
    _save(semantic_figure(semantic, title), out_path)


def _save(figure, out_path) -> None:
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=DPI, format="png")
