"""Match SAE features of model A to features of model B by activation correlation.

Stage 5 of METHOD.md. Three steps, each a pure function of arrays:

1. Pearson correlation of every A feature with every B feature over aligned
   positions, from streamed sums (n, sum a, sum b, sum a^2, sum b^2, sum b a^T).
   Sparse codes (TopK SAEs: k of F latents per position) are multiplied as
   sparse x sparse, so the cost follows the nonzeros (about n k^2 products)
   instead of n F_A F_B for the dense product of z-scored columns.
2. Many-to-one: each B feature's most correlated A feature ("mean max
   correlation"), streamed over blocks of A features when the F_A x F_B
   matrix is too big to hold (`feature_block`).
3. Filters, cumulative, in this order: non-concept -> one-to-one -> threshold.

Precision: all sums, including the cross products, are accumulated in float64.
The raw-moment formula subtracts sum_a sum_b / n from sum ab; in float32 that
cancellation loses about 7 digits over 1e5 positions, in float64 the error
stays below 1e-10 for activations whose mean is within 1e4 standard deviations
of zero. The price is memory: the accumulator is F_B x F_A x 8 bytes
(16,384 x 16,384: 2 GiB; the float32 result adds 1 GiB).

Zero-variance features (dead: always 0; constant: one nonzero value) are found
exactly from the running minimum and maximum, get NaN in the raw correlation
matrix and no partner in the match table; they are counted in its attrs.

Ties are broken deterministically by the lowest feature index (best A for a B
feature; kept B feature for an A feature in one-to-one) and, for top
activations, by the lowest row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import blas
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from .devices import kernel_device
from .errors import UserError
from .tokens import is_junk_token, normalize_token

ONE_TO_ONE_RULES = ("highest", "first", "hungarian", None)
SPARSE_CHUNK_ROWS = 4096  # rows per chunk for sparse inputs: about 4096 k^2 products
DENSE_CHUNK_VALUES = 2**24  # values per dense float64 chunk and side: 128 MiB
PAIR_BUDGET = 2**23  # products per sparse x sparse step: bounds the transient memory
ROWS_PER_FINALIZE_STEP = 256  # B features per step when turning sums into correlations
JUNK_FRACTION = 0.5  # a feature is junk when MORE than this fraction of its top tokens are junk
N_TOP_TOKENS = 10

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


def _as_matrix(acts: Any, name: str) -> Any:
    if sp.issparse(acts):
        if acts.ndim != 2:
            raise UserError(f"{name} must be 2-D (positions x features); got shape {acts.shape}")
        return acts.tocsr()
    if isinstance(acts, np.ndarray):
        if acts.ndim != 2:
            raise UserError(f"{name} must be 2-D (positions x features); got shape {acts.shape}")
        return acts
    raise UserError(f"{name} must be a numpy array or scipy.sparse matrix; got {type(acts).__name__}")


def _default_chunk_rows(width_a: int, width_b: int, sparse: bool) -> int:
    if sparse:
        return SPARSE_CHUNK_ROWS
    return int(np.clip(DENSE_CHUNK_VALUES // max(width_a, width_b, 1), 16, SPARSE_CHUNK_ROWS))


def _pair_source(acts_a: Any, acts_b: Any, chunk_rows: int | None) -> _PairSource:
    """Normalize the accepted inputs to a factory of (block_a, block_b) iterators."""
    if acts_b is not None:
        matrix_a = _as_matrix(acts_a, "acts_a")
        matrix_b = _as_matrix(acts_b, "acts_b")
        if matrix_a.shape[0] != matrix_b.shape[0]:
            raise UserError(
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
        raise UserError("acts_b is missing: pass two matrices, or one iterable of (block_a, block_b) pairs")
    if callable(acts_a):
        return _PairSource(lambda: iter(acts_a()))
    try:
        iterator = iter(acts_a)
    except TypeError:
        raise UserError(
            f"acts_a must be a matrix or an iterable of (block_a, block_b) pairs; got {type(acts_a).__name__}"
        ) from None
    if iterator is not acts_a:
        return _PairSource(lambda: iter(acts_a))
    opened = []

    def open_once() -> Iterator[tuple[Block, Block]]:
        if opened:
            raise UserError(
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
            raise UserError(f"every {name} chunk must be 2-D (positions x features); got shape {csr.shape}")
        values = csr
    if not np.isfinite(values).all():
        raise UserError(f"{name} contains NaN or infinite values; fix the activations before matching")
    return csr


def _checked_pairs(source: _PairSource) -> Iterator[tuple[Block, Block]]:
    """Yield float64 chunk pairs after checking rows and widths agree."""
    widths: tuple[int, int] | None = None
    for item in source.open():
        try:
            raw_a, raw_b = item
        except (TypeError, ValueError):
            raise UserError("each chunk must be a pair (block_a, block_b) of aligned rows") from None
        block_a, block_b = _to_float64(raw_a, "acts_a"), _to_float64(raw_b, "acts_b")
        if block_a.shape[0] != block_b.shape[0]:
            raise UserError(
                f"a chunk pair has {block_a.shape[0]} rows of A but {block_b.shape[0]} of B: chunks must be aligned"
            )
        shape = (block_a.shape[1], block_b.shape[1])
        if widths is None:
            widths = shape
        elif widths != shape:
            raise UserError(f"chunk widths changed from {widths} to {shape}: every chunk must hold all features")
        yield block_a, block_b
    if widths is None:
        raise UserError("no chunks were given: nothing to correlate")


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
        raise UserError("the chunks hold no positions: nothing to correlate")
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
        raise UserError(f"feature_block must be a positive integer or None; got {feature_block!r}")
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
    n_candidates: int = 1,
    feature_block: int | None = None,
    chunk_rows: int | None = None,
    device: str | None = None,
) -> BestMatches:
    """Stream the most correlated A features of every B feature.

    Inputs as in `pearson_correlation`. With `feature_block` only an
    F_B x feature_block block of correlations exists at a time (8 bytes per
    entry, plus buffers of 256 rows); without it the whole F_B x F_A matrix is
    one block. Returns `BestMatches` (see there).
    """
    if not isinstance(n_candidates, int) or n_candidates < 1:
        raise UserError(f"n_candidates must be a positive integer; got {n_candidates!r}")
    best_index = best_value = None
    stats_a = stats_b = None
    for block in correlation_blocks(
        acts_a, acts_b, feature_block=feature_block, chunk_rows=chunk_rows, device=device
    ):
        if best_index is None:
            n_features_b = block.correlation.shape[1]
            best_index = np.full((n_features_b, n_candidates), -1, dtype=np.int64)
            best_value = np.full((n_features_b, n_candidates), -np.inf)
        _merge_top_candidates(best_index, best_value, block.correlation.T, block.a_start)
        stats_a, stats_b = block.stats_a, block.stats_b
    best_value[best_index < 0] = np.nan
    return BestMatches(best_index, best_value, stats_a, stats_b, stats_a.n_positions)


def best_matches_from_correlation(correlation: np.ndarray, *, n_candidates: int = 1) -> BestMatches:
    """`BestMatches` from a precomputed (F_A, F_B) correlation matrix (NaN = no variance).

    The stats are stand-ins: a feature whose whole row/column is NaN counts as
    dead (dead and constant cannot be told apart from the matrix).
    """
    if not isinstance(n_candidates, int) or n_candidates < 1:
        raise UserError(f"n_candidates must be a positive integer; got {n_candidates!r}")
    correlation = np.asarray(correlation, dtype=np.float64)
    if correlation.ndim != 2:
        raise UserError(f"correlation must be 2-D (F_A, F_B); got shape {correlation.shape}")
    n_features_a, n_features_b = correlation.shape
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


# ---------------------------------------------------------------------------
# Top activating positions
# ---------------------------------------------------------------------------


def _candidates_from_chunk(block: Block, n_top: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, features, values) worth considering from one chunk."""
    if sp.issparse(block):
        csr = sp.csr_array(block, copy=True)
        csr.sum_duplicates()
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        return rows, csr.indices.astype(np.int64), csr.data.astype(np.float64)
    dense = np.asarray(block, dtype=np.float64)
    if np.isnan(dense).any():
        raise UserError("the activations contain NaN; fix them before ranking top activations")
    if dense.shape[0] > n_top:
        # the n_top-th largest per column; everything below it cannot enter
        cutoff = np.partition(dense, dense.shape[0] - n_top, axis=0)[dense.shape[0] - n_top]
        rows, features = np.nonzero(dense >= cutoff)
    else:
        rows, features = np.nonzero(np.ones(dense.shape, dtype=bool))
    return rows, features, dense[rows, features]


