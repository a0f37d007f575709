"""Pearson correlation of every A feature with every B feature, from streamed sums (steps 1 and 2).

Sparse codes are multiplied as sparse x sparse, so the cost follows the
nonzeros; every sum is accumulated in float64 (see the package docstring for
why). `best_matches` keeps, per B feature, its most correlated A features
without holding the whole F_A x F_B matrix when `feature_block` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg import blas

from ..devices import kernel_device

SPARSE_CHUNK_ROWS = 4096  # rows per chunk for sparse inputs: about 4096 k^2 products
DENSE_CHUNK_VALUES = 2**24  # values per dense float64 chunk and side: 128 MiB
PAIR_BUDGET = 2**23  # products per sparse x sparse step: bounds the transient memory
ROWS_PER_FINALIZE_STEP = 256  # B features per step when turning sums into correlations

Block = Any  # one chunk of one side: numpy array (rows, F) or scipy.sparse matrix


# ---------------------------------------------------------------------------
# Streamed moments
# ---------------------------------------------------------------------------


@dataclass
class FeatureStats:
    """Per-feature sums over all positions of one side.

    Fields are (F,) float64 arrays: `total` = sum x, `total_sq` = sum x^2,
    `minimum` and `maximum` over all positions (implicit zeros of sparse
    chunks included). `n_positions` counts rows.
    """

    n_positions: int
    total: np.ndarray
    total_sq: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray

    @classmethod
    def empty(cls, n_features: int) -> "FeatureStats":
        return cls(
            0,
            np.zeros(n_features),
            np.zeros(n_features),
            np.full(n_features, np.inf),
            np.full(n_features, -np.inf),
        )

    @property
    def centered_sq(self) -> np.ndarray:
        """(F,) sum of squared deviations from the mean, n * variance."""
        return self.total_sq - self.total**2 / self.n_positions

    @property
    def alive(self) -> np.ndarray:
        """(F,) bool: the feature takes at least two different values."""
        return (self.minimum < self.maximum) & (self.centered_sq > 0)

    @property
    def dead(self) -> np.ndarray:
        """(F,) bool: the feature is 0 at every position."""
        return (self.minimum == 0) & (self.maximum == 0)

    @property
    def constant(self) -> np.ndarray:
        """(F,) bool: one nonzero value everywhere (zero variance but not dead)."""
        return ~self.alive & ~self.dead

    def update(self, block: Block) -> None:
        """Add one chunk (rows, F) of float64 values (canonical CSR or ndarray)."""
        n_rows, n_features = block.shape
        if sp.issparse(block):
            counts = np.bincount(block.indices, minlength=n_features)
            self.total += np.bincount(block.indices, weights=block.data, minlength=n_features)
            self.total_sq += np.bincount(block.indices, weights=block.data**2, minlength=n_features)
            np.minimum.at(self.minimum, block.indices, block.data)
            np.maximum.at(self.maximum, block.indices, block.data)
            # a column with fewer stored entries than rows also holds zeros
            has_zero = counts < n_rows
            self.minimum[has_zero] = np.minimum(self.minimum[has_zero], 0.0)
            self.maximum[has_zero] = np.maximum(self.maximum[has_zero], 0.0)
        elif n_rows:
            self.total += block.sum(axis=0)
            self.total_sq += np.einsum("ij,ij->j", block, block)
            np.minimum(self.minimum, block.min(axis=0), out=self.minimum)
            np.maximum(self.maximum, block.max(axis=0), out=self.maximum)
        self.n_positions += n_rows


# ---------------------------------------------------------------------------
# Input handling: matrices or iterables of aligned chunk pairs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _PairSource:
    """`open()` starts a pass over the aligned (block_a, block_b) chunks."""

    open: Callable[[], Iterator[tuple[Block, Block]]]


def _as_code_matrix(acts: Any, name: str) -> Any:
    """A (positions, features) block as given: numpy stays numpy, scipy.sparse becomes CSR (no copy to dense)."""
    if sp.issparse(acts):
        if acts.ndim != 2:
            raise ValueError(f"{name} must be 2-D (positions x features); got shape {acts.shape}")
        return acts.tocsr()
    if isinstance(acts, np.ndarray):
        if acts.ndim != 2:
            raise ValueError(f"{name} must be 2-D (positions x features); got shape {acts.shape}")
        return acts
    raise TypeError(f"{name} must be a numpy array or scipy.sparse matrix; got {type(acts).__name__}")


def _default_chunk_rows(width_a: int, width_b: int, sparse: bool) -> int:
    if sparse:
        return SPARSE_CHUNK_ROWS
    return int(np.clip(DENSE_CHUNK_VALUES // max(width_a, width_b, 1), 16, SPARSE_CHUNK_ROWS))


def _pair_source(acts_a: Any, acts_b: Any, chunk_rows: int | None) -> _PairSource:
    """Normalize the accepted inputs to a factory of (block_a, block_b) iterators."""
    if acts_b is not None:
        matrix_a = _as_code_matrix(acts_a, "acts_a")
        matrix_b = _as_code_matrix(acts_b, "acts_b")
        if matrix_a.shape[0] != matrix_b.shape[0]:
            raise ValueError(
                f"acts_a has {matrix_a.shape[0]} rows but acts_b has {matrix_b.shape[0]}: "
                "rows must be the same aligned positions"
            )
        both_sparse = sp.issparse(matrix_a) and sp.issparse(matrix_b)
        rows = chunk_rows or _default_chunk_rows(matrix_a.shape[1], matrix_b.shape[1], both_sparse)

        def open_matrices() -> Iterator[tuple[Block, Block]]:
            for start in range(0, max(matrix_a.shape[0], 1), rows):
                yield matrix_a[start : start + rows], matrix_b[start : start + rows]

        return _PairSource(open_matrices)
    if isinstance(acts_a, np.ndarray) or sp.issparse(acts_a):
        raise ValueError("acts_b is missing: pass two matrices, or one iterable of (block_a, block_b) pairs")
    if callable(acts_a):
        return _PairSource(lambda: iter(acts_a()))
    try:
        iterator = iter(acts_a)
    except TypeError:
        raise ValueError(
            f"acts_a must be a matrix or an iterable of (block_a, block_b) pairs; got {type(acts_a).__name__}"
        ) from None
    if iterator is not acts_a:
        return _PairSource(lambda: iter(acts_a))
    opened = []

    def open_once() -> Iterator[tuple[Block, Block]]:
        if opened:
            raise ValueError(
                "the chunk iterator was already consumed: with feature_block, pass a list of chunks "
                "or a function that returns a fresh iterator"
            )
        opened.append(True)
        return acts_a

    return _PairSource(open_once)


def _to_float64(block: Block, name: str) -> Block:
    """Copy a chunk to float64: canonical CSR (duplicates summed) or a C-ordered ndarray."""
    if sp.issparse(block):
        csr = sp.csr_array(block, dtype=np.float64, copy=True)
        csr.sum_duplicates()
        values = csr.data
    else:
        csr = np.ascontiguousarray(block, dtype=np.float64)
        if csr.ndim != 2:
            raise ValueError(f"every {name} chunk must be 2-D (positions x features); got shape {csr.shape}")
        values = csr
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values; fix the activations before matching")
    return csr


def _checked_pairs(source: _PairSource) -> Iterator[tuple[Block, Block]]:
    """Yield float64 chunk pairs after checking rows and widths agree."""
    widths: tuple[int, int] | None = None
    for item in source.open():
        try:
            raw_a, raw_b = item
        except (TypeError, ValueError):
            raise TypeError("each chunk must be a pair (block_a, block_b) of aligned rows") from None
        block_a, block_b = _to_float64(raw_a, "acts_a"), _to_float64(raw_b, "acts_b")
        if block_a.shape[0] != block_b.shape[0]:
            raise ValueError(
                f"a chunk pair has {block_a.shape[0]} rows of A but {block_b.shape[0]} of B: chunks must be aligned"
            )
        shape = (block_a.shape[1], block_b.shape[1])
        if widths is None:
            widths = shape
        elif widths != shape:
            raise ValueError(f"chunk widths changed from {widths} to {shape}: every chunk must hold all features")
        yield block_a, block_b
    if widths is None:
        raise ValueError("no chunks were given: nothing to correlate")


def _split_by_pair_budget(block_a: Block, block_b: Block) -> Iterator[tuple[Block, Block]]:
    """Cut a sparse chunk pair into row ranges of at most PAIR_BUDGET products."""
    if not (sp.issparse(block_a) and sp.issparse(block_b)):
        yield block_a, block_b
        return
    products = np.diff(block_a.indptr) * np.diff(block_b.indptr)
    if products.sum() <= PAIR_BUDGET:
        yield block_a, block_b
        return
    cumulative = np.cumsum(products)
    start = 0
    while start < len(products):
        done_before = cumulative[start - 1] if start else 0
        stop = max(int(np.searchsorted(cumulative, done_before + PAIR_BUDGET, side="right")), start + 1)
        yield block_a[start:stop], block_b[start:stop]
        start = stop


# ---------------------------------------------------------------------------
# Cross-product accumulation (B-major: cross[j, i] = sum over rows of b_j a_i)
# ---------------------------------------------------------------------------


def _add_cross_numpy(cross: np.ndarray, block_b: Block, block_a: Block) -> None:
    """cross (F_B, F_blk) += block_b^T block_a, in place."""
    if sp.issparse(block_b) and sp.issparse(block_a):
        product = block_b.T.tocsr() @ block_a  # sparse x sparse: work follows the nonzeros
        rows = np.repeat(np.arange(product.shape[0], dtype=np.int64) * cross.shape[1], np.diff(product.indptr))
        np.add.at(cross.reshape(-1), rows + product.indices, product.data)
    elif sp.issparse(block_b):
        cross += block_b.T @ block_a
    elif sp.issparse(block_a):
        cross += (block_a.T @ block_b).T
    elif block_a.shape[0]:
        # BLAS accumulates in place (beta=1): no F_B x F_A temporary
        blas.dgemm(1.0, block_a.T, block_b.T, beta=1.0, c=cross.T, trans_b=1, overwrite_c=1)


class _TorchCross:
    """The same accumulation on a torch device (CUDA when present)."""

    def __init__(self, shape: tuple[int, int], device: str):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.cross = torch.zeros(shape, dtype=torch.float64, device=self.device)

    def _csr_parts(self, block: Block):
        to = self.device
        torch = self.torch
        return (
            torch.from_numpy(block.indptr.astype(np.int64)).to(to),
            torch.from_numpy(block.indices.astype(np.int64)).to(to),
            torch.from_numpy(block.data).to(to),
        )

    def _coo_transposed(self, block: Block):
        coo = block.tocoo()
        indices = np.vstack([coo.col, coo.row]).astype(np.int64)
        return self.torch.sparse_coo_tensor(
            self.torch.from_numpy(indices),
            self.torch.from_numpy(coo.data),
            (block.shape[1], block.shape[0]),
            check_invariants=False,  # built from a valid scipy matrix
        ).to(self.device)

    def add(self, block_b: Block, block_a: Block) -> None:
        torch = self.torch
        if sp.issparse(block_b) and sp.issparse(block_a):
            # expand, per row, every (nonzero of b, nonzero of a) pair and scatter-add the products
            indptr_a, indices_a, data_a = self._csr_parts(block_a)
            indptr_b, indices_b, data_b = self._csr_parts(block_b)
            count_a, count_b = indptr_a.diff(), indptr_b.diff()
            pairs = count_a * count_b
            n_pairs = int(pairs.sum())
            if n_pairs == 0:
                return
            row = torch.repeat_interleave(torch.arange(len(pairs), device=self.device), pairs)
            local = torch.arange(n_pairs, device=self.device) - (torch.cumsum(pairs, 0) - pairs)[row]
            per_row_b = count_b[row]
            at_a = indptr_a[row] + torch.div(local, per_row_b, rounding_mode="floor")
            at_b = indptr_b[row] + local % per_row_b
            flat = indices_b[at_b] * self.cross.shape[1] + indices_a[at_a]
            # on CUDA the adds are atomic: summation order, hence the last bits, may vary between runs
            self.cross.view(-1).index_add_(0, flat, data_b[at_b] * data_a[at_a])
        elif sp.issparse(block_b):
            self.cross += torch.sparse.mm(self._coo_transposed(block_b), torch.from_numpy(block_a).to(self.device))
        elif sp.issparse(block_a):
            self.cross += torch.sparse.mm(self._coo_transposed(block_a), torch.from_numpy(block_b).to(self.device)).T
        else:
            b = torch.from_numpy(block_b).to(self.device)
            a = torch.from_numpy(block_a).to(self.device)
            self.cross.addmm_(b.T, a)

    def result(self) -> np.ndarray:
        return self.cross.cpu().numpy()


@dataclass
class _PassResult:
    stats_a: FeatureStats
    stats_b: FeatureStats
    cross: np.ndarray  # (F_B, a_stop - a_start) float64: sum of b_j a_i


def _accumulate_pass(source: _PairSource, a_start: int, a_stop: int | None, device: str | None) -> _PassResult:
    """One pass over the chunks: full moments of both sides, cross sums for A features [a_start, a_stop)."""
    stats_a = stats_b = None
    accumulator = None
    for block_a, block_b in _checked_pairs(source):
        if stats_a is None:
            stats_a, stats_b = FeatureStats.empty(block_a.shape[1]), FeatureStats.empty(block_b.shape[1])
            a_stop = block_a.shape[1] if a_stop is None else min(a_stop, block_a.shape[1])
            shape = (block_b.shape[1], a_stop - a_start)
            if device is None:
                accumulator = np.empty(shape)
                accumulator.fill(0.0)  # touch pages in order now, not at random during the scatter-add
            else:
                accumulator = _TorchCross(shape, device)
        stats_a.update(block_a)
        stats_b.update(block_b)
        block_a = block_a[:, a_start:a_stop] if (a_start, a_stop) != (0, block_a.shape[1]) else block_a
        for part_a, part_b in _split_by_pair_budget(block_a, block_b):
            if device is None:
                _add_cross_numpy(accumulator, part_b, part_a)
            else:
                accumulator.add(part_b, part_a)
    cross = accumulator if device is None else accumulator.result()
    return _PassResult(stats_a, stats_b, cross)


def _inverse_norms(stats: FeatureStats) -> np.ndarray:
    """(F,) 1 / sqrt(n var); NaN for zero-variance features."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(stats.alive, 1.0 / np.sqrt(np.maximum(stats.centered_sq, 0.0)), np.nan)


