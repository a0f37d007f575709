"""Permutation kernels shared by several measures: quantities of P Y from decompositions made once.

Each `_prepare_*` returns an evaluator of (m, n) row permutations of Y; torch is imported
only when a device is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Rows of permutations drawn and evaluated together: bounds the memory of the permutation block.
_PERMUTATION_BLOCK = 64
# Rows of an n x n matrix gathered at once in the quadratic-form kernel: keeps the gather in cache.
_ROWS_PER_BLOCK = 128
# Bytes allowed for one batch of gathered bases in the nuclear-norm kernel.
_GATHER_BUDGET_BYTES = 256 * 2**20


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

