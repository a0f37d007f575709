"""The match table: best pairs, then the filters in order (non-concept -> one-to-one -> threshold)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..settings import MatchSettings
from .correlation import BestMatches, best_matches, best_matches_from_correlation
from .filters import _TokenJudge
from .rules import ManyToOnePairs, one_to_one_rule

# ---------------------------------------------------------------------------
# Match table
# ---------------------------------------------------------------------------



def match_table(
    matches: BestMatches,
    *,
    top_tokens_a: Sequence | Mapping | None = None,
    top_tokens_b: Sequence | Mapping | None = None,
    settings: MatchSettings | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """The match table of `match_features` from precomputed `BestMatches`."""
    settings = with_overrides(settings, overrides)
    junk_filter, shared_token_filter = settings.junk_filter, settings.shared_token_filter
    one_to_one, threshold = settings.one_to_one_rule, settings.threshold
    rule = one_to_one_rule(one_to_one)
    n_top_tokens, junk_fraction = settings.n_top_tokens, settings.junk_fraction
    if (junk_filter or shared_token_filter) and (top_tokens_a is None or top_tokens_b is None):
        raise ValueError(
            "the non-concept filter needs top_tokens_a and top_tokens_b (see top_activations and top_examples); "
            "pass them or set junk_filter=False and shared_token_filter=False"
        )
    stats_a, stats_b = matches.stats_a, matches.stats_b
    n_features_a, n_features_b = len(stats_a.total), len(stats_b.total)
    has_partner = stats_b.alive & (matches.best_a >= 0)
    feature_b = np.nonzero(has_partner)[0]
    feature_a = matches.best_a[feature_b]
    correlation = matches.best_correlation[feature_b]

    use_tokens = junk_filter or shared_token_filter
    if use_tokens:
        judge_a = _TokenJudge(top_tokens_a, n_features_a, n_top_tokens, junk_fraction, "a")
        judge_b = _TokenJudge(top_tokens_b, n_features_b, n_top_tokens, junk_fraction, "b")

    def pair_is_concept(b: int, a: int) -> bool:
        if junk_filter and (judge_a.is_junk(a) or judge_b.is_junk(b)):
            return False
        return not shared_token_filter or bool(judge_a.normalized(a) & judge_b.normalized(b))

    if use_tokens:
        passes_non_concept = np.array([pair_is_concept(b, a) for b, a in zip(feature_b, feature_a)], dtype=bool)
    else:
        passes_non_concept = np.ones(len(feature_b), dtype=bool)

    # The one-to-one rule sees every row; it may keep only rows that passed the non-concept filter.
    decided = rule.choose(ManyToOnePairs(
        feature_b=feature_b, feature_a=feature_a, correlation=correlation, eligible=passes_non_concept,
        candidates_a=matches.candidates_a[feature_b] if rule.uses_candidates else feature_a[:, None],
        candidate_correlations=(matches.candidate_correlations[feature_b] if rule.uses_candidates
                                else correlation[:, None]),
        pair_passes=pair_is_concept,
        options={"regularization": settings.sinkhorn_regularization, "iterations": settings.sinkhorn_iterations},
    ))
    passes_one_to_one = decided.passes & passes_non_concept
    final_a, final_correlation = decided.final_a, decided.final_correlation
    passes_threshold = passes_one_to_one & (final_correlation >= threshold)

    table = pd.DataFrame(
        {
            "feature_b": feature_b.astype(np.int64),
            "feature_a": feature_a.astype(np.int64),
            "correlation": correlation,
            "passes_non_concept": passes_non_concept,
            "passes_one_to_one": passes_one_to_one,
            "passes_threshold": passes_threshold,
            "final_a": final_a.astype(np.int64),
            "final_correlation": final_correlation,
            "kept": passes_threshold.copy(),
        }
    )
    table.attrs.update(
        {
            "n_positions": matches.n_positions,
            "n_features_a": n_features_a,
            "n_features_b": n_features_b,
            "n_alive_a": int(stats_a.alive.sum()),
            "n_alive_b": int(stats_b.alive.sum()),
            "n_dead_a": int(stats_a.dead.sum()),
            "n_dead_b": int(stats_b.dead.sum()),
            "n_constant_a": int(stats_a.constant.sum()),
            "n_constant_b": int(stats_b.constant.sum()),
            "n_b_without_partner": int((stats_b.alive & ~has_partner).sum()),
            "junk_filter": bool(junk_filter),
            "shared_token_filter": bool(shared_token_filter),
            "one_to_one": one_to_one,
            "threshold": float(threshold),
        }
    )
    return table


def match_features(
    acts_a: Any,
    acts_b: Any = None,
    *,
    top_tokens_a: Sequence | Mapping | None = None,
    top_tokens_b: Sequence | Mapping | None = None,
    settings: MatchSettings | None = None,
    chunk_rows: int | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Pair each alive B feature with its most correlated A feature, then filter.

    Inputs: activations as in `pearson_correlation` (`chunk_rows` chunks
    in-memory matrices); top_tokens_a/b: per feature (sequence of length F or
    mapping feature -> tokens) its top activating token strings, best first
    (needed by the non-concept filter). `settings` (default `MatchSettings()`)
    says how to pair and filter; keyword overrides replace single fields of it,
    e.g. `match_features(a, b, junk_filter=False)`.

    Returns one row per B feature that varies and has an alive A feature,
    ordered by feature_b. Columns:
      feature_b, feature_a, correlation  many-to-one best pair, before filters
      passes_non_concept   junk_filter: neither feature has more than
                           junk_fraction junk tokens among its first n_top_tokens
                           (see is_junk_token; no tokens = junk);
                           shared_token_filter (paper): the two features share a
                           normalized top token string. A disabled filter passes all.
      passes_one_to_one    passes_non_concept AND the one-to-one rule kept the row:
                           "highest": per A feature the row with the highest
                           correlation (ties: lowest feature_b); "first": the row with
                           the lowest feature_b (the paper's code); "hungarian": a global
                           assignment over the n_candidates best A features of each
                           row that maximizes the total correlation (may give a row
                           another partner; rows left without a positive-correlation
                           partner fail); None: no one-to-one step.
      passes_threshold     passes_one_to_one AND final_correlation >= threshold
      final_a, final_correlation   the pair after one-to-one (differs from
                           feature_a only under "hungarian"; else equal)
      kept                 = passes_threshold: the final pairs (feature_b, final_a)
    df.attrs holds feature counts (alive, dead, constant per side, B features
    without an alive partner) and the settings; see `summarize_matches`.
    """
    settings = with_overrides(settings, overrides)
    matches = best_matches(
        acts_a,
        acts_b,
        n_candidates=candidate_count(settings),
        feature_block=settings.feature_block,
        chunk_rows=chunk_rows,
        device=settings.device,
    )
    return match_table(matches, top_tokens_a=top_tokens_a, top_tokens_b=top_tokens_b, settings=settings)


