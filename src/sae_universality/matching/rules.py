"""One-to-one rules: when several B features pick the same A feature, which pairs stay (METHOD.md section 5).

Each rule is a function of the many-to-one pairs (`ManyToOnePairs`, one row per
B feature with its best A feature) that returns a `OneToOne`: which rows pass,
and each row's partner after the rule (a rule may give a row another partner,
as the global assignment does). `ONE_TO_ONE_RULES` maps the names that
`matching.one_to_one` accepts in the config to the rules; the schema's enum is
tested equal to it. Adding a rule: write its function here, add it to the
table, add its name to the schema's enum (workflow/schemas/config.schema.yaml).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import min_weight_full_bipartite_matching


@dataclass(frozen=True)
class ManyToOnePairs:
    """The pairs a one-to-one rule chooses from: row i is B feature feature_b[i] and its best A feature."""

    feature_b: np.ndarray
    """(rows,) int64 B features, ascending."""
    feature_a: np.ndarray
    """(rows,) int64 their most correlated A features."""
    correlation: np.ndarray
    """(rows,) float64 those correlations."""
    eligible: np.ndarray
    """(rows,) bool: the pair passed the non-concept filter; a rule keeps no other row."""
    candidates_a: np.ndarray
    """(rows, m) int64 each row's m best A features, best first, -1 for none (m = 1 unless the rule
    asks for candidates: `OneToOneRule.uses_candidates`, `MatchSettings.n_candidates`)."""
    candidate_correlations: np.ndarray
    """(rows, m) float64 their correlations, NaN for none."""
    pair_passes: Callable[[int, int], bool]
    """The non-concept filter for any edge (feature_b, feature_a), for rules that pair rows anew."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Rule settings from `MatchSettings` (sinkhorn: regularization, iterations)."""


@dataclass(frozen=True)
class OneToOne:
    """What a rule decided, per row of its `ManyToOnePairs`."""

    passes: np.ndarray
    """(rows,) bool: the row survives the rule (never a row that was not eligible)."""
    final_a: np.ndarray
    """(rows,) int64 the row's A partner after the rule (feature_a unless the rule re-paired it)."""
    final_correlation: np.ndarray
    """(rows,) float64 the correlation of that pair."""


@dataclass(frozen=True)
class OneToOneRule:
    """A one-to-one rule and what it needs from the correlation step."""

    choose: Callable[[ManyToOnePairs], OneToOne]
    """The rule itself."""
    uses_candidates: bool = False
    """True: the rule reads `MatchSettings.n_candidates` A features per B feature, not only the best."""
    description: str = ""
    """One line for the docs and error messages."""


def _unchanged(pairs: ManyToOnePairs, passes: np.ndarray) -> OneToOne:
    return OneToOne(passes, pairs.feature_a.copy(), pairs.correlation.copy())


def keep_all(pairs: ManyToOnePairs) -> OneToOne:
    """No one-to-one step: every eligible pair passes (an A feature may keep several partners)."""
    return _unchanged(pairs, pairs.eligible.copy())


def _first_per_a(pairs: ManyToOnePairs, sort_keys: tuple[np.ndarray, ...]) -> OneToOne:
    """Per A feature, the eligible row that sorts first by `sort_keys` (of the eligible rows, in lexsort order)."""
    candidates = np.nonzero(pairs.eligible)[0]
    # rows are in increasing feature_b: a stable sort keeps the lowest B first among ties
    order = candidates[np.lexsort(sort_keys + (pairs.feature_a[candidates],))]
    first_of_group = np.ones(len(order), dtype=bool)
    first_of_group[1:] = pairs.feature_a[order][1:] != pairs.feature_a[order][:-1]
    passes = np.zeros(len(pairs.feature_b), dtype=bool)
    passes[order[first_of_group]] = True
    return _unchanged(pairs, passes)


def highest(pairs: ManyToOnePairs) -> OneToOne:
    """Per A feature, the row with the highest correlation (ties: the lowest B feature)."""
    candidates = np.nonzero(pairs.eligible)[0]
    return _first_per_a(pairs, (-pairs.correlation[candidates],))


def first(pairs: ManyToOnePairs) -> OneToOne:
    """Per A feature, the row with the lowest B feature (the paper's code)."""
    candidates = np.nonzero(pairs.eligible)[0]
    return _first_per_a(pairs, (pairs.feature_b[candidates],))


def _usable_candidates(pairs: ManyToOnePairs, rows: np.ndarray) -> np.ndarray:
    """(len(rows), m) bool: candidate edges that exist and pass the non-concept filter (the best edge passed)."""
    candidates_a = pairs.candidates_a[rows]
    usable = candidates_a >= 0
    for row_position, slot in zip(*np.nonzero(usable[:, 1:])):
        b, a = int(pairs.feature_b[rows[row_position]]), int(candidates_a[row_position, slot + 1])
        usable[row_position, slot + 1] = pairs.pair_passes(b, a)
    return usable