def _correlation_in_place(result: _PassResult, a_start: int) -> np.ndarray:
    """Turn cross sums (F_B, blk) into Pearson correlations, in place, step by step over B rows."""
    cross = result.cross
    n = result.stats_a.n_positions
    if n == 0:
        raise ValueError("the chunks hold no positions: nothing to correlate")
    total_a = result.stats_a.total[a_start : a_start + cross.shape[1]]
    mean_b = result.stats_b.total / n
    inverse_a = _inverse_norms(result.stats_a)[a_start : a_start + cross.shape[1]]
    inverse_b = _inverse_norms(result.stats_b)
    for start in range(0, cross.shape[0], ROWS_PER_FINALIZE_STEP):
        rows = slice(start, start + ROWS_PER_FINALIZE_STEP)
        step = cross[rows]
        step -= np.outer(mean_b[rows], total_a)  # sum ab - sum a sum b / n = n cov
        step *= inverse_b[rows, None]
        step *= inverse_a[None, :]
        np.clip(step, -1.0, 1.0, out=step)  # rounding can leave |r| a hair above 1; NaN stays NaN
    return cross


# ---------------------------------------------------------------------------
# Public correlation API
# ---------------------------------------------------------------------------


@dataclass
class CorrelationBlock:
    """Correlations of A features [a_start, a_stop) with all B features.

    `correlation` is (a_stop - a_start, F_B) float64 (a transposed view of the
    B-major accumulator), NaN where either feature has zero variance.
    """

    a_start: int
    a_stop: int
    correlation: np.ndarray
    stats_a: FeatureStats
    stats_b: FeatureStats


