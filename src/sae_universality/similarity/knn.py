"""Mutual k-nearest-neighbour alignment and its permutation null."""

from __future__ import annotations

import numpy as np

from .base import _check_pair


def _cosine_neighbours(matrix: np.ndarray, k: int, name: str) -> np.ndarray:
    """(n, k) indices of each row's k most cosine-similar other rows (order within a row unspecified)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"row {int(np.flatnonzero(norms[:, 0] == 0)[0])} of {name} is all zeros; cosine is undefined")
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
    message = f"mutual_knn k must be an integer in [1, n - 1] = [1, {n - 1}], got {k!r}"
    if isinstance(k, bool):
        raise TypeError(message)
    if int(k) != k or not 1 <= k < n:
        raise ValueError(message)


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

