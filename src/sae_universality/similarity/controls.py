"""The controls' tables of a model pair: the full result beside what is left once token identity or the
document is taken out (matching/controls.py computes them per layer pair).

Two tables per pair:
- `controls.tsv`: per layer pair and control (full, context_only, context_only_bigram,
  document_demeaned, document_shifted), the full kept pairs' mean correlation on the
  controlled codes, the fraction still at or above the threshold, and the pairs
  kept when the controlled codes are matched again;
- `context_only_scores.tsv`: every metric on the pairs matched in the context-only
  codes, with its null, interval and p adjusted across the layer pairs (as the full
  scores are), beside the full score of the same layer pair and the share of the
  full excess that survives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import write_tsv
from ..settings import SimilaritySettings, as_settings
from .stage import with_adjusted_p

LAYER_PAIR = ["model_a", "model_b", "layer_a", "layer_b"]
FULL_COLUMNS = ["observed", "ci_low", "ci_high", "null_mean", "excess", "p_adjusted", "n_pairs"]


def context_only_scores(context_only: pd.DataFrame, full: pd.DataFrame, settings: SimilaritySettings) -> pd.DataFrame:
    """The context-only scores (one row per layer pair and metric) with p adjusted across the layer pairs,
    `significant`, the full scores as `full_*` columns, and `excess_surviving` = context-only excess / full
    excess (NaN where the full excess is not positive)."""
    settings = as_settings(SimilaritySettings, settings)
    table = context_only.copy()
    if len(table):
        table = with_adjusted_p(table, settings.p_adjust, ["metric"])
        table["significant"] = table["p_adjusted"] < settings.significance
    full_columns = full[[*LAYER_PAIR, "metric", *FULL_COLUMNS]].rename(
        columns={column: f"full_{column}" for column in FULL_COLUMNS})
    table = table.merge(full_columns, on=[*LAYER_PAIR, "metric"], how="left")
    full_excess = table["full_excess"].astype(float)
    table["excess_surviving"] = np.where(full_excess > 0, table["excess"].astype(float) / full_excess, np.nan)
    return table


def control_tables(control_files: list, context_only_files: list, full_scores: str | Path,
                   settings: SimilaritySettings, out_controls: str | Path,
                   out_context_only: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collect a pair's per-layer-pair control summaries and context-only scores into its two tables."""
    controls = pd.concat([pd.read_csv(path, sep="\t") for path in control_files], ignore_index=True)
    context_only = pd.concat([pd.read_csv(path, sep="\t") for path in context_only_files], ignore_index=True)
    scores = context_only_scores(context_only, pd.read_csv(full_scores, sep="\t"), settings)
    write_tsv(controls, out_controls)
    write_tsv(scores, out_context_only)
    return controls, scores
