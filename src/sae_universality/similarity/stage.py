"""The similarity stage of the workflow: matched pairs -> scores with nulls and controls.

Per (pair, layer_a, layer_b) the decoder rows of the kept pairs,
`X = W_dec_A[final_a]` and `Y = W_dec_B[feature_b]`, are compared with every
metric against the pairing null (row shuffles), next to the paper's
random-subset baseline. The ceiling control is the same computation for two
SAEs of one model and layer trained from different seeds. Semantic subspaces
rematch features within keyword categories and score each category the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..io import write_tsv
from ..settings import SimilaritySettings, as_settings

SCORE_COLUMNS = ["metric", "observed", "ci_low", "ci_high", "null_mean", "null_std", "excess", "z", "p",
                 "n_pairs", "n_permutations", "random_subset_mean", "random_subset_std"]


def decoder_rows(sae_dir: str | Path) -> np.ndarray:
    """W_dec (d_sae, d_in) of a saved SAE, float64; a decoder with NaN or infinite values is a damaged SAE."""
    from safetensors.numpy import load_file

    from ..io import read_checked

    path = Path(sae_dir) / "sae_weights.safetensors"
    rows = read_checked(path, lambda path: load_file(str(path))["W_dec"]).astype(np.float64)
    if not np.isfinite(rows).all():
        raise UserError(f"{path}: the decoder holds NaN or infinite values; retrain the SAE "
                        "(delete its folder and rerun) or replace the pretrained file")
    return rows


def metric_options(settings: SimilaritySettings, n_pairs: int, width: int | None = None) -> dict:
    """Keyword options of the configured metrics, only those some configured metric accepts.

    `width`: the smaller model width of the two sides, which bounds SVCCA's components as n_pairs does.
    """
    from ..similarity import METRICS

    components = settings.svcca_components
    if components is not None:
        # A small category cannot hold more components than it has pairs (or the models have dimensions).
        components = min(components, n_pairs, width or components)
    options = {
        "variance": settings.svcca_variance,
        "components": components,
        "folds": settings.svcca_folds,
        "fold_seed": settings.seed,
        # mutual_knn needs k < n: a small category gets as many neighbours as it has.
        "k": max(1, min(settings.knn_k, n_pairs - 1)),
    }
    accepted = {option for name in settings.metrics for option in METRICS[name].options}
    return {key: value for key, value in options.items() if key in accepted}


def score_pairs(W_dec_a, W_dec_b, feature_a, feature_b, settings: SimilaritySettings,
                random_subset: bool = True) -> pd.DataFrame:
    """Every metric on the paired decoder rows: observed with its interval, the permutation null,
    the excess over it, and the random-subset baseline.

    Returns one row per metric (SCORE_COLUMNS); all NaN when there are fewer
    than `settings.min_pairs` pairs.
    """
    from ..similarity import METRICS, bootstrap_interval, permutation_test, random_subset_baseline

    settings = as_settings(SimilaritySettings, settings)
    metrics = list(settings.metrics)
    n_pairs = len(feature_a)
    if n_pairs < settings.min_pairs:
        return pd.DataFrame({"metric": metrics, "n_pairs": n_pairs}, columns=SCORE_COLUMNS)
    X, Y = W_dec_a[np.asarray(feature_a)], W_dec_b[np.asarray(feature_b)]
    options = metric_options(settings, n_pairs, width=min(X.shape[1], Y.shape[1]))
    scores = permutation_test(X, Y, metrics=metrics, n_permutations=settings.n_permutations,
                              seed=settings.seed, **options)
    scores["excess"] = scores["observed"] - scores["null_mean"]
    intervals = [
        bootstrap_interval(row.metric, X, Y, draws=settings.bootstrap_draws, level=settings.bootstrap_level,
                           seed=settings.seed, observed=row.observed,
                           **{key: value for key, value in options.items() if key in METRICS[row.metric].options})
        for row in scores.itertuples()
    ]
    scores[["ci_low", "ci_high"]] = intervals
    if random_subset:
        # Zeroed rows (dead latents some published SAEs blank out) are no features to draw.
        W_dec_a, W_dec_b = W_dec_a[np.any(W_dec_a != 0, axis=1)], W_dec_b[np.any(W_dec_b != 0, axis=1)]
        baseline = random_subset_baseline(W_dec_a, W_dec_b, n=n_pairs, metrics=metrics,
                                          n_draws=settings.random_subset_draws, seed=settings.seed, **options)
        summary = baseline.groupby("metric")["value"].agg(["mean", "std"])
        scores["random_subset_mean"] = scores["metric"].map(summary["mean"])
        scores["random_subset_std"] = scores["metric"].map(summary["std"])
    return scores.reindex(columns=SCORE_COLUMNS)


def kept_pairs_of(matches_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_csv(matches_path, sep="\t", usecols=["feature_b", "final_a", "kept"])
    kept = table[table["kept"].astype(bool)]
    return kept["final_a"].to_numpy(), kept["feature_b"].to_numpy()


def score_layer_pair(matches_path, sae_a, sae_b, out_path, *, settings: SimilaritySettings, labels: dict,
                     at_most: int | None = None) -> pd.DataFrame:
    """Scores of one (pair, layer_a, layer_b) -> a long table (one row per metric).

    `at_most`: score a seeded random subset of that many kept pairs where there are
    more (the lexical floor keeps about twice the full result's pairs; scored on as
    many as the full result, the two compare like for like, and at the cost of one).
    """
    settings = as_settings(SimilaritySettings, settings)
    feature_a, feature_b = kept_pairs_of(matches_path)
    if at_most is not None and len(feature_a) > at_most:
        chosen = np.sort(np.random.default_rng(settings.seed).choice(len(feature_a), at_most, replace=False))
        feature_a, feature_b = feature_a[chosen], feature_b[chosen]
    scores = score_pairs(decoder_rows(sae_a), decoder_rows(sae_b), feature_a, feature_b, settings)
    scores = pd.concat([pd.DataFrame([labels] * len(scores)), scores], axis=1)
    write_tsv(scores, out_path)
    return scores


def with_adjusted_p(scores: pd.DataFrame, method: str, family: list[str]) -> pd.DataFrame:
    """`p_adjusted`: p adjusted (holm or bh) within each group of `family` columns (e.g. per metric)."""
    from ..similarity import adjust_p_values

    scores = scores.copy()
    scores["p_adjusted"] = np.nan
    for _, group in scores.groupby(family, sort=False):
        scores.loc[group.index, "p_adjusted"] = adjust_p_values(group["p"].to_numpy(dtype=float), method)
    return scores


def mean_over_seed_pairs(tables: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """One ceiling table from the tables of every pair of seeds of one model and layer.

    Numbers are averaged per `keys` (the metric, for scores); `seed_pairs` counts the
    pairs, and where a table has `observed` its spread over them is `seed_sd` (NaN
    for one pair), `observed_min` and `observed_max`. The seed-pair labels (sae_a,
    sae_b) are dropped. One pair passes through unchanged, with `seed_pairs` 1.
    """
    if not tables:
        raise ValueError("no seed-pair tables to combine")
    combined = pd.concat(tables, ignore_index=True).drop(columns=["sae_a", "sae_b"], errors="ignore")
    if len(tables) == 1:
        return combined.assign(seed_pairs=1)
    numeric = [column for column in combined.select_dtypes("number").columns if column not in keys]
    others = [column for column in combined.columns if column not in keys and column not in numeric]
    grouped = combined.groupby(keys, sort=False)
    result = grouped[numeric].mean().join(grouped[others].first()) if others else grouped[numeric].mean()
    result["seed_pairs"] = grouped.size()
    if "observed" in combined:
        result["seed_sd"] = grouped["observed"].std(ddof=1)
        result["observed_min"], result["observed_max"] = grouped["observed"].min(), grouped["observed"].max()
    return result.reset_index()[[*combined.columns, *[c for c in result.columns if c not in combined.columns]]]


def ceiling_standard_errors(ceilings: pd.DataFrame, level: float) -> np.ndarray:
    """Each seed-to-seed score's standard error: its interval's half-width over z, and where the table
    has `seed_sd` (the spread over seed pairs, see `combine_seed_pairs`) that spread over the square root
    of `seed_pairs` added in quadrature. 0 where the table has no interval."""
    from ..similarity.baselines import standard_normal_quantile

    if not {"ci_low", "ci_high"} <= set(ceilings.columns):
        return np.zeros(len(ceilings))
    width = (ceilings["ci_high"].to_numpy(dtype=float) - ceilings["ci_low"].to_numpy(dtype=float))
    variance = np.square(np.nan_to_num(width) / (2 * standard_normal_quantile(level)))
    if {"seed_sd", "seed_pairs"} <= set(ceilings.columns):
        spread = np.nan_to_num(ceilings["seed_sd"].to_numpy(dtype=float))
        variance = variance + np.square(spread) / np.maximum(ceilings["seed_pairs"].to_numpy(dtype=float), 1)
    return np.sqrt(variance)


def ceilings_of(scores: pd.DataFrame, ceilings: pd.DataFrame, significance: float, level: float = 0.95) -> pd.DataFrame:
    """Per row of `scores`, its ceiling: the mean of the two layers' seed-to-seed scores and null means,
    the standard error of that mean (the two models' SAEs are independent), the larger of their
    p-values, and whether that ceiling is above chance (every contributing ceiling's p < significance
    and the mean excess positive)."""
    standard_errors = ceiling_standard_errors(ceilings, level)
    found_of = {(row.model, int(row.layer), row.metric): (row.observed, row.null_mean, row.p, se)
                for row, se in zip(ceilings.itertuples(), standard_errors)}
    rows = []
    for row in scores.itertuples():
        found = [found_of.get((row.model_a, int(row.layer_a), row.metric)),
                 found_of.get((row.model_b, int(row.layer_b), row.metric))]
        found = [values for values in found if values is not None and np.isfinite(values).all()]
        if not found:
            rows.append((np.nan, np.nan, np.nan, np.nan, False))
            continue
        observed, null_mean, _, _ = np.mean(found, axis=0)
        standard_error = float(np.sqrt(sum(values[3] ** 2 for values in found)) / len(found))
        p = max(values[2] for values in found)
        rows.append((observed, null_mean, standard_error, p, bool(p < significance and observed > null_mean)))
    return pd.DataFrame(rows, columns=["ceiling", "ceiling_null_mean", "ceiling_se", "ceiling_p", "ceiling_valid"],
                        index=scores.index)


def with_normalized(scores: pd.DataFrame, significance: float, level: float = 0.95) -> pd.DataFrame:
    """Normalized score and its interval where the ceiling is above chance; elsewhere empty, with the reason.

    normalized = (observed - null mean) / (ceiling - ceiling's null mean). Its interval
    carries both uncertainties: Fieller's interval for the ratio (`ratio_interval`),
    the excess's standard errors read from the score's own interval (each side
    apart) and the ceiling's from `ceiling_se`. With no ceiling uncertainty it is the
    score's interval mapped the same way. `normalized_note` says why a cell has none.
    """
    from ..similarity.baselines import normalized_score, ratio_interval, standard_normal_quantile

    scores = scores.copy()
    valid = scores["ceiling_valid"].astype(bool).to_numpy()
    observed, null_mean = scores["observed"].to_numpy(dtype=float), scores["null_mean"].to_numpy(dtype=float)
    ceiling, ceiling_null = scores["ceiling"].to_numpy(dtype=float), scores["ceiling_null_mean"].to_numpy(dtype=float)
    z = standard_normal_quantile(level)
    low, high = ratio_interval(
        observed - null_mean, (observed - scores["ci_low"].to_numpy(dtype=float)) / z,
        (scores["ci_high"].to_numpy(dtype=float) - observed) / z, ceiling - ceiling_null,
        np.nan_to_num(scores["ceiling_se"].to_numpy(dtype=float)) if "ceiling_se" in scores else 0.0, level)
    scores["normalized"] = np.where(valid, normalized_score(observed, null_mean, ceiling, ceiling_null), np.nan)
    scores["normalized_ci_low"] = np.where(valid, low, np.nan)
    scores["normalized_ci_high"] = np.where(valid, high, np.nan)
    notes = []
    for row in scores.itertuples():
        if not np.isfinite(row.observed):
            notes.append("cell not scored (too few pairs)")
        elif not np.isfinite(row.ceiling):
            notes.append("no ceiling (one SAE seed)")
        elif not row.ceiling_valid:
            notes.append(f"ceiling not above chance (p={row.ceiling_p:.3g} >= {significance:g})"
                         if row.ceiling_p >= significance else "ceiling below its null")
        elif not np.isfinite(row.normalized_ci_low):
            notes.append("interval unbounded: the ceiling's own interval reaches its chance level")
        else:
            notes.append("")
    scores["normalized_note"] = notes
    return scores


CEILING_COLUMNS = ["ceiling", "ceiling_null_mean", "ceiling_se", "ceiling_p", "ceiling_valid", "normalized",
                   "normalized_ci_low", "normalized_ci_high", "normalized_note"]
"""What `with_ceiling` adds to a score table."""


def with_ceiling(scores: pd.DataFrame, ceilings: pd.DataFrame | None, significance: float,
                 level: float = 0.95) -> pd.DataFrame:
    """`scores` with their ceiling (`ceilings_of`) and the fraction of it (`with_normalized`), computed anew:
    any CEILING_COLUMNS the table had are replaced. `ceilings` None: there is none (one seed)."""
    if ceilings is None:
        ceilings = pd.DataFrame(columns=["model", "layer", "metric", "observed", "null_mean", "p"])
    scores = scores.drop(columns=[column for column in CEILING_COLUMNS if column in scores])
    scores = pd.concat([scores, ceilings_of(scores, ceilings, significance, level)], axis=1)
    return with_normalized(scores, significance, level)


WIDE_VALUES = ["observed", "ci_low", "ci_high", "null_mean", "excess", "z", "p", "p_adjusted", "normalized",
               "normalized_ci_low", "normalized_ci_high", "normalized_note", "random_subset_mean"]


def pair_table(score_files: list, ceiling_files: list, out_wide: str | Path, out_long: str | Path,
               settings: SimilaritySettings) -> pd.DataFrame:
    """One row per (layer_a, layer_b) of a pair: every metric with its interval, null, excess, z, raw and
    adjusted p, and the normalized score where the ceiling is above chance.

    p is adjusted per metric across the layer pairs of the table (settings.p_adjust).
    The ceiling of a (layer_a, layer_b) cell is the mean of the two SAEs' own
    seed-to-seed scores ((A, layer_a) and (B, layer_b)) where they exist, with
    the mean of their own null means as its chance level (see normalized_score).
    """
    settings = as_settings(SimilaritySettings, settings)
    significance = settings.significance
    scores = pd.concat([pd.read_csv(path, sep="\t") for path in score_files], ignore_index=True)
    ceilings = (pd.concat([pd.read_csv(path, sep="\t") for path in ceiling_files], ignore_index=True)
                if ceiling_files else None)
    scores = with_adjusted_p(scores, settings.p_adjust, ["metric"])
    scores = with_ceiling(scores, ceilings, significance, settings.bootstrap_level)
    scores["significant"] = scores["p_adjusted"] < significance
    keys = ["model_a", "model_b", "layer_a", "layer_b"]
    wide = scores.pivot_table(index=keys, columns="metric", values=WIDE_VALUES, aggfunc="first", dropna=False)
    metrics = list(dict.fromkeys(scores["metric"]))
    wide = wide[[(value, metric) for metric in metrics for value in WIDE_VALUES]]
    wide.columns = [f"{metric}_{value}" for value, metric in wide.columns]
    wide = wide.reset_index()
    counts = scores.groupby(keys)["n_pairs"].first().reset_index()
    wide = counts.merge(wide, on=keys)
    write_tsv(wide, out_wide)
    write_tsv(scores, out_long)
    return scores


def tidy_scores(score_tables: list, semantic_tables: list, out_path: str | Path) -> pd.DataFrame:
    """Every pair's scores and semantic scores in one long table; `category` is 'all' for the whole match."""
    frames = [pd.read_csv(path, sep="\t").assign(category="all") for path in score_tables]
    frames += [pd.read_csv(path, sep="\t") for path in semantic_tables]
    table = pd.concat([frame for frame in frames if len(frame)], ignore_index=True)
    first = ["model_a", "model_b", "layer_a", "layer_b", "category", "metric"]
    table = table[first + [column for column in table.columns if column not in first]]
    write_tsv(table, out_path)
    return table


