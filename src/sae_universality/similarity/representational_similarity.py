"""RSA (representational similarity analysis) and its permutation null."""

from __future__ import annotations

import numpy as np

from .base import _check_pair
from .kernels import _prepare_permuted_quadratic_forms, _symmetric_from_upper


def _row_correlations(matrix: np.ndarray, name: str) -> np.ndarray:
    """(n, n) Pearson correlations between the rows of `matrix`."""
    centered = matrix - matrix.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centered, axis=1, keepdims=True)
    constant = np.flatnonzero(norms[:, 0] == 0)
    if constant.size:
        raise ValueError(f"row {constant[0]} of {name} is constant, so its correlations are undefined; drop it")
    unit = centered / norms
    return unit @ unit.T


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing their mean rank (scipy.stats.rankdata's "average").

    Here rather than scipy.stats, whose import alone costs a matching or scoring job seconds.
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    run_starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run_stops = np.r_[run_starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((run_starts + run_stops + 1) / 2.0, run_stops - run_starts)
    return ranks


def _upper_triangle_centered_ranks(matrix: np.ndarray, name: str) -> np.ndarray:
    """Average ranks of the strict upper triangle of the row correlations, minus their mean (float64).

    Correlations are rounded to 12 decimals first so that rounding noise does not
    split exact ties (e.g. duplicated rows) into arbitrary rank orders.
    """
    correlations = _row_correlations(matrix, name)
    upper = np.round(correlations[np.triu_indices(matrix.shape[0], k=1)], 12)
    del correlations
    ranks = _average_ranks(upper)
    # Average ranks are multiples of 1/2, so centered ranks stay exact in float32 up to n ~ 5,800.
    return ranks - (upper.size + 1) / 2.0


def rsa(X, Y) -> float:
    """Representational similarity: Spearman correlation of the two row-correlation matrices.

    Per side, the (n, n) matrix of Pearson correlations between rows; the score
    is the Spearman correlation (Pearson of average ranks) of the two strict
    upper triangles.

    Args:
        X: (n, d_a), Y: (n, d_b), n >= 3, no constant row.
    Returns:
        Spearman correlation in [-1, 1]; NaN when one side's correlations are all equal.
    """
    X, Y = _check_pair(X, Y, min_rows=3)
    ranks_x = _upper_triangle_centered_ranks(X, "X")
    ranks_y = _upper_triangle_centered_ranks(Y, "Y")
    scale = np.linalg.norm(ranks_x) * np.linalg.norm(ranks_y)
    # All correlations tied on one side: the rank correlation is undefined.
    return float(ranks_x @ ranks_y / scale) if scale > 0 else float("nan")


def _null_rsa(X, Y, device):
    n = X.shape[0]
    ranks_x = _upper_triangle_centered_ranks(X, "X")
    ranks_y = _upper_triangle_centered_ranks(Y, "Y")
    scale = np.linalg.norm(ranks_x) * np.linalg.norm(ranks_y)
    if scale == 0:
        return lambda permutations: np.full(len(permutations), np.nan)
    # Ranks of a row-permuted similarity matrix are the permuted ranks: rank once, gather per permutation.
    quadratic = _prepare_permuted_quadratic_forms(
        _symmetric_from_upper(ranks_x, n, np.float32), _symmetric_from_upper(ranks_y, n, np.float32),
        np.float32, device,
    )
    # The full symmetric sum counts every upper-triangle pair twice.
    return lambda permutations: quadratic(permutations) / (2.0 * scale)

