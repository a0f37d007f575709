"""Similarity of two matched feature spaces, its permutation null, and semantic subspaces.

METHOD.md sections 6-8. Inputs everywhere are two matrices with one row per
matched pair: `X = W_dec_A[idx_A]` (n x d_a) and `Y = W_dec_B[idx_B]`
(n x d_b); row i of X and row i of Y are the two halves of pair i. Every
metric is a pure function `f(X, Y) -> float` where larger means more similar.

Metrics (registered in `METRICS`, dispatched by `compute_metric`):

- `svcca`: SVD-reduce each side, then the mean canonical correlation (CCA), in-sample.
- `heldout_svcca`: the same fit on some pairs and measured on the others (k-fold): about 0 at chance.
- `rsa`: Spearman correlation of the two n x n row-correlation matrices.
- `linear_cka` / `debiased_cka`: linear centered kernel alignment.
- `mutual_knn`: overlap of cosine nearest-neighbour sets (Huh et al. 2024).
- `procrustes`: similarity after the best orthogonal map.

Pairing null (`permutation_test`, `permutation_null`): the rows of Y are
shuffled against X. Everything a row permutation leaves unchanged (SVD bases,
correlation matrices and their ranks, Gram matrices, neighbour lists) is
computed once; each permutation then costs only a gather plus a small product.
The fast null equals a recompute-from-scratch to float tolerance.
"""

from __future__ import annotations

import inspect
import itertools
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .devices import kernel_device
from .errors import UserError

__all__ = [
    "INVARIANCES",
    "P_ADJUSTMENTS",
    "METRICS",
    "Metric",
    "adjust_p_values",
    "bootstrap_interval",
    "compute_metric",
    "debiased_cka",
    "draw_permutations",
    "heldout_folds",
    "heldout_svcca",
    "heldout_svcca_choices",
    "linear_cka",
    "mutual_knn",
    "normalized_score",
    "permutation_null",
    "permutation_p_value",
    "permutation_test",
    "procrustes",
    "random_subset_baseline",
    "rsa",
    "svcca",
    "within_fold_permutation",
]

# Names of the transforms of one side that a metric may be invariant to (see `Metric.invariances`).
INVARIANCES = (
    "orthogonal_transform",  # Y -> Y @ Q, Q orthogonal
    "isotropic_scaling",  # Y -> c * Y, c > 0
    "invertible_linear_transform",  # Y -> Y @ M, M invertible
    "translation",  # Y -> Y + t, the same vector t added to every row
    "column_permutation",  # Y -> Y[:, perm]
)

