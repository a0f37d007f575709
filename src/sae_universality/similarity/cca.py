"""SVCCA and held-out SVCCA (canonical correlations of SVD-reduced spaces), with their permutation nulls."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .base import _center_columns, _check_pair, _check_positive_integer
from .kernels import _orthogonal_complement, _prepare_permuted_nuclear_norms

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
        raise ValueError(f"{name} has no variance across its rows (all rows equal); SVCCA is undefined")
    if components is not None:
        if components > min(matrix.shape):
            raise ValueError(
                f"components={components} exceeds min(rows, columns)={min(matrix.shape)} of {name}; use fewer"
            )
        kept = min(components, rank)
    else:
        energy = singular_values[:rank] ** 2
        cumulative = np.cumsum(energy) / energy.sum()
        # The tiny slack lets variance=1.0 reach the full rank despite rounding in the cumulative sum.
        kept = min(int(np.searchsorted(cumulative, variance - 1e-12, side="left")) + 1, rank)
    return left[:, :kept]


def _check_svcca_options(variance: float, components: int | None) -> None:
    _check_positive_integer(components, "svcca components", none_allowed=True)
    if not 0 < variance <= 1:
        raise ValueError(f"svcca variance must be in (0, 1], got {variance}")


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


def grouped_folds(groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """(n,) fold label of each row with every group's rows in one fold: `heldout_folds` over the groups.

    Rows of one group (the positions of one context window) share their context, so
    splitting them between fit and held-out folds would leak it into the measurement.
    """
    distinct, group_of_row = np.unique(np.asarray(groups), return_inverse=True)
    return heldout_folds(len(distinct), folds, seed)[group_of_row]


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
        raise ValueError(f"{name} has no variance across the fit rows of a fold; held-out SVCCA is undefined")
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

    def __init__(self, X: np.ndarray, Y: np.ndarray, components: int | None, folds: int, fold_seed: int,
                 groups: np.ndarray | None = None):
        n = X.shape[0]
        self.labels = heldout_folds(n, folds, fold_seed) if groups is None else grouped_folds(groups, folds, fold_seed)
        self.n_folds = int(self.labels.max()) + 1
        self.components = components
        if self.n_folds == 1:
            if components is None:
                raise ValueError("held-out SVCCA with one fold measures on its fit rows and cannot choose the "
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


def heldout_svcca(X, Y, components: int | None = None, folds: int = 5, fold_seed: int = 0,
                  groups: np.ndarray | None = None) -> float:
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
        groups: (n,) optional group of each row (e.g. its context window): whole groups are held out together
            (`grouped_folds`), so the folds need three groups each (NaN with too few); None splits the rows.
    Returns:
        Mean held-out canonical correlation in [-1, 1]; NaN when the pairs are too few to hold out
        (fewer than 9 for the nested choice, 6 with fixed components).
    """
    _check_heldout_options(components, folds)
    X, Y = _check_pair(X, Y, min_rows=3)
    units = X.shape[0] if groups is None else len(np.unique(np.asarray(groups)))
    if _too_few_to_hold_out(units, components, folds):
        return float("nan")
    return float(_HeldoutSvcca(X, Y, components, folds, fold_seed, groups).evaluate(np.arange(X.shape[0]))[0][0])


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