def top_activations(chunks: Any, n_top: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The `n_top` largest activations of every feature, streamed over chunks.

    Input: an iterable of (rows, F) chunks (numpy or scipy.sparse; rows count
    on across chunks), or one matrix. Sparse chunks contribute only their
    stored entries (implicit zeros never enter); dense chunks all entries.
    Returns (indices, values), both (F, n_top), largest first: row numbers
    (int64, -1 where a feature has fewer than n_top entries) and values
    (float64, NaN there). Ties go to the lowest row.
    """
    if not isinstance(n_top, int) or n_top < 1:
        raise UserError(f"n_top must be a positive integer; got {n_top!r}")
    if isinstance(chunks, np.ndarray) or sp.issparse(chunks):
        matrix = _as_matrix(chunks, "chunks")
        chunks = (matrix[start : start + SPARSE_CHUNK_ROWS] for start in range(0, matrix.shape[0], SPARSE_CHUNK_ROWS))
    top_rows = top_values = None
    row_offset = 0
    for block in chunks:
        if block.ndim != 2:
            raise UserError(f"every chunk must be 2-D (positions x features); got shape {block.shape}")
        if top_rows is None:
            top_rows = np.full((block.shape[1], n_top), -1, dtype=np.int64)
            top_values = np.full((block.shape[1], n_top), -np.inf)
        elif block.shape[1] != top_rows.shape[0]:
            raise UserError(f"chunk width changed from {top_rows.shape[0]} to {block.shape[1]}")
        rows, features, values = _candidates_from_chunk(block, n_top)
        # strictly above the current n_top-th value: an equal later row loses the tie
        better = values > top_values[features, -1]
        rows, features, values = rows[better] + row_offset, features[better], values[better]
        row_offset += block.shape[0]
        if len(features) == 0:
            continue
        touched = np.unique(features)
        held = top_rows[touched] >= 0
        held_features = np.repeat(touched, n_top).reshape(len(touched), n_top)[held]
        all_features = np.concatenate([held_features, features])
        all_rows = np.concatenate([top_rows[touched][held], rows])
        all_values = np.concatenate([top_values[touched][held], values])
        order = np.lexsort((all_rows, -all_values, all_features))
        all_features, all_rows, all_values = all_features[order], all_rows[order], all_values[order]
        group_start = np.searchsorted(all_features, all_features, side="left")
        rank = np.arange(len(all_features)) - group_start
        keep = rank < n_top
        top_rows[touched] = -1
        top_values[touched] = -np.inf
        top_rows[all_features[keep], rank[keep]] = all_rows[keep]
        top_values[all_features[keep], rank[keep]] = all_values[keep]
    if top_rows is None:
        raise UserError("no chunks were given: nothing to rank")
    top_values[top_rows < 0] = np.nan
    return top_rows, top_values


def top_tokens(top_rows: np.ndarray, token_ids: np.ndarray, decode: Callable[[list[int]], str]) -> list[list[str]]:
    """Per feature, the decoded token of each of its top activating rows (-1 rows skipped).

    top_rows (F, n_top) from `top_activations`; token_ids (N,) the token of each row;
    decode: list of ids -> string. Each distinct token is decoded once.
    """
    token_ids = np.asarray(token_ids)
    top_rows = np.asarray(top_rows)
    if top_rows.size and top_rows.max() >= len(token_ids):
        raise UserError(f"top_rows refers to row {int(top_rows.max())} but token_ids has {len(token_ids)} rows")
    present = top_rows >= 0
    distinct = np.unique(token_ids[top_rows[present]]) if present.any() else np.array([], dtype=np.int64)
    strings = {int(token): decode([int(token)]) for token in distinct}
    return [[strings[int(token_ids[row])] for row in feature_rows[feature_rows >= 0]] for feature_rows in top_rows]


def top_examples(
    top_rows: np.ndarray,
    token_ids: np.ndarray,
    decode: Callable[[list[int]], str],
    *,
    group: np.ndarray | None = None,
    context_before: int = 8,
    context_after: int = 2,
) -> tuple[list[list[str]], list[list[str]]]:
    """Token strings and short contexts of top activating rows.

    Inputs: top_rows (F, n_top) row numbers from `top_activations` (-1 = none);
    token_ids (N,) token of each row, rows in text order; decode: list of ids
    -> string (a tokenizer's decode); group (N,) optional context id per row
    (doc_index or window_index): contexts never cross a change of group.
    Returns (tokens, contexts): per feature, a list of decoded tokens and a
    list of contexts with the activating token in double brackets.
    """
    tokens = top_tokens(top_rows, token_ids, decode)
    token_ids = np.asarray(token_ids)

    def same_group(row: int, other: int) -> bool:
        return group is None or group[other] == group[row]

    contexts = []
    for feature_rows, feature_tokens in zip(np.asarray(top_rows), tokens):
        feature_contexts = []
        for row, token in zip((int(r) for r in feature_rows[feature_rows >= 0]), feature_tokens):
            start = row
            while start > max(0, row - context_before) and same_group(row, start - 1):
                start -= 1
            stop = row + 1
            while stop < min(len(token_ids), row + context_after + 1) and same_group(row, stop):
                stop += 1
            before = decode([int(t) for t in token_ids[start:row]])
            after = decode([int(t) for t in token_ids[row + 1 : stop]])
            feature_contexts.append(f"{before}[[{token}]]{after}")
        contexts.append(feature_contexts)
    return tokens, contexts


class LazyContexts(Sequence):
    """`top_examples(...)[1]`, each feature's contexts decoded on first access.

    A matching job reads the contexts of few features (category members, the
    pairs on the examples page) out of thousands; decoding all of them would
    cost more than the correlations.
    """

    def __init__(self, top_rows: np.ndarray, token_ids: np.ndarray, decode: Callable[[list[int]], str],
                 group: np.ndarray | None = None):
        self._top_rows, self._token_ids, self._decode, self._group = np.asarray(top_rows), token_ids, decode, group
        self._decoded: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return len(self._top_rows)

    def __getitem__(self, feature):
        if isinstance(feature, slice):
            return [self[index] for index in range(*feature.indices(len(self)))]
        feature = int(feature)
        if feature not in self._decoded:
            _, contexts = top_examples(self._top_rows[feature : feature + 1], self._token_ids, self._decode,
                                       group=self._group)
            self._decoded[feature] = contexts[0]
        return self._decoded[feature]


# ---------------------------------------------------------------------------
# Non-concept filter
# ---------------------------------------------------------------------------

def _tokens_of(top_tokens: Sequence | Mapping | None, feature: int, n_top_tokens: int) -> Sequence[str]:
    if isinstance(top_tokens, Mapping):
        tokens = top_tokens.get(feature, ())
    else:
        tokens = top_tokens[feature]
    return list(tokens)[:n_top_tokens]


class _TokenJudge:
    """Caches per-feature junk decisions and normalized token sets for one side."""

    def __init__(self, top_tokens, n_features: int, n_top_tokens: int, junk_fraction: float, side: str):
        if not isinstance(top_tokens, Mapping) and len(top_tokens) != n_features:
            raise UserError(
                f"top_tokens_{side} has {len(top_tokens)} entries but model {side.upper()} has {n_features} features"
            )
        self.top_tokens, self.n_top_tokens, self.junk_fraction = top_tokens, n_top_tokens, junk_fraction
        self._junk: dict[int, bool] = {}
        self._normalized: dict[int, frozenset[str]] = {}
        self._token_is_junk: dict[str, bool] = {}

    def is_junk(self, feature: int) -> bool:
        """More than junk_fraction of the top tokens are junk; no tokens at all counts as junk."""
        if feature not in self._junk:
            tokens = _tokens_of(self.top_tokens, feature, self.n_top_tokens)
            for token in tokens:
                if token not in self._token_is_junk:
                    self._token_is_junk[token] = is_junk_token(token)
            n_junk = sum(self._token_is_junk[token] for token in tokens)
            self._junk[feature] = not tokens or n_junk > self.junk_fraction * len(tokens)
        return self._junk[feature]

    def normalized(self, feature: int) -> frozenset[str]:
        """Non-empty normalized top token strings (whitespace tokens cannot be shared)."""
        if feature not in self._normalized:
            tokens = _tokens_of(self.top_tokens, feature, self.n_top_tokens)
            self._normalized[feature] = frozenset(filter(None, map(normalize_token, tokens)))
        return self._normalized[feature]


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
    junk_filter: bool = True,
    shared_token_filter: bool = False,
    one_to_one: str | None = "highest",
    threshold: float = 0.1,
    n_top_tokens: int = N_TOP_TOKENS,
    junk_fraction: float = JUNK_FRACTION,
) -> pd.DataFrame:
    """The match table of `match_features` from precomputed `BestMatches`."""
    if one_to_one not in ONE_TO_ONE_RULES:
        raise UserError(f"one_to_one must be one of {ONE_TO_ONE_RULES}; got {one_to_one!r}")
    if not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise UserError(f"threshold must be a number; got {threshold!r}")
    if (junk_filter or shared_token_filter) and (top_tokens_a is None or top_tokens_b is None):
        raise UserError(
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
    junk_filter: bool = True,
    shared_token_filter: bool = False,
    one_to_one: str | None = "highest",
    threshold: float = 0.1,
    n_candidates: int = 5,
    n_top_tokens: int = N_TOP_TOKENS,
    junk_fraction: float = JUNK_FRACTION,
    feature_block: int | None = None,
    chunk_rows: int | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Pair each alive B feature with its most correlated A feature, then filter.

    Inputs: activations as in `pearson_correlation`; top_tokens_a/b: per
    feature (sequence of length F or mapping feature -> tokens) its top
    activating token strings, best first (needed by the non-concept filter).

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
    matches = best_matches(
        acts_a,
        acts_b,
        n_candidates=n_candidates if one_to_one == "hungarian" else 1,
        feature_block=feature_block,
        chunk_rows=chunk_rows,
        device=device,
    )
    return match_table(
        matches,
        top_tokens_a=top_tokens_a,
        top_tokens_b=top_tokens_b,
        junk_filter=junk_filter,
        shared_token_filter=shared_token_filter,
        one_to_one=one_to_one,
        threshold=threshold,
        n_top_tokens=n_top_tokens,
        junk_fraction=junk_fraction,
    )


def match_correlation_matrix(correlation: np.ndarray, *, n_candidates: int = 5, **options: Any) -> pd.DataFrame:
    """`match_features` on a precomputed (F_A, F_B) correlation matrix (NaN = zero variance).

    Options are those of `match_table`. Dead and constant features are not
    told apart here: both count as dead.
    """
    one_to_one = options.get("one_to_one", "highest")
    matches = best_matches_from_correlation(correlation, n_candidates=n_candidates if one_to_one == "hungarian" else 1)
    return match_table(matches, **options)


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