def correlation_blocks(
    acts_a: Any,
    acts_b: Any = None,
    *,
    feature_block: int | None = None,
    chunk_rows: int | None = None,
    device: str | None = None,
) -> Iterator[CorrelationBlock]:
    """Yield the correlation matrix in blocks of `feature_block` A features.

    Each block is one pass over the data holding an F_B x feature_block
    float64 accumulator, so memory is bounded by the block, not F_A x F_B.
    Inputs as in `pearson_correlation`; several blocks need inputs that can be
    read again (matrices, a list of chunk pairs, or a function returning a
    fresh iterator).
    """
    if feature_block is not None and (not isinstance(feature_block, int) or feature_block < 1):
        raise ValueError(f"feature_block must be a positive integer or None; got {feature_block!r}")
    source = _pair_source(acts_a, acts_b, chunk_rows)
    device = kernel_device(device)
    a_start = 0
    n_features_a = None
    while n_features_a is None or a_start < n_features_a:
        a_stop = None if feature_block is None else a_start + feature_block
        result = _accumulate_pass(source, a_start, a_stop, device)
        n_features_a = len(result.stats_a.total)
        correlation = _correlation_in_place(result, a_start)
        a_stop = a_start + correlation.shape[1]
        yield CorrelationBlock(a_start, a_stop, correlation.T, result.stats_a, result.stats_b)
        a_start = a_stop
        if n_features_a == 0:
            return