def hungarian(pairs: ManyToOnePairs) -> OneToOne:
    """A global assignment over each eligible row's candidates that maximizes the total correlation.

    A row may get another of its candidates as partner; a row left without a
    positive-correlation partner fails. Every other candidate edge must pass the
    non-concept filter too (the best edge passed it already).
    """
    rows = np.nonzero(pairs.eligible)[0]
    candidates_a = pairs.candidates_a[rows]
    candidate_correlations = pairs.candidate_correlations[rows]
    usable = _usable_candidates(pairs, rows)
    decided = _unchanged(pairs, np.zeros(len(pairs.feature_b), dtype=bool))
    if len(rows):
        partner_a, partner_correlation = assign_globally(candidates_a, candidate_correlations, usable)
        matched = partner_a >= 0
        decided.passes[rows[matched]] = True
        decided.final_a[rows[matched]] = partner_a[matched]
        decided.final_correlation[rows[matched]] = partner_correlation[matched]
    return decided


def assign_globally(
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


def sinkhorn_plan(log_kernel: np.ndarray, iterations: int) -> np.ndarray:
    """The entropic transport plan between uniform marginals, by log-domain Sinkhorn iterations.

    log_kernel (rows, columns): -cost / regularization, -inf where there is no edge (every
    row and column needs one). Each iteration rescales the rows to mass 1/rows, then the
    columns to 1/columns, in log space (no overflow as the regularization goes to 0).
    """
    from scipy.special import logsumexp

    n_rows, n_columns = log_kernel.shape
    log_row, log_column = -np.log(n_rows), -np.log(n_columns)
    f, g = np.zeros(n_rows), np.zeros(n_columns)
    for _ in range(iterations):
        f = log_row - logsumexp(log_kernel + g[None, :], axis=1)
        g = log_column - logsumexp(log_kernel + f[:, None], axis=0)
    return np.exp(log_kernel + f[:, None] + g[None, :])


def sinkhorn(pairs: ManyToOnePairs) -> OneToOne:
    """Entropic optimal transport over each eligible row's candidates (the paper's third rule).

    Cost 1 - correlation, regularization `options["regularization"]` (the paper's 0.05),
    `options["iterations"]` Sinkhorn iterations (80), uniform mass on the rows and on the A
    features that appear among their candidates. Each row then takes the A feature its plan
    row puts most mass on (the paper's argmax); where several rows take one A feature, the
    row with the most mass on it keeps it (ties: the lowest B feature), so the result is
    one-to-one like the other rules. A row whose partner correlates <= 0 fails, as under
    hungarian. Candidate edges other than the best must pass the non-concept filter.
    """
    regularization = float(pairs.options.get("regularization", 0.05))
    iterations = int(pairs.options.get("iterations", 80))
    rows = np.nonzero(pairs.eligible)[0]
    decided = _unchanged(pairs, np.zeros(len(pairs.feature_b), dtype=bool))
    if not len(rows):
        return decided
    candidates_a, correlations = pairs.candidates_a[rows], pairs.candidate_correlations[rows]
    usable = _usable_candidates(pairs, rows)
    columns, column_of = np.unique(candidates_a[usable], return_inverse=True)
    log_kernel = np.full((len(rows), len(columns)), -np.inf)
    row_of_edge, slot = np.nonzero(usable)
    log_kernel[row_of_edge, column_of] = -(1.0 - correlations[row_of_edge, slot]) / regularization
    plan = sinkhorn_plan(log_kernel, iterations)
    chosen = np.argmax(plan, axis=1)
    mass = plan[np.arange(len(rows)), chosen]
    correlation_of = np.full(log_kernel.shape, np.nan)
    correlation_of[row_of_edge, column_of] = correlations[row_of_edge, slot]
    chosen_correlation = correlation_of[np.arange(len(rows)), chosen]
    # One row per A feature: the most mass, then the lowest B feature (rows ascend in feature_b).
    order = np.lexsort((np.arange(len(rows)), -mass, chosen))
    first_of_column = np.ones(len(order), dtype=bool)
    first_of_column[1:] = chosen[order][1:] != chosen[order][:-1]
    keeps = np.zeros(len(rows), dtype=bool)
    keeps[order[first_of_column]] = True
    keeps &= chosen_correlation > 0
    decided.passes[rows[keeps]] = True
    decided.final_a[rows[keeps]] = columns[chosen[keeps]]
    decided.final_correlation[rows[keeps]] = chosen_correlation[keeps]
    return decided


ONE_TO_ONE_RULES: dict[str, OneToOneRule] = {
    "highest": OneToOneRule(highest, description="per A feature, the best-correlated B feature"),
    "first": OneToOneRule(first, description="per A feature, the lowest B feature (the paper's code)"),
    "hungarian": OneToOneRule(hungarian, uses_candidates=True,
                              description="a global assignment over each B feature's n_candidates best A features"),
    "sinkhorn": OneToOneRule(sinkhorn, uses_candidates=True,
                             description="entropic optimal transport over each B feature's n_candidates best A "
                                         "features, then the plan's argmax (the paper's third rule)"),
    "none": OneToOneRule(keep_all, description="no one-to-one step"),
}
"""The one-to-one rules by the name `matching.one_to_one` gives them (the schema's enum is this table's keys)."""


def one_to_one_rule(name: str | None) -> OneToOneRule:
    """The rule called `name` (None means "none"); ValueError naming the known rules otherwise."""
    rule = ONE_TO_ONE_RULES.get("none" if name is None else name)
    if rule is None:
        raise ValueError(f"one_to_one must be one of {', '.join(ONE_TO_ONE_RULES)}; got {name!r}")
    return rule
