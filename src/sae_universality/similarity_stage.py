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

from .io import atomic_path

SCORE_COLUMNS = ["metric", "observed", "null_mean", "null_std", "z", "p", "n_pairs", "n_permutations",
                 "random_subset_mean", "random_subset_std"]


def decoder_rows(sae_dir: str | Path) -> np.ndarray:
    """W_dec (d_sae, d_in) of a saved SAE, float64."""
    from safetensors.numpy import load_file

    return load_file(str(Path(sae_dir) / "sae_weights.safetensors"))["W_dec"].astype(np.float64)


def metric_options(settings: dict, n_pairs: int) -> dict:
    # mutual_knn needs k < n: a small category gets as many neighbours as it has.
    options = {"variance": settings["svcca_variance"], "k": max(1, min(settings["knn_k"], n_pairs - 1))}
    if settings["svcca_components"] is not None:
        options["components"] = settings["svcca_components"]
    return options


def score_pairs(W_dec_a, W_dec_b, feature_a, feature_b, settings: dict, random_subset: bool = True) -> pd.DataFrame:
    """Every metric on the paired decoder rows, with the permutation null and the random-subset baseline.

    Returns one row per metric (SCORE_COLUMNS); all NaN when there are fewer
    than `settings['min_pairs']` pairs.
    """
    from .similarity import permutation_test, random_subset_baseline

    metrics = settings["metrics"]
    n_pairs = len(feature_a)
    if n_pairs < settings["min_pairs"]:
        return pd.DataFrame({"metric": metrics, "n_pairs": n_pairs}, columns=SCORE_COLUMNS)
    X, Y = W_dec_a[np.asarray(feature_a)], W_dec_b[np.asarray(feature_b)]
    options = metric_options(settings, n_pairs)
    scores = permutation_test(X, Y, metrics=metrics, n_permutations=settings["n_permutations"],
                              seed=settings["seed"], **options)
    if random_subset:
        baseline = random_subset_baseline(W_dec_a, W_dec_b, n=n_pairs, metrics=metrics,
                                          n_draws=settings["random_subset_draws"], seed=settings["seed"], **options)
        summary = baseline.groupby("metric")["value"].agg(["mean", "std"])
        scores["random_subset_mean"] = scores["metric"].map(summary["mean"])
        scores["random_subset_std"] = scores["metric"].map(summary["std"])
    return scores.reindex(columns=SCORE_COLUMNS)


def kept_pairs_of(matches_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_csv(matches_path, sep="\t", usecols=["feature_b", "final_a", "kept"])
    kept = table[table["kept"].astype(bool)]
    return kept["final_a"].to_numpy(), kept["feature_b"].to_numpy()


def score_layer_pair(matches_path, sae_a, sae_b, out_path, *, settings: dict, labels: dict) -> pd.DataFrame:
    """Scores of one (pair, layer_a, layer_b) -> a long table (one row per metric)."""
    feature_a, feature_b = kept_pairs_of(matches_path)
    scores = score_pairs(decoder_rows(sae_a), decoder_rows(sae_b), feature_a, feature_b, settings)
    scores = pd.concat([pd.DataFrame([labels] * len(scores)), scores], axis=1)
    _write_tsv(scores, out_path)
    return scores


def score_semantic(semantic_path, sae_a, sae_b, out_path, *, settings: dict, labels: dict) -> pd.DataFrame:
    """Scores per semantic category (rematched pairs) -> a long table; small categories are marked skipped."""
    pairs = pd.read_csv(semantic_path, sep="\t")
    W_dec_a, W_dec_b = decoder_rows(sae_a), decoder_rows(sae_b)
    frames = []
    for category, group in pairs.groupby("category", sort=True):
        kept = group[group["kept"].astype(bool)]
        scores = score_pairs(W_dec_a, W_dec_b, kept["feature_a"].to_numpy(), kept["feature_b"].to_numpy(),
                             settings, random_subset=False)
        scores.insert(0, "category", category)
        scores["n_features_a"] = int(group["n_features_a"].iloc[0])
        scores["n_features_b"] = int(group["n_features_b"].iloc[0])
        scores["skipped"] = len(kept) < settings["min_pairs"]
        frames.append(scores)
    columns = ["category", *SCORE_COLUMNS, "n_features_a", "n_features_b", "skipped"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    table = pd.concat([pd.DataFrame([labels] * len(table)), table.reset_index(drop=True)], axis=1)
    _write_tsv(table, out_path)
    return table


def pair_table(score_files: list, ceiling_files: list, out_wide: str | Path, out_long: str | Path) -> pd.DataFrame:
    """One row per (layer_a, layer_b) of a pair: every metric with null mean, p and the normalized score.

    The ceiling of a (layer_a, layer_b) cell is the mean of the two SAEs' own
    seed-to-seed scores ((A, layer_a) and (B, layer_b)) where they exist, with
    the mean of their own null means as its chance level (see normalized_score).
    """
    from .similarity import normalized_score

    scores = pd.concat([pd.read_csv(path, sep="\t") for path in score_files], ignore_index=True)
    ceilings = (pd.concat([pd.read_csv(path, sep="\t") for path in ceiling_files], ignore_index=True)
                if ceiling_files else pd.DataFrame(columns=["model", "layer", "metric", "observed", "null_mean"]))
    ceiling_of = {(row.model, int(row.layer), row.metric): (row.observed, row.null_mean) for row in ceilings.itertuples()}

    def ceiling(row) -> tuple[float, float]:
        found = [ceiling_of.get((row.model_a, int(row.layer_a), row.metric)),
                 ceiling_of.get((row.model_b, int(row.layer_b), row.metric))]
        found = [pair for pair in found if pair is not None and np.isfinite(pair).all()]
        return tuple(np.mean(found, axis=0)) if found else (np.nan, np.nan)

    scores[["ceiling", "ceiling_null_mean"]] = [ceiling(row) for row in scores.itertuples()]
    scores["normalized"] = normalized_score(scores["observed"].to_numpy(), scores["null_mean"].to_numpy(),
                                            scores["ceiling"].to_numpy(), scores["ceiling_null_mean"].to_numpy())
    keys = ["model_a", "model_b", "layer_a", "layer_b"]
    wide = scores.pivot_table(index=keys, columns="metric",
                              values=["observed", "null_mean", "p", "normalized", "random_subset_mean"],
                              aggfunc="first", dropna=False)
    wide.columns = [f"{metric}_{value}" for value, metric in wide.columns]
    wide = wide.reset_index()
    counts = scores.groupby(keys)["n_pairs"].first().reset_index()
    wide = counts.merge(wide, on=keys)
    _write_tsv(wide, out_wide)
    _write_tsv(scores, out_long)
    return scores


def tidy_scores(score_tables: list, semantic_tables: list, out_path: str | Path) -> pd.DataFrame:
    """Every pair's scores and semantic scores in one long table; `category` is 'all' for the whole match."""
    frames = [pd.read_csv(path, sep="\t").assign(category="all") for path in score_tables]
    frames += [pd.read_csv(path, sep="\t") for path in semantic_tables]
    table = pd.concat([frame for frame in frames if len(frame)], ignore_index=True)
    first = ["model_a", "model_b", "layer_a", "layer_b", "category", "metric"]
    table = table[first + [column for column in table.columns if column not in first]]
    _write_tsv(table, out_path)
    return table


def _write_tsv(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path, suffix=".tsv") as temporary:
        table.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