def pearson_correlation(
    acts_a: Any,
    acts_b: Any = None,
    dtype: Any = np.float32,
    device: str | None = None,
    *,
    chunk_rows: int | None = None,
) -> np.ndarray:
    """Exact Pearson correlation of every A feature with every B feature.

    Inputs: `acts_a` (N, F_A) and `acts_b` (N, F_B), numpy arrays or
    scipy.sparse matrices with aligned rows; or `acts_a` alone as an iterable
    of aligned (block_a, block_b) chunk pairs (each block numpy or sparse), or a
    function returning such an iterable. `device`: None uses CUDA when
    available and numpy/scipy otherwise; "numpy" forces numpy; any torch device
    string ("cpu", "cuda:0") accumulates with torch there.

    Returns (F_A, F_B) array of `dtype` (Fortran-ordered), NaN in the rows of
    A and columns of B features with zero variance. Sums are float64.
    """
    block = next(correlation_blocks(acts_a, acts_b, chunk_rows=chunk_rows, device=device))
    return block.correlation.astype(dtype, copy=False)


@dataclass
class BestMatches:
    """For each B feature, its `n_candidates` most correlated A features.

    candidates_a: (F_B, m) int64, best first, -1 where there is none (B feature
    dead, or fewer alive A features than m). candidate_correlations: (F_B, m)
    float64, NaN where candidates_a is -1. Ties go to the lowest A index.
    """

    candidates_a: np.ndarray
    candidate_correlations: np.ndarray
    stats_a: FeatureStats
    stats_b: FeatureStats
    n_positions: int | None  # None when built from a correlation matrix

    @property
    def best_a(self) -> np.ndarray:
        """(F_B,) most correlated A feature, -1 for none."""
        return self.candidates_a[:, 0]

    @property
    def best_correlation(self) -> np.ndarray:
        """(F_B,) its correlation, NaN for none."""
        return self.candidate_correlations[:, 0]


