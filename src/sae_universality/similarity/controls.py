"""The controls' tables of a model pair: the full result beside what is left once token identity or the
document is taken out (matching/controls.py computes them per layer pair).

Three tables per pair:
- `controls.tsv`: per layer pair and control (full, context_only, context_only_bigram,
  document_demeaned, document_shifted), the full kept pairs' mean correlation on the
  controlled codes, the fraction still at or above the threshold, and the pairs
  kept when the controlled codes are matched again;
- `context_only_scores.tsv`: every metric on the pairs matched in the context-only
  codes, with its null, interval and p adjusted across the layer pairs (as the full
  scores are), beside the full score of the same layer pair and the share of the
  full excess that survives;
- `untrained_scores.tsv`: the same for untrained dictionaries of the SAEs' width and k
  in place of the SAEs (what SAE training adds); `controls.tsv` has their matching
  counts as the control `untrained_dictionary`;
- `lexical_scores.tsv`: the same for the lexical floor, each model's activations
  replaced by their per-token means and encoded by the same SAEs (what token identity
  alone gives, matching/lexical.py); `controls.tsv` has its counts as `lexical_floor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import write_tsv
from ..settings import SimilaritySettings, as_settings
from .stage import with_adjusted_p, with_ceiling

LAYER_PAIR = ["model_a", "model_b", "layer_a", "layer_b"]
FULL_COLUMNS = ["observed", "ci_low", "ci_high", "null_mean", "excess", "p_adjusted", "n_pairs"]


def beside_full(variant: pd.DataFrame, full: pd.DataFrame, settings: SimilaritySettings) -> pd.DataFrame:
    """A variant's scores (context-only codes, untrained dictionaries; one row per layer pair and metric) with p
    adjusted across the layer pairs, `significant`, the full scores as `full_*` columns, and `excess_surviving`
    = the variant's excess / the full excess (NaN where the full excess is not positive)."""
    settings = as_settings(SimilaritySettings, settings)
    table = variant.copy()
    if len(table):
        table = with_adjusted_p(table, settings.p_adjust, ["metric"])
        table["significant"] = table["p_adjusted"] < settings.significance
    full_columns = full[[*LAYER_PAIR, "metric", *FULL_COLUMNS]].rename(
        columns={column: f"full_{column}" for column in FULL_COLUMNS})
    table = table.merge(full_columns, on=[*LAYER_PAIR, "metric"], how="left")
    full_excess = table["full_excess"].astype(float)
    table["excess_surviving"] = np.where(full_excess > 0, table["excess"].astype(float) / full_excess, np.nan)
    return table


@dataclass(frozen=True)
class ControlInputs:
    """The per-layer-pair files a pair's control tables collect."""

    controls: list
    """Matching's control summaries (matching/stage.py, CONTROL_COLUMNS)."""
    context_only: list
    """Scores of the pairs matched in the context-only codes."""
    untrained_summaries: list
    """Matching summaries of the untrained dictionaries."""
    untrained: list
    """Scores of the pairs the untrained dictionaries keep."""
    lexical_summaries: list
    """Matching summaries of the lexical floor."""
    lexical: list
    """Scores of the pairs the lexical floor keeps."""
    full_scores: str | Path
    """The pair's long score table (scores.tsv), with its adjusted p."""
    context_only_ceilings: list = ()
    """The seed-to-seed ceilings of the context-only codes, per model and layer (none: no fraction of it)."""


BASELINES = {
    "untrained_dictionary": "an untrained dictionary of the same width and k in place of each SAE",
    "lexical_floor": "each model's activations replaced by their per-token means, encoded by the same SAEs",
}
"""The baselines matched afresh in place of the real codes: control name -> what it is, in a phrase."""


def baseline_rows(summaries: pd.DataFrame, control: str) -> pd.DataFrame:
    """Control rows (`control`, one of BASELINES) from a baseline's matching summaries: the pairs it keeps."""
    return pd.DataFrame({**{column: summaries[column] for column in LAYER_PAIR},
                         "control": control, "n_kept_full": np.nan,
                         "kept_full_mean_correlation": np.nan, "kept_full_above_threshold": np.nan,
                         "n_kept_rematched": summaries["n_after_threshold"],
                         "rematched_mean_correlation": summaries["mean_correlation_kept"],
                         "what": BASELINES[control]})


def control_tables(inputs: ControlInputs, settings: SimilaritySettings, outputs: dict) -> dict[str, pd.DataFrame]:
    """Collect a pair's per-layer-pair controls into its tables: controls (with a row per layer pair for each
    baseline), and the context-only, untrained-dictionary and lexical-floor scores beside the full.
    `outputs` maps controls, context_only, untrained and lexical to their paths."""
    def read(paths):
        return pd.concat([pd.read_csv(path, sep="\t") for path in paths], ignore_index=True)

    settings = as_settings(SimilaritySettings, settings)
    full = pd.read_csv(inputs.full_scores, sep="\t")
    controls = pd.concat([read(inputs.controls),
                          baseline_rows(read(inputs.untrained_summaries), "untrained_dictionary"),
                          baseline_rows(read(inputs.lexical_summaries), "lexical_floor")], ignore_index=True)
    controls = controls.sort_values(LAYER_PAIR, kind="stable").reset_index(drop=True)
    context_only = beside_full(read(inputs.context_only), full, settings)
    if len(context_only):
        # Against the context-only codes' own ceiling: two seeds' context-only codes matched and scored alike.
        context_only = with_ceiling(context_only, read(inputs.context_only_ceilings) if inputs.context_only_ceilings
                                    else None, settings.significance, settings.bootstrap_level)
    tables = {"controls": controls, "context_only": context_only,
              "untrained": beside_full(read(inputs.untrained), full, settings),
              "lexical": beside_full(read(inputs.lexical), full, settings)}
    for name, table in tables.items():
        write_tsv(table, outputs[name])
    return tables
