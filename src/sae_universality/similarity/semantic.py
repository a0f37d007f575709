"""Semantic subspaces scored (METHOD.md section 8): do features about the same topic match across models?

`matching.categories` rematches the features within each keyword category; here
the kept pairs of each category are scored like a whole layer pair
(`similarity.stage.score_pairs`), without the random-subset baseline, and every
layer pair's scores are collected into one table with p adjusted across them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import write_tsv
from ..settings import SimilaritySettings, as_settings
from .stage import SCORE_COLUMNS, decoder_rows, score_pairs, with_adjusted_p


def score_semantic(semantic_path, sae_a, sae_b, out_path, *, settings: SimilaritySettings, labels: dict) -> pd.DataFrame:
    """Scores per semantic category (rematched pairs) -> a long table; small categories are marked skipped."""
    settings = as_settings(SimilaritySettings, settings)
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
        scores["skipped"] = len(kept) < settings.min_pairs
        frames.append(scores)
    columns = ["category", *SCORE_COLUMNS, "n_features_a", "n_features_b", "skipped"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    table = pd.concat([pd.DataFrame([labels] * len(table)), table.reset_index(drop=True)], axis=1)
    write_tsv(table, out_path)
    return table


def semantic_table(semantic_files: list, out_path: str | Path, settings: SimilaritySettings) -> pd.DataFrame:
    """Every layer pair's semantic scores in one table, p adjusted per metric across all scored
    (layer pair, category) cells."""
    settings = as_settings(SimilaritySettings, settings)
    table = pd.concat([pd.read_csv(path, sep="\t") for path in semantic_files], ignore_index=True)
    if len(table):
        table = with_adjusted_p(table, settings.p_adjust, ["metric"])
        table["significant"] = table["p_adjusted"] < settings.significance
    write_tsv(table, out_path)
    return table