def _merge_top_candidates(
    best_index: np.ndarray, best_value: np.ndarray, block_ba: np.ndarray, a_start: int
) -> None:
    """Merge one block (F_B, blk) of correlations into the running top m per B row, in place.

    Running entries come first and hold lower A indices, so taking the first
    maximum (np.argmax) m times keeps ties at the lowest A index.
    """
    n_candidates = best_index.shape[1]
    for start in range(0, block_ba.shape[0], ROWS_PER_FINALIZE_STEP):
        rows = slice(start, start + ROWS_PER_FINALIZE_STEP)
        stacked = np.concatenate([best_value[rows], block_ba[rows]], axis=1)
        stacked[np.isnan(stacked)] = -np.inf
        previous_index = best_index[rows].copy()
        row_numbers = np.arange(stacked.shape[0])
        for rank in range(n_candidates):
            position = np.argmax(stacked, axis=1)
            value = stacked[row_numbers, position]
            index = np.where(
                position < n_candidates,
                previous_index[row_numbers, np.minimum(position, n_candidates - 1)],
                a_start + position - n_candidates,
            )
            best_value[rows, rank] = value
            best_index[rows, rank] = np.where(np.isneginf(value), -1, index)
            stacked[row_numbers, position] = -np.inf


def best_matches(
    acts_a: Any,
    acts_b: Any = None,
    *,
    n_candidates: int | None = 1,
    feature_block: int | None = None,
    chunk_rows: int | None = None,
    device: str | None = None,
) -> BestMatches:
    """Stream the most correlated A features of every B feature.

    Inputs as in `pearson_correlation`. `n_candidates` None keeps every A feature of each B feature (the
    whole matrix, for a rule that reads all of it: 16 bytes per entry). With `feature_block` only an
    F_B x feature_block block of correlations exists at a time (8 bytes per
    entry, plus buffers of 256 rows); without it the whole F_B x F_A matrix is
    one block. Returns `BestMatches` (see there).
    """
    _check_candidate_count(n_candidates)
    best_index = best_value = None
    stats_a = stats_b = None
    whole = []
    for block in correlation_blocks(
        acts_a, acts_b, feature_block=feature_block, chunk_rows=chunk_rows, device=device
    ):
        stats_a, stats_b = block.stats_a, block.stats_b
        if n_candidates is None:
            whole.append(np.array(block.correlation, dtype=np.float64))
            continue
        if best_index is None:
            n_features_b = block.correlation.shape[1]
            best_index = np.full((n_features_b, n_candidates), -1, dtype=np.int64)
            best_value = np.full((n_features_b, n_candidates), -np.inf)
        _merge_top_candidates(best_index, best_value, block.correlation.T, block.a_start)
    if n_candidates is None:
        best_index, best_value = _every_candidate(np.concatenate(whole, axis=0))
    best_value[best_index < 0] = np.nan
    return BestMatches(best_index, best_value, stats_a, stats_b, stats_a.n_positions)