def match_correlation_matrix(correlation: np.ndarray, *, settings: MatchSettings | None = None,
                             **overrides: Any) -> pd.DataFrame:
    """`match_features` on a precomputed (F_A, F_B) correlation matrix (NaN = zero variance).

    Settings and overrides as in `match_table`. Dead and constant features are
    not told apart here: both count as dead.
    """
    top_tokens = {key: overrides.pop(key) for key in ("top_tokens_a", "top_tokens_b") if key in overrides}
    settings = with_overrides(settings, overrides)
    matches = best_matches_from_correlation(correlation, n_candidates=candidate_count(settings))
    return match_table(matches, settings=settings, **top_tokens)


def with_overrides(settings: MatchSettings | None, overrides: dict) -> MatchSettings:
    """`settings` (default `MatchSettings()`) with single fields replaced; checks what a config schema cannot."""
    settings = dataclasses.replace(settings or MatchSettings(), **overrides)
    one_to_one_rule(settings.one_to_one)  # ValueError naming the rules when unknown
    if not isinstance(settings.threshold, (int, float)) or math.isnan(settings.threshold):
        raise ValueError(f"threshold must be a number; got {settings.threshold!r}")
    if settings.n_candidates != "all" and (not isinstance(settings.n_candidates, int) or settings.n_candidates < 1):
        raise ValueError(f"n_candidates must be a positive integer or 'all'; got {settings.n_candidates!r}")
    return settings


def candidate_count(settings: MatchSettings) -> int | None:
    """A features per B feature the correlation step keeps: 1 unless the rule reads candidates, then
    `n_candidates` (None for 'all': the whole correlation matrix, as the paper's Hungarian and Sinkhorn read it)."""
    if not one_to_one_rule(settings.one_to_one).uses_candidates:
        return 1
    return None if settings.n_candidates == "all" else settings.n_candidates


def kept_pairs(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(indices_a, indices_b) of the kept pairs, ordered by feature_b."""
    kept = table[table["kept"]]
    return kept["final_a"].to_numpy(np.int64), kept["feature_b"].to_numpy(np.int64)


def summarize_matches(table: pd.DataFrame) -> dict:
    """Counts and means of a match table, JSON-ready.

    Keys: the attrs of `match_table` plus n_pairs_many_to_one,
    n_after_non_concept, n_after_one_to_one, n_after_threshold (= kept),
    mean_max_correlation (mean of `correlation` over all rows, before filters)
    and mean_correlation_kept (mean final_correlation of kept rows); means are
    None when there are no rows.
    """

    def mean_or_none(values: pd.Series) -> float | None:
        return float(values.mean()) if len(values) else None

    summary = dict(table.attrs)
    summary.update(
        {
            "n_pairs_many_to_one": int(len(table)),
            "n_after_non_concept": int(table["passes_non_concept"].sum()),
            "n_after_one_to_one": int(table["passes_one_to_one"].sum()),
            "n_after_threshold": int(table["passes_threshold"].sum()),
            "mean_max_correlation": mean_or_none(table["correlation"]),
            "mean_correlation_kept": mean_or_none(table.loc[table["kept"], "final_correlation"]),
        }
    )
    return summary
