"""The match table: best pairs, then the filters in order (non-concept -> one-to-one -> threshold)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from ..settings import MatchSettings
from .correlation import BestMatches, best_matches, best_matches_from_correlation
from .filters import _TokenJudge

ONE_TO_ONE_RULES = ("highest", "first", "hungarian", "none", None)

# ---------------------------------------------------------------------------
# Match table
# ---------------------------------------------------------------------------


def _hungarian(
    candidates_a: np.ndarray, candidate_correlations: np.ndarray, usable: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Global one-to-one assignment maximizing the total correlation over candidate edges.

    Inputs are per row (B feature): candidates (rows, m) A indices, their
    correlations, usable (rows, m) bool edges. Every row also gets a private
    "unmatched" edge worth correlation 0, so a full matching always exists
    and an edge with correlation <= 0 is never worth taking. Returns
    (partner_a, partner_correlation) per row, -1 / 0.0 for unmatched rows.
    """
    n_rows = len(candidates_a)
    row_of_edge, slot = np.nonzero(usable)
    edge_a = candidates_a[row_of_edge, slot]
    edge_correlation = candidate_correlations[row_of_edge, slot]
    unique_a, column_of_edge = np.unique(edge_a, return_inverse=True)
    # weights 2 - r lie in [1, 3]: never zero (csgraph treats zeros as missing edges)
    rows = np.concatenate([row_of_edge, np.arange(n_rows)])
    columns = np.concatenate([column_of_edge, len(unique_a) + np.arange(n_rows)])
    weights = np.concatenate([2.0 - edge_correlation, np.full(n_rows, 2.0)])
    graph = sp.csr_array((weights, (rows, columns)), shape=(n_rows, len(unique_a) + n_rows))
    matched_rows, matched_columns = min_weight_full_bipartite_matching(graph)
    partner_a = np.full(n_rows, -1, dtype=np.int64)
    partner_correlation = np.zeros(n_rows)
    real = matched_columns < len(unique_a)
    matched_rows, matched_columns = matched_rows[real], matched_columns[real]
    # look the matched edges up by (row, column) key; a row lists each A feature once
    edge_key = row_of_edge * len(unique_a) + column_of_edge
    order = np.argsort(edge_key)
    found = order[np.searchsorted(edge_key[order], matched_rows * len(unique_a) + matched_columns)]
    partner_a[matched_rows] = edge_a[found]
    partner_correlation[matched_rows] = edge_correlation[found]
    return partner_a, partner_correlation


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

    final_a, final_correlation = feature_a.copy(), correlation.copy()
    if one_to_one is None:
        passes_one_to_one = passes_non_concept.copy()
    elif one_to_one in ("highest", "first"):
        candidates = np.nonzero(passes_non_concept)[0]
        # rows are in increasing feature_b: a stable sort keeps the lowest B first among ties
        sort_keys = (feature_b[candidates],) if one_to_one == "first" else (-correlation[candidates],)
        order = candidates[np.lexsort(sort_keys + (feature_a[candidates],))]
        first_of_group = np.ones(len(order), dtype=bool)
        first_of_group[1:] = feature_a[order][1:] != feature_a[order][:-1]
        passes_one_to_one = np.zeros(len(feature_b), dtype=bool)
        passes_one_to_one[order[first_of_group]] = True
    else:
        rows = np.nonzero(passes_non_concept)[0]
        candidates_a = matches.candidates_a[feature_b[rows]]
        candidate_correlations = matches.candidate_correlations[feature_b[rows]]
        usable = candidates_a >= 0
        if use_tokens:
            # the best edge passed already; the other candidates must pass the same pair test
            for row_position, slot in zip(*np.nonzero(usable[:, 1:])):
                b, a = int(feature_b[rows[row_position]]), int(candidates_a[row_position, slot + 1])
                usable[row_position, slot + 1] = pair_is_concept(b, a)
        passes_one_to_one = np.zeros(len(feature_b), dtype=bool)
        if len(rows):
            partner_a, partner_correlation = _hungarian(candidates_a, candidate_correlations, usable)
            matched = partner_a >= 0
            passes_one_to_one[rows[matched]] = True
            final_a[rows[matched]] = partner_a[matched]
            final_correlation[rows[matched]] = partner_correlation[matched]
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
        n_candidates=settings.n_candidates if settings.one_to_one_rule == "hungarian" else 1,
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
    n_candidates = settings.n_candidates if settings.one_to_one_rule == "hungarian" else 1
    matches = best_matches_from_correlation(correlation, n_candidates=n_candidates)
    return match_table(matches, settings=settings, **top_tokens)


def with_overrides(settings: MatchSettings | None, overrides: dict) -> MatchSettings:
    """`settings` (default `MatchSettings()`) with single fields replaced; checks what a config schema cannot."""
    settings = dataclasses.replace(settings or MatchSettings(), **overrides)
    if settings.one_to_one not in ONE_TO_ONE_RULES:
        raise ValueError(f"one_to_one must be one of {ONE_TO_ONE_RULES}; got {settings.one_to_one!r}")
    if not isinstance(settings.threshold, (int, float)) or math.isnan(settings.threshold):
        raise ValueError(f"threshold must be a number; got {settings.threshold!r}")
    if not isinstance(settings.n_candidates, int) or settings.n_candidates < 1:
        raise ValueError(f"n_candidates must be a positive integer; got {settings.n_candidates!r}")
    return settings


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