def _check_candidate_count(n_candidates) -> None:
    if n_candidates is not None and (not isinstance(n_candidates, int) or n_candidates < 1):
        raise ValueError(f"n_candidates must be a positive integer or None (every A feature); got {n_candidates!r}")


def _every_candidate(correlation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every A feature of each B feature, best first (ties: lowest A index): the whole (F_A, F_B) matrix
    as (F_B, F_A) candidate indices and values, -1 / -inf where the correlation is NaN."""
    values = np.where(np.isnan(correlation.T), -np.inf, correlation.T)
    order = np.argsort(-values, axis=1, kind="stable")
    best_value = np.take_along_axis(values, order, axis=1)
    best_index = np.where(np.isneginf(best_value), -1, order).astype(np.int64)
    return best_index, best_value


def best_matches_from_correlation(correlation: np.ndarray, *, n_candidates: int | None = 1) -> BestMatches:
    """`BestMatches` from a precomputed (F_A, F_B) correlation matrix (NaN = no variance).

    The stats are stand-ins: a feature whose whole row/column is NaN counts as
    dead (dead and constant cannot be told apart from the matrix).
    """
    _check_candidate_count(n_candidates)
    correlation = np.asarray(correlation, dtype=np.float64)
    if correlation.ndim != 2:
        raise ValueError(f"correlation must be 2-D (F_A, F_B); got shape {correlation.shape}")
    n_features_a, n_features_b = correlation.shape
    if n_candidates is None:
        best_index, best_value = _every_candidate(correlation)
    else:
        best_index = np.full((n_features_b, n_candidates), -1, dtype=np.int64)
        best_value = np.full((n_features_b, n_candidates), -np.inf)
        _merge_top_candidates(best_index, best_value, np.ascontiguousarray(correlation.T), 0)
    best_value[best_index < 0] = np.nan

    def stand_in(alive: np.ndarray) -> FeatureStats:
        # two positions, values 0 and 1 for alive features, 0 and 0 for dead ones
        alive_float = alive.astype(np.float64)
        return FeatureStats(2, alive_float, alive_float, np.zeros(len(alive)), alive_float)

    alive_a = ~np.isnan(correlation).all(axis=1) if n_features_b else np.zeros(n_features_a, bool)
    alive_b = ~np.isnan(correlation).all(axis=0) if n_features_a else np.zeros(n_features_b, bool)
    return BestMatches(best_index, best_value, stand_in(alive_a), stand_in(alive_b), None)
