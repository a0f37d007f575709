"""Similarity over depth: does the most similar layer of B follow the relative depth of A's layer?

The paper's main figures are all-layer heatmaps of same-family pairs. Two
models of different depths are set on one scale by relative depth: block `L`'s
output of an N-block model lies (L + 1) / N of the way through it. For each
layer of A this module finds the layer of B with the largest score and the
layers of B that cannot be told apart from it (their 95% interval reaches the
best one's lower bound), then asks whether the best layer's depth rises with
A's: Spearman's rank correlation over A's layers, with a permutation p (exact
over every ordering of A's layers when there are few).

Two scales, because they answer different questions (SCALES). The excess over
chance is what the paper's heatmaps show, and it grows with how structured
each layer's SAE codes are: where one model's deepest layer has the most
structured codes, it is the "most similar" layer of every layer of the other
model. The fraction of the seed-to-seed ceiling divides that out, since the
ceiling grows with the same structure: it asks which layer of B is as close to
A's layer as two seeds of one SAE are to each other.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, write_tsv
from ..similarity.baselines import adjust_p_values
from .atlas import excess_over_chance

MIN_LAYERS = 3
"""Layers each model needs in a pair before a depth profile means anything."""

EXACT_ORDERINGS = 8
"""Up to this many layers of A, the permutation p enumerates every ordering (8! = 40,320)."""


def relative_depth(layer, n_layers: int):
    """How far through an `n_layers`-block model block `layer`'s output lies: (layer + 1) / n_layers."""
    return (np.asarray(layer, dtype=float) + 1) / n_layers


SCALES = {
    "excess": "excess over chance",
    "fraction_of_ceiling": "fraction of the seed-to-seed ceiling",
}
"""The scales a depth profile is read on: column value -> what a reader sees."""


def _on_scale(scores: pd.DataFrame, scale: str) -> pd.DataFrame:
    """The score table with `value`, `value_ci_low` and `value_ci_high` on `scale` (one of SCALES). An interval
    bound that is not finite (a ceiling whose own interval reaches zero) is unbounded on that side."""
    table = scores.copy()
    if scale == "excess":
        table[["value", "value_ci_low", "value_ci_high"]] = excess_over_chance(scores).to_numpy()
    elif scale == "fraction_of_ceiling":
        valid = (table["ceiling_valid"].astype(bool) if "ceiling_valid" in table
                 else pd.Series(True, index=table.index))
        for column, source in (("value", "normalized"), ("value_ci_low", "normalized_ci_low"),
                               ("value_ci_high", "normalized_ci_high")):
            table[column] = table[source].where(valid)
        table["value_ci_low"] = table["value_ci_low"].fillna(-np.inf)
        table["value_ci_high"] = table["value_ci_high"].fillna(np.inf)
    else:
        raise ValueError(f"depth scale {scale!r} is not one of {sorted(SCALES)}")
    return table


def depth_profile(scores: pd.DataFrame, n_layers_a: int, n_layers_b: int, scale: str = "excess") -> pd.DataFrame:
    """Per (metric, layer of A): the layer of B with the largest score on `scale`, and its look-alikes.

    `scores` is a pair's long score table (layer_a, layer_b, metric, observed,
    ci_low, ci_high, null_mean, p_adjusted; normalized and its interval for the
    fraction of the ceiling). Columns: scale, relative_depth_a, best_layer_b,
    best_relative_depth_b, best_value (with best_ci_low/high), best_significant
    (p_adjusted < 0.05), and plausible_low/high_relative_depth_b: the shallowest
    and deepest layer of B whose interval reaches the best one's lower bound, so
    cannot be told from it at this sample size. Layers of A with no finite score
    on the scale (no valid ceiling) are left out.
    """
    table = _on_scale(scores, scale)
    rows = []
    for (metric, layer_a), cells in table.groupby(["metric", "layer_a"], sort=True):
        cells = cells[np.isfinite(cells["value"])]
        if cells.empty:
            continue
        best = cells.loc[cells["value"].idxmax()]
        plausible = cells[cells["value_ci_high"] >= best["value_ci_low"]]
        depths = relative_depth(plausible["layer_b"], n_layers_b)
        rows.append({"scale": scale, "metric": metric, "layer_a": int(layer_a),
                     "relative_depth_a": float(relative_depth(layer_a, n_layers_a)),
                     "best_layer_b": int(best["layer_b"]),
                     "best_relative_depth_b": float(relative_depth(best["layer_b"], n_layers_b)),
                     "best_value": float(best["value"]), "best_ci_low": float(best["value_ci_low"]),
                     "best_ci_high": float(best["value_ci_high"]),
                     "best_significant": bool(best.get("p_adjusted", np.nan) < 0.05),
                     "plausible_layers_b": len(plausible),
                     "plausible_low_relative_depth_b": float(depths.min()),
                     "plausible_high_relative_depth_b": float(depths.max())})
    return pd.DataFrame(rows)


