"""Orthogonal Procrustes similarity and its permutation null."""

from __future__ import annotations

import numpy as np

from .base import _center_columns, _check_pair
from .kernels import _prepare_permuted_nuclear_norms


def _nuclear_norm(matrix: np.ndarray) -> float:
    return float(np.linalg.svd(matrix, compute_uv=False).sum())


def _centered_unit_frobenius(matrix: np.ndarray, name: str) -> np.ndarray:
    centered = _center_columns(matrix)
    norm = np.linalg.norm(centered)
    if norm == 0:
        raise ValueError(f"{name} has no variance across its rows (all rows equal); Procrustes is undefined")
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


def _null_procrustes(X, Y, device):
    nuclear = _prepare_permuted_nuclear_norms(_procrustes_scores(X, "X"), _procrustes_scores(Y, "Y"), device)
    return lambda permutations: np.minimum(nuclear(permutations), 1.0)
