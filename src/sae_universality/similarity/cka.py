"""Linear and debiased centered kernel alignment (CKA) and their permutation nulls."""

from __future__ import annotations

import math

import numpy as np

from .base import _center_columns, _check_pair
from .kernels import _prepare_permuted_quadratic_forms


def _unbiased_hsic_parts(gram: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Gram matrix with zero diagonal, its total sum, and its row sums (pieces of Song et al.'s estimator)."""
    hollow = gram.copy()
    np.fill_diagonal(hollow, 0.0)
    row_sums = hollow.sum(axis=1)
    return hollow, float(row_sums.sum()), row_sums


def _unbiased_hsic(trace_term: float, total_k: float, total_l: float, cross_term: float, n: int) -> float:
    """Song et al. (2012) unbiased HSIC from tr(K L), 1'K1, 1'L1 and 1'K L 1 of zero-diagonal Grams."""
    return (
        trace_term + total_k * total_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross_term
    ) / (n * (n - 3))


def _self_unbiased_hsic(hollow: np.ndarray, total: float, row_sums: np.ndarray) -> float:
    n = hollow.shape[0]
    return _unbiased_hsic(float((hollow * hollow).sum()), total, total, float(row_sums @ row_sums), n)


def linear_cka(X, Y, debiased: bool = False) -> float:
    """Linear centered kernel alignment (Kornblith et al. 2019).

    Biased: ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F) with column-centered
    X_c, Y_c. Debiased: the same ratio built from Song et al.'s (2012) unbiased HSIC
    estimator on the linear Gram matrices of the centered data (can be slightly
    negative for unrelated spaces; NaN when a self-HSIC estimate is not positive).

    Args:
        X: (n, d_a), Y: (n, d_b); n >= 4 when debiased.
        debiased: use the unbiased HSIC estimator.
    Returns:
        CKA, in [0, 1] when biased.
    """
    X, Y = _check_pair(X, Y, min_rows=4 if debiased else 2)
    X, Y = _center_columns(X), _center_columns(Y)
    if not debiased:
        cross = np.linalg.norm(Y.T @ X) ** 2
        norms = np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
        if norms == 0:
            raise ValueError("X or Y has no variance across its rows (all rows equal); CKA is undefined")
        return float(cross / norms)
    hollow_x, total_x, rows_x = _unbiased_hsic_parts(X @ X.T)
    hollow_y, total_y, rows_y = _unbiased_hsic_parts(Y @ Y.T)
    n = X.shape[0]
    hsic_xy = _unbiased_hsic(float((hollow_x * hollow_y).sum()), total_x, total_y, float(rows_x @ rows_y), n)
    denominator = _self_unbiased_hsic(hollow_x, total_x, rows_x) * _self_unbiased_hsic(hollow_y, total_y, rows_y)
    return float(hsic_xy / math.sqrt(denominator)) if denominator > 0 else float("nan")


def debiased_cka_of_features(X, Y) -> float:
    """`debiased_cka` computed from feature-space products, for many rows: O(n d^2) time and O(d^2) memory.

    The same estimator (Song et al.'s unbiased HSIC of the centered linear Grams),
    without forming the (n, n) Grams: with centered rows and r_i = ||x_i||^2, the
    zero-diagonal Gram K~ = X X^T - diag(r) has tr(K~ L~) = ||X^T Y||_F^2 - r_x . r_y,
    1^T K~ 1 = -sum(r_x) and K~ 1 = -r_x. For the residual streams of two models over
    tens of thousands of positions, where the Grams would not fit in memory.
    """
    X, Y = _check_pair(X, Y, min_rows=4)
    X, Y = _center_columns(X), _center_columns(Y)
    n = X.shape[0]
    rows_x, rows_y = np.einsum("ij,ij->i", X, X), np.einsum("ij,ij->i", Y, Y)

    def hsic(first, second, rows_first, rows_second):
        trace = float(np.linalg.norm(first.T @ second) ** 2 - rows_first @ rows_second)
        return _unbiased_hsic(trace, -float(rows_first.sum()), -float(rows_second.sum()),
                              float(rows_first @ rows_second), n)

    denominator = hsic(X, X, rows_x, rows_x) * hsic(Y, Y, rows_y, rows_y)
    return float(hsic(X, Y, rows_x, rows_y) / math.sqrt(denominator)) if denominator > 0 else float("nan")


def debiased_cka(X, Y) -> float:
    """`linear_cka(X, Y, debiased=True)`: linear CKA from the unbiased HSIC estimator (Song et al. 2012)."""
    return linear_cka(X, Y, debiased=True)


def _null_linear_cka(X, Y, device, debiased: bool = False):
    n = X.shape[0]
    X, Y = _center_columns(X), _center_columns(Y)
    gram_x, gram_y = X @ X.T, Y @ Y.T
    if not debiased:
        scale = np.linalg.norm(gram_x) * np.linalg.norm(gram_y)
        if scale == 0:
            raise ValueError("X or Y has no variance across its rows (all rows equal); CKA is undefined")
        quadratic = _prepare_permuted_quadratic_forms(gram_x, gram_y, np.float64, device)
        return lambda permutations: quadratic(permutations) / scale
    hollow_x, total_x, rows_x = _unbiased_hsic_parts(gram_x)
    hollow_y, total_y, rows_y = _unbiased_hsic_parts(gram_y)
    denominator = _self_unbiased_hsic(hollow_x, total_x, rows_x) * _self_unbiased_hsic(hollow_y, total_y, rows_y)
    quadratic = _prepare_permuted_quadratic_forms(hollow_x, hollow_y, np.float64, device)

    def evaluate(permutations: np.ndarray) -> np.ndarray:
        if denominator <= 0:
            return np.full(len(permutations), np.nan)
        traces = quadratic(permutations)
        # 1' K P L P' 1 is the row sums of K dotted with the permuted row sums of L.
        crosses = rows_y[permutations] @ rows_x
        hsic = _unbiased_hsic(traces, total_x, total_y, crosses, n)
        return hsic / math.sqrt(denominator)

    return evaluate


def _null_debiased_cka(X, Y, device):
    return _null_linear_cka(X, Y, device, debiased=True)