def _ranks(values: np.ndarray) -> np.ndarray:
    return pd.Series(values).rank(method="average").to_numpy()


def _rank_correlation(x_ranks: np.ndarray, y_ranks: np.ndarray) -> float:
    x, y = x_ranks - x_ranks.mean(), y_ranks - y_ranks.mean()
    denominator = np.sqrt((x ** 2).sum() * (y ** 2).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def depth_trend(profile: pd.DataFrame, draws: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """Per scale and metric: does the best layer of B go deeper as A's layer does?

    spearman: rank correlation of A's relative depth with the best layer of B's
    (ties averaged); p_one_sided: the share of orderings of A's layers whose
    correlation is at least as large (every ordering up to EXACT_ORDERINGS
    layers, else `draws` random ones and the observed one); mean_abs_offset: the
    mean |best depth of B - depth of A|, 0 when the best layer sits at the same
    relative depth; n_layers_a. A metric whose best layer never changes has no
    trend to test (spearman NaN, p 1).
    """
    rows = []
    for (scale, metric), cells in profile.groupby(["scale", "metric"], sort=False):
        cells = cells.sort_values("layer_a")
        depth_a, best_b = cells["relative_depth_a"].to_numpy(), cells["best_relative_depth_b"].to_numpy()
        x, y = _ranks(depth_a), _ranks(best_b)
        rho = _rank_correlation(x, y)
        if not np.isfinite(rho):
            p = 1.0
        elif len(x) <= EXACT_ORDERINGS:
            orderings = np.array(list(itertools.permutations(x)))
            null = np.array([_rank_correlation(ordering, y) for ordering in orderings])
            p = float(np.mean(null >= rho - 1e-12))
        else:
            rng = np.random.default_rng(seed)
            null = np.array([_rank_correlation(rng.permutation(x), y) for _ in range(draws)])
            p = float((1 + np.sum(null >= rho - 1e-12)) / (draws + 1))
        rows.append({"scale": scale, "metric": metric, "n_layers_a": len(x), "spearman": rho, "p_one_sided": p,
                     "mean_abs_offset": float(np.mean(np.abs(best_b - depth_a)))})
    trend = pd.DataFrame(rows)
    if not trend.empty:
        trend["p_adjusted"] = trend.groupby("scale", sort=False)["p_one_sided"].transform(
            lambda p: adjust_p_values(p.to_numpy(), "holm"))
    return trend


def _edges(depths: np.ndarray) -> np.ndarray:
    """Cell edges halfway between sorted depths, the outer ones half a step out (clipped to 0 and 1)."""
    if len(depths) == 1:
        return np.array([max(0.0, depths[0] - 0.05), min(1.0, depths[0] + 0.05)])
    middles = (depths[1:] + depths[:-1]) / 2
    first, last = depths[0] - (middles[0] - depths[0]), depths[-1] + (depths[-1] - middles[-1])
    return np.clip(np.concatenate([[first], middles, [last]]), 0.0, 1.0)


def depth_figure(scores: pd.DataFrame, profile: pd.DataFrame, names: tuple[str, str], n_layers: tuple[int, int],
                 out_path: str | Path) -> None:
    """One row per scale in `profile`, one panel per metric: the score of every layer pair on relative-depth
    axes (own colour scale per panel, x on cells not significant), each layer of A's best layer of B (dot) and
    the range of B's layers that cannot be told from it (bar), and the diagonal of equal relative depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = list(dict.fromkeys(profile["scale"]))
    metrics = list(dict.fromkeys(scores["metric"]))
    figure, axes = plt.subplots(len(scales), len(metrics), figsize=(3.3 * len(metrics), 3.4 * len(scales)),
                                squeeze=False)
    layers_a, layers_b = sorted(set(scores["layer_a"])), sorted(set(scores["layer_b"]))
    depth_a, depth_b = relative_depth(layers_a, n_layers[0]), relative_depth(layers_b, n_layers[1])
    for row, scale in zip(axes, scales):
        table = _on_scale(scores, scale)
        for axis, metric in zip(row, metrics):
            _depth_panel(figure, axis, table[table["metric"] == metric],
                         profile[(profile["scale"] == scale) & (profile["metric"] == metric)],
                         (layers_a, layers_b), (depth_a, depth_b), n_layers)
            axis.set_xlabel(f"relative depth of {names[0]}", fontsize=8)
            axis.set_ylabel(f"relative depth of {names[1]}", fontsize=8)
            axis.set_title(f"{metric}: {SCALES[scale]}", fontsize=8)
    figure.suptitle(f"{names[0]} vs {names[1]} over depth (x: not significant); red: most similar layer of B per "
                    "layer of A, bar: layers not distinguishable from it", fontsize=8)
    figure.tight_layout()
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def _depth_panel(figure, axis, table: pd.DataFrame, best: pd.DataFrame, layers, depths, n_layers) -> None:
    """One metric on one scale: the grid of values, the not-significant cells, the best layers and the diagonal."""
    (layers_a, layers_b), (depth_a, depth_b) = layers, depths
    cells = table.set_index(["layer_a", "layer_b"])
    grid = np.array([[cells["value"].get((la, lb), np.nan) for la in layers_a] for lb in layers_b])
    mesh = axis.pcolormesh(_edges(depth_a), _edges(depth_b), grid, cmap="viridis", shading="flat")
    figure.colorbar(mesh, ax=axis, fraction=0.046, pad=0.04)
    if "p_adjusted" in cells:
        for (la, lb), p in cells["p_adjusted"].items():
            if not p < 0.05:
                axis.plot(relative_depth(la, n_layers[0]), relative_depth(lb, n_layers[1]), "x", color="white",
                          markersize=4)
    axis.plot([0, 1], [0, 1], linestyle="--", color="white", linewidth=0.8)
    axis.vlines(best["relative_depth_a"], best["plausible_low_relative_depth_b"],
                best["plausible_high_relative_depth_b"], color="tab:red", linewidth=2, alpha=0.7)
    axis.plot(best["relative_depth_a"], best["best_relative_depth_b"], "o", color="tab:red", markersize=4)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.tick_params(labelsize=7)


def write_depth(score_path: str | Path, manifest_a: str | Path, manifest_b: str | Path, out_profile: str | Path,
                out_trend: str | Path, out_figure: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A pair's depth profile, trend and figure on every scale of SCALES (the fraction of the ceiling where the
    score table has it) from its score table and the two models' manifests."""
    scores = pd.read_csv(score_path, sep="\t")
    n_layers = tuple(int(json.loads(Path(path).read_text())["n_layers"]) for path in (manifest_a, manifest_b))
    names = (str(scores["model_a"].iloc[0]), str(scores["model_b"].iloc[0]))
    scales = [scale for scale in SCALES if scale == "excess" or "normalized" in scores]
    profile = pd.concat([depth_profile(scores, *n_layers, scale=scale) for scale in scales], ignore_index=True)
    trend = depth_trend(profile)
    trend.insert(0, "model_a", names[0])
    trend.insert(1, "model_b", names[1])
    profile.insert(0, "model_a", names[0])
    profile.insert(1, "model_b", names[1])
    write_tsv(profile, out_profile)
    write_tsv(trend, out_trend)
    depth_figure(scores, profile, names, n_layers, out_figure)
    return profile, trend
