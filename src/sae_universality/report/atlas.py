"""The atlas: every model pair of a run side by side (config `pairs: all`), same-family pairs marked.

One number has nothing to be compared with: is 0.5 of the ceiling high for two
models? The atlas sets each pair beside the others, and the within-family pair
(the paper's own setting: one family, two sizes) beside the cross-family ones.
Per model pair, layer pair and metric: the excess over chance with its interval,
the fraction of the seed-to-seed ceiling with its interval, and, where the
controls ran, the same two for the context-only codes (token identity taken out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, write_tsv

KEYS = ["model_a", "model_b", "layer_a", "layer_b", "metric"]
VALUES = ["n_pairs", "excess", "excess_ci_low", "excess_ci_high", "p_adjusted", "normalized", "normalized_ci_low",
          "normalized_ci_high"]


def excess_over_chance(scores: pd.DataFrame) -> pd.DataFrame:
    """`excess`, `excess_ci_low`, `excess_ci_high` of a long score table: the score and its interval less the
    null's mean, on the score table's index."""
    return pd.DataFrame({"excess": scores["observed"] - scores["null_mean"],
                         "excess_ci_low": scores["ci_low"] - scores["null_mean"],
                         "excess_ci_high": scores["ci_high"] - scores["null_mean"]}, index=scores.index)


def _values(scores: pd.DataFrame) -> pd.DataFrame:
    table = scores[KEYS].copy()
    table["n_pairs"] = scores["n_pairs"]
    table[["excess", "excess_ci_low", "excess_ci_high"]] = excess_over_chance(scores)
    for column in ("p_adjusted", "normalized", "normalized_ci_low", "normalized_ci_high"):
        table[column] = scores[column] if column in scores else np.nan
    return table


def atlas_table(scores: list[pd.DataFrame], context_only: list[pd.DataFrame], families: dict,
                n_layers: dict | None = None) -> pd.DataFrame:
    """One row per (model pair, layer pair, metric): VALUES of the full scores, `context_only_*` of the
    context-only scores where they exist, each model's family and `same_family` (both known and equal), and
    each layer's relative depth ((layer + 1) / blocks, from `n_layers`: model -> blocks; NaN where unknown)."""
    table = pd.concat([_values(frame) for frame in scores if len(frame)], ignore_index=True)
    controlled = [_values(frame) for frame in context_only if len(frame)]
    if controlled:
        renamed = pd.concat(controlled, ignore_index=True).rename(columns={value: f"context_only_{value}"
                                                                            for value in VALUES})
        table = table.merge(renamed, on=KEYS, how="left")
    else:
        for value in VALUES:
            table[f"context_only_{value}"] = np.nan
    table.insert(2, "family_a", table["model_a"].map(lambda model: families.get(model) or ""))
    table.insert(3, "family_b", table["model_b"].map(lambda model: families.get(model) or ""))
    table.insert(4, "same_family", (table["family_a"] != "") & (table["family_a"] == table["family_b"]))
    n_layers = n_layers or {}
    for side in ("a", "b"):
        blocks = table[f"model_{side}"].map(lambda model: n_layers.get(model, np.nan)).astype(float)
        table.insert(table.columns.get_loc(f"layer_{side}") + 1, f"relative_depth_{side}",
                     (table[f"layer_{side}"] + 1) / blocks)
    return table.sort_values(["same_family", "model_a", "model_b", "layer_a", "layer_b", "metric"],
                             ascending=[False, True, True, True, True, True], kind="stable").reset_index(drop=True)


def atlas_figure(table: pd.DataFrame, out_path: str | Path) -> None:
    """Per metric (columns): each model pair's excess over chance (top) and fraction of the seed-to-seed
    ceiling (bottom), one point per layer pair with its 95% interval; same-family pairs in their own colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(table["metric"]))
    pairs = list(dict.fromkeys(zip(table["model_a"], table["model_b"])))
    figure, axes = plt.subplots(2, len(metrics), figsize=(3.2 * len(metrics), 2.2 + 0.45 * len(pairs) * 2),
                                squeeze=False)
    for column, metric in enumerate(metrics):
        cells = table[table["metric"] == metric]
        for row, (value, title) in enumerate((("excess", "excess over chance"),
                                              ("normalized", "fraction of the ceiling"))):
            axis = axes[row, column]
            for position, (a, b) in enumerate(pairs):
                here = cells[(cells["model_a"] == a) & (cells["model_b"] == b)]
                colour = "tab:red" if here["same_family"].any() else "tab:blue"
                offsets = np.linspace(-0.25, 0.25, max(1, len(here))) if len(here) > 1 else np.zeros(len(here))
                y = position + offsets
                axis.hlines(y, here[f"{value}_ci_low"], here[f"{value}_ci_high"], color=colour, alpha=0.5)
                axis.plot(here[value], y, "o", color=colour, markersize=4)
            axis.axvline(0.0, color="black", linewidth=0.6)
            if not np.isfinite(cells[value].astype(float)).any():
                axis.text(0.5, 0.5, "none: no ceiling above chance\n(one seed, or seeds that disagree)",
                          transform=axis.transAxes, ha="center", va="center", fontsize=7, color="grey")
            if value == "normalized":
                axis.axvline(1.0, color="grey", linestyle=":", linewidth=0.8)
            axis.set_yticks(range(len(pairs)))
            axis.set_yticklabels([f"{a} / {b}" for a, b in pairs] if column == 0 else [], fontsize=7)
            axis.set_ylim(len(pairs) - 0.5, -0.5)
            axis.set_title(f"{metric}: {title}", fontsize=8)
    figure.suptitle("Atlas: every model pair, one point per layer pair with its 95% interval "
                    "(red: same family; bottom: 1 = as alike as two seeds of one model)", fontsize=9)
    figure.tight_layout()
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def write_atlas(score_files: list, context_only_files: list, families: dict, out_table: str | Path,
                out_figure: str | Path, manifests: list = ()) -> pd.DataFrame:
    """The atlas's table and figure from every pair's long score table (and context-only scores); the models'
    manifests give their depths."""
    import json

    n_layers = {}
    for path in manifests:
        manifest = json.loads(Path(path).read_text())
        n_layers[manifest["name"]] = int(manifest["n_layers"])
    table = atlas_table([pd.read_csv(path, sep="\t") for path in score_files],
                        [pd.read_csv(path, sep="\t") for path in context_only_files], families, n_layers)
    write_tsv(table, out_table)
    atlas_figure(table, out_figure)
    return table
