"""Each feature's top activating positions, their tokens and their contexts (for the filters and the examples)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .correlation import SPARSE_CHUNK_ROWS, Block, _as_code_matrix

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
        raise ValueError("the activations contain NaN; fix them before ranking top activations")
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
        raise ValueError(f"n_top must be a positive integer; got {n_top!r}")
    if isinstance(chunks, np.ndarray) or sp.issparse(chunks):
        matrix = _as_code_matrix(chunks, "chunks")
        chunks = (matrix[start : start + SPARSE_CHUNK_ROWS] for start in range(0, matrix.shape[0], SPARSE_CHUNK_ROWS))
    top_rows = top_values = None
    row_offset = 0
    for block in chunks:
        if block.ndim != 2:
            raise ValueError(f"every chunk must be 2-D (positions x features); got shape {block.shape}")
        if top_rows is None:
            top_rows = np.full((block.shape[1], n_top), -1, dtype=np.int64)
            top_values = np.full((block.shape[1], n_top), -np.inf)
        elif block.shape[1] != top_rows.shape[0]:
            raise ValueError(f"chunk width changed from {top_rows.shape[0]} to {block.shape[1]}")
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
        raise ValueError("no chunks were given: nothing to rank")
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
        raise ValueError(f"top_rows refers to row {int(top_rows.max())} but token_ids has {len(token_ids)} rows")
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