# Rows of permutations drawn and evaluated together: bounds the memory of the permutation block.
_PERMUTATION_BLOCK = 64
# Rows of an n x n matrix gathered at once in the quadratic-form kernel: keeps the gather in cache.
_ROWS_PER_BLOCK = 128
# Bytes allowed for one batch of gathered bases in the nuclear-norm kernel.
_GATHER_BUDGET_BYTES = 256 * 2**20


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _as_matrix(values, name: str) -> np.ndarray:
    """A finite float64 (rows, columns) numpy copy of a numpy array or (any-device) torch tensor."""
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported: never import it here
    if torch is not None and isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    matrix = np.array(values, dtype=np.float64)
    if matrix.ndim != 2:
        raise UserError(f"{name} must be a 2-D matrix (one row per feature), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise UserError(f"{name} contains NaN or infinite values; drop or repair those features first")
    return matrix


def _check_pair(X, Y, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validate two matched matrices: same number of rows (pairs), at least `min_rows` of them."""
    X = _as_matrix(X, "X")
    Y = _as_matrix(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise UserError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; row i of each must be pair i")
    if X.shape[0] < min_rows:
        raise UserError(f"this metric needs at least {min_rows} pairs, got {X.shape[0]}")
    return X, Y


def _center_columns(matrix: np.ndarray) -> np.ndarray:
    return matrix - matrix.mean(axis=0, keepdims=True)


def _nuclear_norm(matrix: np.ndarray) -> float:
    return float(np.linalg.svd(matrix, compute_uv=False).sum())


# ----------------------------------------------------------------------------------------------
# SVCCA
# ----------------------------------------------------------------------------------------------


def _numerical_rank(singular_values: np.ndarray, shape: tuple[int, int]) -> int:
    if singular_values.size == 0 or singular_values[0] == 0:
        return 0
    tolerance = singular_values[0] * max(shape) * np.finfo(np.float64).eps
    return int((singular_values > tolerance).sum())


def _svcca_basis(matrix: np.ndarray, variance: float, components: int | None, name: str) -> np.ndarray:
    """Orthonormal basis (n, k) of the kept principal-component scores of the column-centered matrix.

    k is `components` (clipped to the numerical rank) or the fewest components whose
    squared singular values reach `variance` of the total.
    """
    left, singular_values, _ = np.linalg.svd(_center_columns(matrix), full_matrices=False)
    rank = _numerical_rank(singular_values, matrix.shape)
    if rank == 0:
        raise UserError(f"{name} has no variance across its rows (all rows equal); SVCCA is undefined")
    if components is not None:
        if components > min(matrix.shape):
            raise UserError(
                f"components={components} exceeds min(rows, columns)={min(matrix.shape)} of {name}; use fewer"
            )
        kept = min(components, rank)
    else:
        energy = singular_values[:rank] ** 2
        cumulative = np.cumsum(energy) / energy.sum()
        # The tiny slack lets variance=1.0 reach the full rank despite rounding in the cumulative sum.
        kept = min(int(np.searchsorted(cumulative, variance - 1e-12, side="left")) + 1, rank)
    return left[:, :kept]


def _check_positive_integer(value, what: str, none_allowed: bool = False) -> None:
    if value is None and none_allowed:
        return
    if isinstance(value, bool) or value is None or int(value) != value or value < 1:
        raise UserError(f"{what} must be a positive integer{' or None' if none_allowed else ''}, got {value!r}")


def _check_svcca_options(variance: float, components: int | None) -> None:
    _check_positive_integer(components, "svcca components", none_allowed=True)
    if not 0 < variance <= 1:
        raise UserError(f"svcca variance must be in (0, 1], got {variance}")


def svcca(X, Y, variance: float = 0.99, components: int | None = None) -> float:
    """Singular vector canonical correlation analysis: mean canonical correlation of the reduced spaces.

    Columns are centered; each side is reduced by SVD to its fewest principal
    components explaining at least `variance` of its variance, or to exactly
    `components` of them; the score is the mean of the min(k_x, k_y) canonical
    correlations between the reduced matrices, which are the singular values of
    `U_x^T U_y` for the orthonormal score bases U.

    `components=1` reproduces the paper's published numbers: its code always
    kept one component, so its "SVCCA" is |corr| of the first principal scores.

    Args:
        X: (n, d_a) matched features of model A.
        Y: (n, d_b) matched features of model B.
        variance: fraction of variance each side keeps, in (0, 1].
        components: exact number of components per side (overrides `variance`).
    Returns:
        Mean canonical correlation in [0, 1].
    """
    _check_svcca_options(variance, components)
    X, Y = _check_pair(X, Y)
    basis_x = _svcca_basis(X, variance, components, "X")
    basis_y = _svcca_basis(Y, variance, components, "Y")
    canonical = np.clip(np.linalg.svd(basis_x.T @ basis_y, compute_uv=False), 0.0, 1.0)
    return float(canonical.mean())


# ----------------------------------------------------------------------------------------------
# Held-out SVCCA
# ----------------------------------------------------------------------------------------------

# Candidate numbers of SVD components per side (and of canonical correlations averaged) for the
# nested choice; each is also capped at half the fit rows, so that k_x + k_y never exceeds them.
# Up to 32: the (k x k) SVDs per permutation grow as k^3, and 64 rarely won on real pairs.
HELDOUT_COMPONENT_GRID = (1, 2, 4, 8, 16, 32)
# Fewest held-out rows a fold may have: a correlation over fewer is mostly noise.
_MIN_ROWS_PER_FOLD = 3


def heldout_folds(n_pairs: int, folds: int, seed: int = 0) -> np.ndarray:
    """(n_pairs,) fold label of each pair: a seeded random split into `folds` near-equal parts.

    Fewer folds are used when the pairs cannot fill `folds` folds of at least three rows.
    """
    folds = max(1, min(int(folds), n_pairs // _MIN_ROWS_PER_FOLD))
    labels = np.empty(n_pairs, dtype=np.int64)
    labels[np.random.default_rng(seed).permutation(n_pairs)] = np.arange(n_pairs) % folds
    return labels


def within_fold_permutation(permutation: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The permutation that shuffles rows only within their folds, derived from a global one.

    Fold f's rows take the order that `permutation` gives them; a uniform random
    `permutation` thus gives a uniform random shuffle within every fold. This is the
    pairing null of `heldout_svcca`: it keeps every fit set's rows (so its SVDs) fixed.
    """
    permutation = np.asarray(permutation)
    within = np.empty_like(permutation)
    for fold in np.unique(labels):
        rows = np.flatnonzero(labels == fold)
        within[rows] = rows[np.argsort(permutation[rows], kind="stable")]
    return within


@dataclass(frozen=True)
class _Reduction:
    """SVD reduction of one side fit on some rows: whitened scores of those rows and of held-out folds."""

    rows: np.ndarray  # (s,) fit rows, ascending
    scores: np.ndarray  # (s, k_max) orthonormal columns: the whitened principal scores of the fit rows
    heldout: dict  # fold -> (rows of the fold, (e, k_max) whitened scores of those rows)


def _reduce_on(matrix: np.ndarray, fit_rows: np.ndarray, heldout: dict, k_max: int, name: str) -> _Reduction:
    """Principal directions of `matrix[fit_rows]` (centered on the fit rows), applied to the held-out rows.

    Through the eigendecomposition of the smaller Gram matrix rather than an SVD: three times
    faster on one core, and exact enough for the leading (at most 64) components. Directions with
    eigenvalues below max(shape) * eps of the largest count as absent.
    """
    fit = matrix[fit_rows]
    mean = fit.mean(axis=0)
    centered = fit - mean
    rows_side = centered.shape[0] <= centered.shape[1]
    gram = centered @ centered.T if rows_side else centered.T @ centered
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    tolerance = eigenvalues[0] * max(centered.shape) * np.finfo(np.float64).eps
    rank = int((eigenvalues > tolerance).sum()) if eigenvalues[0] > 0 else 0
    if rank == 0:
        raise UserError(f"{name} has no variance across the fit rows of a fold; held-out SVCCA is undefined")
    k_max = min(k_max, rank)
    eigenvalues, eigenvectors = eigenvalues[:k_max], eigenvectors[:, :k_max]
    if rows_side:
        # Left singular vectors directly; a row x maps to (x - mean) centered^T U / S^2.
        scores, row_map = eigenvectors, centered.T @ (eigenvectors / eigenvalues)
    else:
        # Right singular vectors V; scores U = centered V / S, a row maps to (x - mean) V / S.
        row_map = eigenvectors / np.sqrt(eigenvalues)
        scores = centered @ row_map
    return _Reduction(fit_rows, scores, {fold: (rows, (matrix[rows] - mean) @ row_map) for fold, rows in heldout.items()})


def _column_correlations(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns over the rows (axis -2); 0 where a column is constant."""
    first = first - first.mean(axis=-2, keepdims=True)
    second = second - second.mean(axis=-2, keepdims=True)
    scale = np.linalg.norm(first, axis=-2) * np.linalg.norm(second, axis=-2)
    products = (first * second).sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 1e-12 * np.maximum(1.0, products), products / scale, 0.0)


def _heldout_canonical_correlations(fit_x: _Reduction, fit_y: _Reduction, order_y: np.ndarray,
                                    heldout_order_y: dict, sizes: Sequence[int]) -> dict:
    """{(size, fold): (m, size) held-out correlations of the canonical pairs}, canonical pairs ordered
    by their fit correlation, for m row orders of Y.

    order_y (m, s): row order of Y's fit scores per permutation; heldout_order_y: fold -> (m, e).
    """
    scores_y = fit_y.scores[order_y]  # (m, s, k)
    cross = np.matmul(fit_x.scores.T, scores_y)  # (m, k, k), batched BLAS
    out = {}
    for size in sizes:
        left, _, right_t = np.linalg.svd(cross[:, :size, :size])
        for fold, (_, heldout_x) in fit_x.heldout.items():
            variates_x = heldout_x[:, :size] @ left  # (m, e, size)
            heldout_y = fit_y.heldout[fold][1][heldout_order_y[fold]]  # (m, e, k)
            variates_y = heldout_y[:, :, :size] @ np.swapaxes(right_t, 1, 2)
            out[size, fold] = _column_correlations(variates_x, variates_y)
    return out


class _HeldoutSvcca:
    """Held-out SVCCA of X against row orders of Y that keep every fold's rows (see `heldout_svcca`).

    The SVD reductions of every fit set are computed once for each side; a row order
    within folds only reorders their scores, so each evaluation costs small products
    and (k x k) SVDs, batched over permutations.
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, components: int | None, folds: int, fold_seed: int):
        n = X.shape[0]
        self.labels = heldout_folds(n, folds, fold_seed)
        self.n_folds = int(self.labels.max()) + 1
        self.components = components
        if self.n_folds == 1:
            if components is None:
                raise UserError("held-out SVCCA with one fold measures on its fit rows and cannot choose the "
                                "number of components; give components= or more folds")
            # One fold: fit and measure on every row, which is in-sample SVCCA with `components` components.
            everything = np.arange(n)
            self.outer = {0: (everything, {0: everything})}
            self.inner = {}
        else:
            rows_of = {fold: np.flatnonzero(self.labels == fold) for fold in range(self.n_folds)}
            # Final fits: every fold but one, measured on that one. Inner fits (nested choice of the
            # number of components): every fold but two, measured on each of those two in turn.
            self.outer = {fold: (np.flatnonzero(self.labels != fold), {fold: rows_of[fold]})
                          for fold in range(self.n_folds)}
            self.inner = {}
            if components is None:
                for first, second in itertools.combinations(range(self.n_folds), 2):
                    fit = np.flatnonzero((self.labels != first) & (self.labels != second))
                    self.inner[first, second] = (fit, {first: rows_of[first], second: rows_of[second]})
        self.reductions = {}
        for key, (fit, heldout) in [*self.outer.items(), *self.inner.items()]:
            k_max = components if components is not None else min(max(HELDOUT_COMPONENT_GRID), len(fit) // 2)
            k_max = max(1, k_max)
            reduction_x = _reduce_on(X, fit, heldout, k_max, "X")
            reduction_y = _reduce_on(Y, fit, heldout, k_max, "Y")
            self.reductions[key] = (reduction_x, reduction_y, min(reduction_x.scores.shape[1],
                                                                  reduction_y.scores.shape[1]))

    def _local(self, within: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(m, len(rows)) positions in `rows` of the rows that `within` (m, n) puts at `rows`."""
        position = np.empty(self.labels.size, dtype=np.int64)
        position[rows] = np.arange(rows.size)
        return position[within[:, rows]]

    def _correlations(self, key, within: np.ndarray, sizes) -> dict:
        reduction_x, reduction_y, _ = self.reductions[key]
        order = self._local(within, reduction_y.rows)
        heldout_order = {fold: self._local(within, rows) for fold, (rows, _) in reduction_y.heldout.items()}
        return _heldout_canonical_correlations(reduction_x, reduction_y, order, heldout_order, sizes)

    def _inner_correlations(self, within: np.ndarray) -> dict:
        """Held-out correlations of every inner fit, for every grid size it allows (each fit serves two folds)."""
        correlations = {}
        for key in self.inner:
            sizes = [size for size in HELDOUT_COMPONENT_GRID if size <= self.reductions[key][2]] or [1]
            correlations[key] = self._correlations(key, within, sizes)
        return correlations

    def _choose(self, fold: int, correlations: dict) -> tuple[np.ndarray, np.ndarray]:
        """(m,) components and (m,) canonical correlations to average for final fold `fold`, chosen on
        the inner folds (largest mean held-out correlation; the smaller choice wins ties)."""
        candidates = []  # (components, averaged)
        inner_keys = [key for key in self.inner if fold in key]
        k_cap = min(self.reductions[key][2] for key in inner_keys)
        sizes = [size for size in HELDOUT_COMPONENT_GRID if size <= k_cap] or [1]
        gains = []
        for size in sizes:
            for averaged in [a for a in HELDOUT_COMPONENT_GRID if a <= size]:
                values = [correlations[key][size, other][:, :averaged].mean(axis=1)
                          for key in inner_keys for other in key if other != fold]
                gains.append(np.mean(values, axis=0))
                candidates.append((size, averaged))
        best = np.argmax(np.stack(gains), axis=0)  # first maximum: the smallest candidate on ties
        chosen = np.array(candidates)[best]
        return chosen[:, 0], chosen[:, 1]

    def evaluate(self, within: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores for (m, n) within-fold row orders of Y, with the components and averaged counts per fold."""
        within = np.atleast_2d(within)
        m = within.shape[0]
        totals = np.zeros(m)
        chosen_sizes = np.zeros((m, len(self.outer)), dtype=np.int64)
        chosen_averaged = np.zeros_like(chosen_sizes)
        inner = self._inner_correlations(within) if self.components is None else {}
        for index, (fold, (fit, heldout)) in enumerate(self.outer.items()):
            k_final = self.reductions[fold][2]
            if self.components is not None:
                sizes = np.full(m, k_final)
                averaged = sizes
            else:
                sizes, averaged = self._choose(fold, inner)
                sizes, averaged = np.minimum(sizes, k_final), np.minimum(averaged, k_final)
            correlations = self._correlations(fold, within, sorted(set(sizes.tolist())))
            for size in np.unique(sizes):
                chosen = sizes == size
                values = correlations[int(size), fold][chosen]
                counts = averaged[chosen]
                cumulative = np.cumsum(values, axis=1)
                totals[chosen] += cumulative[np.arange(chosen.sum()), counts - 1] / counts
            chosen_sizes[:, index], chosen_averaged[:, index] = sizes, averaged
        return totals / len(self.outer), chosen_sizes, chosen_averaged


def _check_heldout_options(components: int | None, folds: int) -> None:
    _check_positive_integer(components, "heldout_svcca components", none_allowed=True)
    _check_positive_integer(folds, "heldout_svcca folds")


def _too_few_to_hold_out(n: int, components: int | None, folds: int) -> bool:
    """Too few pairs for the requested split: under 2 folds of three (3 for the nested choice)."""
    effective = int(heldout_folds(n, folds).max()) + 1
    return folds > 1 and effective < (3 if components is None else 2)


def heldout_svcca(X, Y, components: int | None = None, folds: int = 5, fold_seed: int = 0) -> float:
    """SVCCA measured on pairs it was not fit on: about 0 on unrelated spaces for any n and d.

    The pairs are split into `folds` seeded random folds. For each fold, both SVD
    reductions and the canonical directions are fit on the other folds; the score of
    the fold is the mean Pearson correlation, over the fold's own pairs, of the first
    canonical variate pairs; the result is the mean over folds. With `components` None
    the number of components per side k and the number of canonical pairs averaged m
    (both from `HELDOUT_COMPONENT_GRID`, k at most half the fit rows) are chosen per
    fold by the same procedure nested inside the fit folds (leave one more fold out),
    never looking at the measured fold. With `components` given, k = components and
    m = k. `folds=1` fits and measures on every pair: in-sample SVCCA with k components.

    In-sample SVCCA is biased upwards when pairs are few relative to dimensions (k_x +
    k_y > n forces k_x + k_y - n canonical correlations to 1); held-out correlations
    are not, and can be negative.

    Args:
        X: (n, d_a), Y: (n, d_b) matched matrices; n >= 9 for the nested choice.
        components: fixed components per side, or None to choose them on held-out folds.
        folds: number of folds (fewer when n < 3 * folds).
        fold_seed: seed of the fold split.
    Returns:
        Mean held-out canonical correlation in [-1, 1]; NaN when the pairs are too few to hold out
        (fewer than 9 for the nested choice, 6 with fixed components).
    """
    _check_heldout_options(components, folds)
    X, Y = _check_pair(X, Y, min_rows=3)
    if _too_few_to_hold_out(X.shape[0], components, folds):
        return float("nan")
    return float(_HeldoutSvcca(X, Y, components, folds, fold_seed).evaluate(np.arange(X.shape[0]))[0][0])


def heldout_svcca_choices(X, Y, components: int | None = None, folds: int = 5, fold_seed: int = 0
                          ) -> pd.DataFrame:
    """Per fold of `heldout_svcca`: its held-out rows, the components kept and the canonical pairs averaged."""
    _check_heldout_options(components, folds)
    X, Y = _check_pair(X, Y, min_rows=3)
    model = _HeldoutSvcca(X, Y, components, folds, fold_seed)
    _, sizes, averaged = model.evaluate(np.arange(X.shape[0]))
    return pd.DataFrame({"fold": list(model.outer),
                         "heldout_rows": [len(heldout[fold]) for fold, (_, heldout) in model.outer.items()],
                         "components": sizes[0], "averaged": averaged[0]})


# ----------------------------------------------------------------------------------------------
# RSA
# ----------------------------------------------------------------------------------------------


def _row_correlations(matrix: np.ndarray, name: str) -> np.ndarray:
    """(n, n) Pearson correlations between the rows of `matrix`."""
    centered = matrix - matrix.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centered, axis=1, keepdims=True)
    constant = np.flatnonzero(norms[:, 0] == 0)
    if constant.size:
        raise UserError(f"row {constant[0]} of {name} is constant, so its correlations are undefined; drop it")
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


# ----------------------------------------------------------------------------------------------
# Linear CKA
# ----------------------------------------------------------------------------------------------


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
            raise UserError("X or Y has no variance across its rows (all rows equal); CKA is undefined")
        return float(cross / norms)
    hollow_x, total_x, rows_x = _unbiased_hsic_parts(X @ X.T)
    hollow_y, total_y, rows_y = _unbiased_hsic_parts(Y @ Y.T)
    n = X.shape[0]
    hsic_xy = _unbiased_hsic(float((hollow_x * hollow_y).sum()), total_x, total_y, float(rows_x @ rows_y), n)
    denominator = _self_unbiased_hsic(hollow_x, total_x, rows_x) * _self_unbiased_hsic(hollow_y, total_y, rows_y)
    return float(hsic_xy / math.sqrt(denominator)) if denominator > 0 else float("nan")


def debiased_cka(X, Y) -> float:
    """`linear_cka(X, Y, debiased=True)`: linear CKA from the unbiased HSIC estimator (Song et al. 2012)."""
    return linear_cka(X, Y, debiased=True)


# ----------------------------------------------------------------------------------------------
# Mutual k-nearest neighbours
# ----------------------------------------------------------------------------------------------


def _cosine_neighbours(matrix: np.ndarray, k: int, name: str) -> np.ndarray:
    """(n, k) indices of each row's k most cosine-similar other rows (order within a row unspecified)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise UserError(f"row {int(np.flatnonzero(norms[:, 0] == 0)[0])} of {name} is all zeros; cosine is undefined")
    unit = matrix / norms
    n = matrix.shape[0]
    neighbours = np.empty((n, k), dtype=np.int64)
    rows_per_chunk = max(1, 2**24 // n)  # bounds the similarity block to ~128 MB
    for start in range(0, n, rows_per_chunk):
        stop = min(n, start + rows_per_chunk)
        similarity = unit[start:stop] @ unit.T
        similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # a row is not its own neighbour
        neighbours[start:stop] = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    return neighbours


def _count_shared_neighbours(neighbours_x: np.ndarray, neighbours_y: np.ndarray) -> int:
    """Total over rows of |N_x(i) ∩ N_y(i)| for two (n, k) neighbour lists without repeats within a row."""
    n, k = neighbours_x.shape
    rows_per_chunk = max(1, 2**22 // (k * k))
    shared = 0
    for start in range(0, n, rows_per_chunk):
        block_x = neighbours_x[start : start + rows_per_chunk]
        block_y = neighbours_y[start : start + rows_per_chunk]
        shared += int(np.count_nonzero(block_x[:, :, None] == block_y[:, None, :]))
    return shared


def _check_k(k: int, n: int) -> None:
    if isinstance(k, bool) or int(k) != k or not 1 <= k < n:
        raise UserError(f"mutual_knn k must be an integer in [1, n - 1] = [1, {n - 1}], got {k!r}")


def mutual_knn(X, Y, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024).

    For each row, its k nearest other rows by cosine similarity in X and in Y
    (rows are not centered); the score is the mean fraction of the k neighbours
    the two sides share. Exact ties in similarity are broken arbitrarily.

    Args:
        X: (n, d_a), Y: (n, d_b), no all-zero row.
        k: neighbours per row, 1 <= k < n.
    Returns:
        Mean overlap fraction in [0, 1].
    """
    X, Y = _check_pair(X, Y)
    _check_k(k, X.shape[0])
    k = int(k)
    shared = _count_shared_neighbours(_cosine_neighbours(X, k, "X"), _cosine_neighbours(Y, k, "Y"))
    return shared / (X.shape[0] * k)


# ----------------------------------------------------------------------------------------------
# Orthogonal Procrustes
# ----------------------------------------------------------------------------------------------


def _centered_unit_frobenius(matrix: np.ndarray, name: str) -> np.ndarray:
    centered = _center_columns(matrix)
    norm = np.linalg.norm(centered)
    if norm == 0:
        raise UserError(f"{name} has no variance across its rows (all rows equal); Procrustes is undefined")
    return centered / norm


def procrustes(X, Y) -> float:
    """Orthogonal Procrustes similarity: 1 - d^2 / 2 after the best rotation.

    Columns are centered and each matrix is scaled to unit Frobenius norm; the
    narrower side is zero-padded. Then min over orthogonal Q of ||X Q - Y||_F^2
    equals d^2 = 2 - 2 ||X^T Y||_*, so the score 1 - d^2 / 2 is the nuclear norm
    of X^T Y: 1 when Y is X up to rotation, reflection, translation and scale.

    Args:
        X: (n, d_a), Y: (n, d_b).
    Returns:
        Similarity in [0, 1].
    """
    X, Y = _check_pair(X, Y)
    return min(_nuclear_norm(_procrustes_scores(X, "X").T @ _procrustes_scores(Y, "Y")), 1.0)


def _procrustes_scores(matrix: np.ndarray, name: str) -> np.ndarray:
    """The centered, unit-Frobenius matrix, or (wider than tall) its U S from the thin SVD.

    U S has the same row Gram matrix, so the same nuclear norms of X^T (P) Y, at width at
    most n: with few pairs in many dimensions the product and its SVD shrink from
    d_a x d_b to n x n (the null and the interval's half-samples score many of them).
    """
    unit = _centered_unit_frobenius(matrix, name)
    if matrix.shape[1] <= matrix.shape[0]:
        return unit
    left, singular_values, _ = np.linalg.svd(unit, full_matrices=False)
    return left * singular_values


# ----------------------------------------------------------------------------------------------
# Permutation kernels: quantities of P Y computed from decompositions made once
# ----------------------------------------------------------------------------------------------


def _prepare_permuted_nuclear_norms(left: np.ndarray, right: np.ndarray, device: torch.device | None):
    """Evaluator of ||left^T right[p]||_* for each permutation p (rows of a (m, n) int array).

    left (n, a) and right (n, b) are float64. Permuting the rows of Y permutes the rows
    of its SVD bases, so only one matmul and one small symmetric eigenproblem per
    permutation remain: the singular values are the square roots of the eigenvalues
    of the smaller Gram matrix of the (a, b) product. With `device` None this runs in
    numpy (fastest on CPU; one BLAS thread pool in the loop), else batched in torch.
    """
    if device is not None:
        return _prepare_permuted_nuclear_norms_torch(left, right, device)
    left_t = np.ascontiguousarray(left.T)
    gathered = np.empty_like(right)
    cross = np.empty((left.shape[1], right.shape[1]))
    small = min(cross.shape)
    gram = np.empty((small, small))

    def evaluate(permutations: np.ndarray) -> np.ndarray:
        values = np.empty(len(permutations))
        for index, permutation in enumerate(permutations):
            # Preallocated outputs: fresh arrays of this size per permutation cost page faults.
            np.take(right, permutation, axis=0, out=gathered, mode="clip")  # "raise" would buffer a copy
            np.matmul(left_t, gathered, out=cross)
            np.matmul(cross.T, cross, out=gram) if cross.shape[1] == small else np.matmul(cross, cross.T, out=gram)
            values[index] = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None)).sum()
        return values

    return evaluate


def _prepare_permuted_nuclear_norms_torch(left: np.ndarray, right: np.ndarray, device: torch.device):
    """`_prepare_permuted_nuclear_norms` batched over permutations in torch (for CUDA)."""
    import torch

    left_t = torch.as_tensor(np.ascontiguousarray(left.T), device=device)
    right_t = torch.as_tensor(right, device=device)
    n, width = right.shape
    batch = max(1, min(_PERMUTATION_BLOCK, _GATHER_BUDGET_BYTES // max(1, n * width * 8)))

    def evaluate(permutations: np.ndarray) -> np.ndarray:
        values = []
        for start in range(0, len(permutations), batch):
            rows = torch.as_tensor(permutations[start : start + batch], device=device)
            cross = torch.matmul(left_t, right_t[rows])  # (batch, a, b)
            gram = cross.mT @ cross if cross.shape[2] <= cross.shape[1] else cross @ cross.mT
            eigenvalues = torch.linalg.eigvalsh(gram).clamp_min(0.0)
            values.append(eigenvalues.sqrt().sum(dim=-1).cpu().numpy())
        return np.concatenate(values)

    return evaluate


def _prepare_permuted_quadratic_forms(first: np.ndarray, second: np.ndarray, dtype: type,
                                      device: torch.device | None):
    """Evaluator of sum_ij first[i, j] * second[p_i, p_j] for each permutation p.

    `first` and `second` are symmetric (n, n). This is <A, P B P^T>_F, the only part of
    RSA and CKA that a row permutation changes. By symmetry it is twice the strict
    upper triangle plus the diagonal; the upper triangle of `first` is cut into row
    blocks once, and per permutation each block meets the matching gathered rows
    and columns of `second`. Products run in `dtype` (np.float32 or np.float64), sums
    accumulate in float64. With `device` None this runs in numpy (no torch import:
    seconds of a short scoring job), else in torch on that device.
    """
    n = first.shape[0]
    diagonal_first = np.diagonal(first).astype(np.float64)
    if device is None:
        second = np.ascontiguousarray(second, dtype=dtype)
        diagonal_second = np.diagonal(second).astype(np.float64)
        blocks = [(start, min(n, start + _ROWS_PER_BLOCK),
                   np.triu(np.asarray(first[start : start + _ROWS_PER_BLOCK, start:], dtype=dtype), k=1))
                  for start in range(0, n, _ROWS_PER_BLOCK)]
        # Reused buffers: fresh allocations of this size per block would cost page faults every time.
        row_buffer = np.empty(_ROWS_PER_BLOCK * n, dtype=dtype)
        gather_buffer = np.empty(_ROWS_PER_BLOCK * n, dtype=dtype)

        def evaluate_numpy(permutations: np.ndarray) -> np.ndarray:
            values = np.empty(len(permutations))
            for index, permutation in enumerate(permutations):
                upper = 0.0
                for start, stop, block in blocks:
                    rows = row_buffer[: (stop - start) * n].reshape(stop - start, n)
                    np.take(second, permutation[start:stop], axis=0, out=rows, mode="clip")  # "raise" would buffer
                    gathered = gather_buffer[: block.size].reshape(block.shape)
                    np.take(rows, permutation[start:], axis=1, out=gathered, mode="clip")
                    upper += float(np.multiply(gathered, block, out=gathered).sum(dtype=np.float64))
                values[index] = 2.0 * upper + float(diagonal_first @ diagonal_second[permutation])
            return values

        return evaluate_numpy
    import torch

    dtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    diagonal_first = torch.as_tensor(diagonal_first, device=device)
    second_t = torch.as_tensor(second, dtype=dtype, device=device)
    diagonal_second = torch.diagonal(second_t).to(torch.float64)
    first_t = torch.as_tensor(first, dtype=dtype, device=device)
    blocks = []
    for start in range(0, n, _ROWS_PER_BLOCK):
        stop = min(n, start + _ROWS_PER_BLOCK)
        blocks.append((start, stop, torch.triu(first_t[start:stop, start:], diagonal=1).contiguous()))
    del first_t
    # Reused buffers: fresh allocations of this size per block would cost page faults every time.
    row_buffer = torch.empty(_ROWS_PER_BLOCK * n, dtype=dtype, device=device)
    gather_buffer = torch.empty(_ROWS_PER_BLOCK * n, dtype=dtype, device=device)

    def evaluate(permutations: np.ndarray) -> np.ndarray:
        values = np.empty(len(permutations))
        for index, permutation in enumerate(permutations):
            p = torch.as_tensor(permutation, device=device)
            upper = torch.zeros((), dtype=torch.float64, device=device)
            for start, stop, block in blocks:
                rows = row_buffer[: (stop - start) * n].view(stop - start, n)
                torch.index_select(second_t, 0, p[start:stop], out=rows)
                gathered = gather_buffer[: block.numel()].view(block.shape)
                torch.index_select(rows, 1, p[start:], out=gathered)
                upper += gathered.mul_(block).sum(dtype=torch.float64)
            values[index] = float(2.0 * upper + (diagonal_first * diagonal_second[p]).sum())
        return values

    return evaluate


def _symmetric_from_upper(upper: np.ndarray, n: int, dtype) -> np.ndarray:
    """(n, n) symmetric matrix with zero diagonal whose strict upper triangle (row-major) is `upper`."""
    full = np.zeros((n, n), dtype=dtype)
    rows, columns = np.triu_indices(n, k=1)
    full[rows, columns] = upper
    full[columns, rows] = upper
    return full


def _orthogonal_complement(basis: np.ndarray) -> np.ndarray:
    """(n, n - k) orthonormal basis of the complement in R^n of the span of an (n, k) orthonormal basis."""
    complete, _ = np.linalg.qr(basis, mode="complete")
    return complete[:, basis.shape[1]:]


def _null_svcca(X, Y, device, variance: float = 0.99, components: int | None = None):
    _check_svcca_options(variance, components)
    basis_x = _svcca_basis(X, variance, components, "X")
    basis_y = _svcca_basis(Y, variance, components, "Y")
    n, kept_x, kept_y = X.shape[0], basis_x.shape[1], basis_y.shape[1]
    n_canonical = min(kept_x, kept_y)
    # The complements of two subspaces of R^n have the same nontrivial principal angles, and
    # dim(U & V) - dim(U' & V') = k_x + k_y - n (CS decomposition), so exactly
    #   ||U^T P V||_* = ||U'^T P V'||_* + k_x + k_y - n.
    # With few pairs and many kept components (SVCCA's overfitting regime: k near n) the
    # complements are far narrower, and each permutation costs (n - k)^2 n instead of k^2 n.
    if (n - kept_x) * (n - kept_y) < kept_x * kept_y:
        nuclear = _prepare_permuted_nuclear_norms(_orthogonal_complement(basis_x), _orthogonal_complement(basis_y),
                                                  device)
        offset = kept_x + kept_y - n
    else:
        nuclear = _prepare_permuted_nuclear_norms(basis_x, basis_y, device)
        offset = 0
    # The nuclear norm sums canonical correlations; each is <= 1, so clip rounding overshoot of the mean.
    return lambda permutations: np.minimum((nuclear(permutations) + offset) / n_canonical, 1.0)


def _null_heldout_svcca(X, Y, device, components: int | None = None, folds: int = 5, fold_seed: int = 0):
    # Its null shuffles pairs within folds only (a valid randomization: the split is drawn independently
    # of the data), which keeps every fit set's SVDs; `within_fold_permutation` maps each global draw.
    _check_heldout_options(components, folds)
    if _too_few_to_hold_out(X.shape[0], components, folds):
        return lambda permutations: np.full(len(permutations), np.nan)
    model = _HeldoutSvcca(X, Y, components, folds, fold_seed)
    return lambda permutations: model.evaluate(
        np.stack([within_fold_permutation(permutation, model.labels) for permutation in permutations]))[0]


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


def _null_linear_cka(X, Y, device, debiased: bool = False):
    n = X.shape[0]
    X, Y = _center_columns(X), _center_columns(Y)
    gram_x, gram_y = X @ X.T, Y @ Y.T
    if not debiased:
        scale = np.linalg.norm(gram_x) * np.linalg.norm(gram_y)
        if scale == 0:
            raise UserError("X or Y has no variance across its rows (all rows equal); CKA is undefined")
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


def _null_mutual_knn(X, Y, device, k: int = 10):
    n = X.shape[0]
    _check_k(k, n)
    k = int(k)
    neighbours_x = _cosine_neighbours(X, k, "X")
    neighbours_y = _cosine_neighbours(Y, k, "Y")

    def evaluate(permutations: np.ndarray) -> np.ndarray:
        values = np.empty(len(permutations))
        inverse = np.empty(n, dtype=np.int64)
        for index, permutation in enumerate(permutations):
            # Row i of P Y is Y[p_i]: its neighbours are Y's neighbours of p_i, renamed by p^-1.
            inverse[permutation] = np.arange(n)
            permuted_neighbours = inverse[neighbours_y[permutation]]
            values[index] = _count_shared_neighbours(neighbours_x, permuted_neighbours) / (n * k)
        return values

    return evaluate


def _null_procrustes(X, Y, device):
    nuclear = _prepare_permuted_nuclear_norms(_procrustes_scores(X, "X"), _procrustes_scores(Y, "Y"), device)
    return lambda permutations: np.minimum(nuclear(permutations), 1.0)


# ----------------------------------------------------------------------------------------------
# Registry and dispatch
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A similarity measure and its declared properties (ReSi style); calling it calls `function`."""

    name: str
    """Key in `METRICS`."""
    function: Callable[..., float]
    """`function(X, Y, **options) -> float`."""
    prepare_null: Callable
    """`prepare_null(X, Y, device, **options)` -> evaluator of the metric on (m, n) row permutations of Y."""
    invariances: Mapping[str, Mapping[str, object]]
    """Transforms of one side (names from `INVARIANCES`) that leave the score unchanged, each with the
    options it needs (empty mapping: always)."""
    symmetric: bool
    """f(X, Y) == f(Y, X)."""
    larger_is_more_similar: bool = True
    """Every registered metric grows with similarity."""
    description: str = ""
    """One line for reports."""
    options: tuple[str, ...] = field(init=False)
    """Keyword options `function` accepts besides X and Y."""

    def __post_init__(self) -> None:
        parameters = list(inspect.signature(self.function).parameters)[2:]
        object.__setattr__(self, "options", tuple(parameters))

    def __call__(self, X, Y, **options) -> float:
        return self.function(X, Y, **options)


_ALWAYS: Mapping[str, object] = {}
# Rotations, reflections, scale, translation and column order of one side: what the
# centred, rotation-invariant metrics ignore.
_RIGID_MOTIONS = {"orthogonal_transform": _ALWAYS, "isotropic_scaling": _ALWAYS, "translation": _ALWAYS,
                  "column_permutation": _ALWAYS}

METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            "svcca", svcca, _null_svcca,
            invariances={**_RIGID_MOTIONS, "invertible_linear_transform": {"variance": 1.0}},
            symmetric=True,
            description="mean canonical correlation after SVD reduction (components=1: the paper's numbers)",
        ),
        Metric(
            "heldout_svcca", heldout_svcca, _null_heldout_svcca,
            invariances=_RIGID_MOTIONS,
            symmetric=True,
            description="mean canonical correlation on held-out pairs (components chosen on the fit folds)",
        ),
        Metric(
            "rsa", rsa, _null_rsa,
            invariances={"isotropic_scaling": _ALWAYS, "column_permutation": _ALWAYS},
            symmetric=True,
            description="Spearman correlation of the row-correlation matrices",
        ),
        Metric(
            "linear_cka", linear_cka, _null_linear_cka,
            invariances=_RIGID_MOTIONS,
            symmetric=True,
            description="linear centered kernel alignment",
        ),
        Metric(
            "debiased_cka", debiased_cka, _null_debiased_cka,
            invariances=_RIGID_MOTIONS,
            symmetric=True,
            description="linear CKA with the unbiased HSIC estimator (Song et al. 2012)",
        ),
        Metric(
            "mutual_knn", mutual_knn, _null_mutual_knn,
            invariances={"orthogonal_transform": _ALWAYS, "isotropic_scaling": _ALWAYS,
                         "column_permutation": _ALWAYS},
            symmetric=True,
            description="mean shared fraction of k cosine nearest neighbours",
        ),
        Metric(
            "procrustes", procrustes, _null_procrustes,
            invariances=_RIGID_MOTIONS,
            symmetric=True,
            description="nuclear norm of X^T Y after centering and unit Frobenius norm (1 - d^2/2)",
        ),
    )
}


def _metric(name: str) -> Metric:
    if name not in METRICS:
        raise UserError(f"unknown similarity metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[name]


def _options_for(metric: Metric, options: Mapping[str, object]) -> dict[str, object]:
    return {key: value for key, value in options.items() if key in metric.options}


def _route_options(names: Sequence[str], options: Mapping[str, object]) -> None:
    """Fail on an option no requested metric accepts (a typo would otherwise be ignored silently)."""
    accepted = {option for name in names for option in _metric(name).options}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UserError(
            f"option {unknown[0]!r} is not accepted by metrics {', '.join(names)}; "
            f"accepted: {', '.join(sorted(accepted)) or 'none'}"
        )


def compute_metric(name: str, X, Y, **options) -> float:
    """`METRICS[name](X, Y, **options)`: one similarity score of two (n, d) matched matrices."""
    return _metric(name)(X, Y, **options)


# ----------------------------------------------------------------------------------------------
# Permutation null
# ----------------------------------------------------------------------------------------------


def _permutation_blocks(n_pairs: int, n_permutations: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of rows of `draw_permutations(n_pairs, n_permutations, seed)`, drawn lazily."""
    generator = np.random.default_rng(seed)
    for start in range(0, n_permutations, _PERMUTATION_BLOCK):
        size = min(_PERMUTATION_BLOCK, n_permutations - start)
        yield np.stack([generator.permutation(n_pairs) for _ in range(size)])


def draw_permutations(n_pairs: int, n_permutations: int, seed: int = 0) -> np.ndarray:
    """The (n_permutations, n_pairs) row permutations of Y that `permutation_test` uses for this seed.

    Permutation j is the j-th `numpy.random.default_rng(seed).permutation(n_pairs)`;
    every metric of one call sees the same permutations.
    """
    if n_permutations < 1:
        raise UserError(f"n_permutations must be at least 1, got {n_permutations}")
    return np.concatenate(list(_permutation_blocks(n_pairs, n_permutations, seed)))


def permutation_null(metric: str, X, Y, n_permutations: int = 1000, seed: int = 0,
                     permutations: np.ndarray | None = None, device: str | torch.device | None = None,
                     **options) -> np.ndarray:
    """Metric values with the rows of Y shuffled against X, one per permutation.

    Decompositions a row permutation leaves unchanged are computed once, so this
    equals `[compute_metric(metric, X, Y[p], **options) for p in permutations]`
    to float tolerance, much faster.

    Args:
        metric: a key of `METRICS`.
        X: (n, d_a), Y: (n, d_b) matched matrices.
        n_permutations, seed: draw `draw_permutations(n, n_permutations, seed)`.
        permutations: (m, n) explicit row permutations instead (then n_permutations/seed are ignored).
        device: torch device for every kernel; default CUDA when present, else CPU with numpy
            for every kernel (torch is then never imported).
        **options: the metric's keyword options.
    Returns:
        (m,) float64 null values.
    """
    entry = _metric(metric)
    _route_options([metric], options)
    X, Y = _check_pair(X, Y)
    device = kernel_device(device)
    evaluate = entry.prepare_null(X, Y, device, **options)
    n = X.shape[0]
    if permutations is None:
        if n_permutations < 1:
            raise UserError(f"n_permutations must be at least 1, got {n_permutations}")
        blocks = _permutation_blocks(n, n_permutations, seed)
    else:
        permutations = np.asarray(permutations, dtype=np.int64)
        if permutations.ndim != 2 or permutations.shape[1] != n:
            raise UserError(f"permutations must have shape (m, {n}), got {permutations.shape}")
        blocks = (permutations[start : start + _PERMUTATION_BLOCK]
                  for start in range(0, len(permutations), _PERMUTATION_BLOCK))
    return np.concatenate([evaluate(block) for block in blocks])


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """One-sided p = (1 + #{null >= observed}) / (1 + len(null)); never 0.

    A null value within 1e-12 (relative) below `observed` counts as a tie, so a
    value that equals the observed one up to rounding is never counted as smaller.
    """
    null = np.asarray(null, dtype=np.float64)
    if math.isnan(observed):
        return float("nan")
    tolerance = 1e-12 * max(1.0, abs(observed))
    return float((1 + np.count_nonzero(null >= observed - tolerance)) / (1 + null.size))


def permutation_test(X, Y, metrics: Sequence[str] = ("svcca", "rsa"), n_permutations: int = 1000,
                     seed: int = 0, device: str | torch.device | None = None, **metric_options) -> pd.DataFrame:
    """Pairing null for each metric: how the matched pairing compares with random pairings.

    Args:
        X: (n, d_a), Y: (n, d_b) matched matrices, row i of each is pair i.
        metrics: keys of `METRICS`.
        n_permutations: random pairings (row shuffles of Y), the same ones for every metric.
        seed: seed of `draw_permutations`.
        device: torch device for the kernels (see `permutation_null`).
        **metric_options: keyword options, each passed to the metrics that accept it
            (e.g. variance=, components= for svcca; k= for mutual_knn).
    Returns:
        One row per metric with columns metric, observed, null_mean, null_std (ddof=1),
        z = (observed - null_mean) / null_std, p (see `permutation_p_value`),
        n_pairs, n_permutations.
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in names:
        _metric(name)
    _route_options(names, metric_options)
    X, Y = _check_pair(X, Y)
    rows = []
    for name in names:
        options = _options_for(METRICS[name], metric_options)
        observed = compute_metric(name, X, Y, **options)
        null = permutation_null(name, X, Y, n_permutations=n_permutations, seed=seed, device=device, **options)
        null_mean = float(np.mean(null))
        null_std = float(np.std(null, ddof=1)) if null.size > 1 else float("nan")
        z = (observed - null_mean) / null_std if null_std > 0 else float("nan")
        rows.append({"metric": name, "observed": observed, "null_mean": null_mean, "null_std": null_std,
                     "z": z, "p": permutation_p_value(observed, null), "n_pairs": X.shape[0],
                     "n_permutations": int(null.size)})
    return pd.DataFrame(rows, columns=["metric", "observed", "null_mean", "null_std", "z", "p",
                                       "n_pairs", "n_permutations"])


# ----------------------------------------------------------------------------------------------
# Controls
# ----------------------------------------------------------------------------------------------


def random_subset_baseline(W_dec_a, W_dec_b, n: int, metrics: Sequence[str] = ("svcca", "rsa"),
                           n_draws: int = 10, seed: int = 0, **metric_options) -> pd.DataFrame:
    """The paper's baseline: the metrics on n randomly chosen, unmatched features of each SAE.

    Draw j takes `rng.choice(n_features_a, n, replace=False)` then the same for B, from
    `numpy.random.default_rng(seed)`, and pairs the two row lists in the order drawn.

    Args:
        W_dec_a: (n_features_a, d_a) decoder directions of SAE A; W_dec_b likewise.
        n: features per draw (use the number of matched pairs for a like-for-like control).
        metrics: keys of `METRICS`; metric_options as in `permutation_test`.
        n_draws: number of random draws.
    Returns:
        Long table with columns draw, metric, value (n_draws * len(metrics) rows);
        summarize with `.groupby("metric")["value"].agg(["mean", "std"])`.
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in names:
        _metric(name)
    _route_options(names, metric_options)
    W_dec_a, W_dec_b = _as_matrix(W_dec_a, "W_dec_a"), _as_matrix(W_dec_b, "W_dec_b")
    if not 2 <= n <= min(len(W_dec_a), len(W_dec_b)):
        raise UserError(f"random subset size n={n} must be in [2, {min(len(W_dec_a), len(W_dec_b))}] "
                        "(the smaller SAE's feature count)")
    generator = np.random.default_rng(seed)
    rows = []
    for draw in range(n_draws):
        rows_a = generator.choice(len(W_dec_a), n, replace=False)
        rows_b = generator.choice(len(W_dec_b), n, replace=False)
        for name in names:
            value = compute_metric(name, W_dec_a[rows_a], W_dec_b[rows_b],
                                   **_options_for(METRICS[name], metric_options))
            rows.append({"draw": draw, "metric": name, "value": value})
    return pd.DataFrame(rows, columns=["draw", "metric", "value"])


def bootstrap_interval(metric: str, X, Y, draws: int = 200, level: float = 0.95, seed: int = 0,
                       observed: float | None = None, **options) -> tuple[float, float]:
    """Interval of a metric's observed score over resamplings of the matched pairs.

    Each draw scores a random half of the pairs, drawn without replacement: with
    replacement, a duplicated pair would become its own nearest neighbour (mutual kNN),
    its own correlate (RSA) and leak from the fit folds into the held-out ones (held-out
    SVCCA). For a smooth statistic the spread of half-sample values equals the spread of
    the full-sample value (the delete-n/2 jackknife, Shao and Wu 1989), so the interval is
    the observed score plus the (1 - level)/2 and (1 + level)/2 quantiles of the
    half-sample values' deviations from their mean.

    Args:
        metric: a key of `METRICS`; X (n, d_a), Y (n, d_b) matched matrices, n >= 8.
        draws: half-samples; level: coverage in (0, 1); seed: of the draws.
        observed: the full-sample score if already computed.
        **options: the metric's keyword options.
    Returns:
        (low, high); NaN when the pairs are too few or the metric is undefined on the halves.
    """
    entry = _metric(metric)
    _route_options([metric], options)
    if not 0 < level < 1:
        raise UserError(f"bootstrap level must be in (0, 1), got {level}")
    if draws < 2:
        raise UserError(f"bootstrap draws must be at least 2, got {draws}")
    X, Y = _check_pair(X, Y)
    n = X.shape[0]
    half = n // 2
    if half < 4:
        return float("nan"), float("nan")
    if observed is None:
        observed = entry(X, Y, **options)
    options = dict(options)
    if "k" in options:  # mutual_knn's k must stay below the half-sample's size
        options["k"] = max(1, min(int(options["k"]), half - 1))
    generator = np.random.default_rng(seed)
    values = np.empty(draws)
    for draw in range(draws):
        rows = np.sort(generator.choice(n, half, replace=False))
        try:
            values[draw] = entry(X[rows], Y[rows], **options)
        except UserError:  # e.g. a half with too few pairs for the nested SVCCA choice
            values[draw] = np.nan
    values = values[np.isfinite(values)]
    if values.size < max(2, draws // 2) or not np.isfinite(observed):
        return float("nan"), float("nan")
    deviations = values - values.mean()
    tail = (1 - level) / 2
    return float(observed + np.quantile(deviations, tail)), float(observed + np.quantile(deviations, 1 - tail))


P_ADJUSTMENTS = ("holm", "bh")


def adjust_p_values(p_values, method: str = "holm") -> np.ndarray:
    """p-values adjusted for testing them together; NaN entries are not part of the family.

    holm: Holm's step-down (controls the family-wise error rate); bh: Benjamini-Hochberg
    (controls the false discovery rate). Both are monotone in the raw p and capped at 1.

    Args:
        p_values: (m,) raw p-values (NaN for untested cells).
        method: "holm" or "bh".
    Returns:
        (m,) adjusted p-values, NaN where the input is NaN.
    """
    if method not in P_ADJUSTMENTS:
        raise UserError(f"unknown p-value adjustment {method!r}; choose from {', '.join(P_ADJUSTMENTS)}")
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p_values.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p_values))
    m = tested.size
    if m == 0:
        return adjusted
    order = tested[np.argsort(p_values[tested], kind="stable")]
    ordered = p_values[order]
    if method == "holm":
        # The i-th smallest (from 0) is multiplied by m - i; running maximum keeps the order.
        stepped = np.maximum.accumulate(ordered * (m - np.arange(m)))
    else:
        # The i-th smallest (from 1) times m / i; running minimum from the largest down.
        stepped = np.minimum.accumulate((ordered * m / np.arange(1, m + 1))[::-1])[::-1]
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def normalized_score(observed, null_mean, ceiling=None, ceiling_null_mean=None):
    """(observed - null_mean) / (ceiling - ceiling_null_mean): 0 at chance, 1 at the same-model ceiling.

    The ceiling is the seed-to-seed score of one model and layer; its own pairing
    null (`ceiling_null_mean`) is what "chance" means for it. Raw values of a metric
    at chance depend on the number of pairs and on the spaces (linear CKA of random
    pairings of decoder rows is about 0.5 here), so subtracting the cross-model null
    from the ceiling would mix two chance levels; with `ceiling_null_mean` None it
    is `null_mean`, the literal METHOD.md formula. Works on scalars or arrays
    (broadcast). NaN where the ceiling is missing (None or NaN) or at its chance level.
    """
    observed = np.asarray(observed, dtype=np.float64)
    null_mean = np.asarray(null_mean, dtype=np.float64)
    ceiling = np.asarray(np.nan if ceiling is None else ceiling, dtype=np.float64)
    ceiling_null_mean = null_mean if ceiling_null_mean is None else np.asarray(ceiling_null_mean, dtype=np.float64)
    span = ceiling - ceiling_null_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(np.isfinite(span) & (span != 0), (observed - null_mean) / span, np.nan)
    return float(score) if score.ndim == 0 else score
