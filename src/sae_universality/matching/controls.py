"""Controls for what matching finds: are two features shared, or do they only see the same token or document?

Two features of two models correlate across aligned positions when they do the
same thing, but also when each merely detects the same word (both fire on " and")
or the same topic (both fire all through one article). These controls take
those cheap explanations out of the codes and ask what is left:

- **context only**: each feature minus its mean for the current token of its own
  model (`KEY_TOKEN`), or for the (previous, current) token pair where that pair
  is frequent enough, the current token's mean otherwise (`KEY_BIGRAM`). What is
  left varies with context only; a pair that still correlates shares more than a
  word.
- **document demeaned**: each feature minus its mean over its document
  (`KEY_DOCUMENT`); a pair that still correlates shares more than a topic.
- **document shifted**: B's positions rolled within each document against A's
  (`within_document_roll`); a pair that still correlates does so through the
  document alone, since the positions no longer line up.

Means are cross-fitted: positions are split into two folds by context window,
the means of one fold are removed from the other and back, so a rare token's
own activation is not removed with its mean (it would be, fit and removed on
the same positions). A key absent from the other fold removes that fold's
overall mean of the feature, which is what the correlation removes anyway.

Everything here is a pure function of chunks of codes and per-position keys;
`stage` reads them from the files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

KEY_TOKEN = "token"
KEY_BIGRAM = "bigram"
KEY_DOCUMENT = "document"

Chunks = Callable[[], Iterable[tuple]]
"""A function returning a fresh iterable of aligned (block_a, block_b) chunks, each numpy or scipy.sparse."""


@dataclass(frozen=True)
class PositionKeys:
    """What the controls group one side's aligned positions by, one entry per aligned row."""

    token: np.ndarray
    """(n,) int64 the model's current token id."""
    previous: np.ndarray
    """(n,) int64 the token before it in the same context window, -1 at a window's first token."""
    document: np.ndarray
    """(n,) int64 the document the position is in."""
    fold: np.ndarray
    """(n,) int8 0 or 1: the cross-fitting fold (the parity of the position's context window)."""

    def __post_init__(self):
        lengths = {len(self.token), len(self.previous), len(self.document), len(self.fold)}
        if len(lengths) != 1:
            raise ValueError(f"PositionKeys fields must have one entry per position; got lengths {sorted(lengths)}")


def position_keys(token_ids: np.ndarray, window_index: np.ndarray, doc_index: np.ndarray,
                  rows: np.ndarray) -> PositionKeys:
    """The keys of `rows` of one model's activation cache (its per-position fields, in cache order)."""
    token_ids, window_index = np.asarray(token_ids, np.int64), np.asarray(window_index, np.int64)
    previous = np.full(len(token_ids), -1, dtype=np.int64)
    # Cache rows are contiguous within a window: the row before is the previous token unless a window starts.
    same_window = window_index[1:] == window_index[:-1]
    previous[1:][same_window] = token_ids[:-1][same_window]
    rows = np.asarray(rows, np.int64)
    return PositionKeys(token_ids[rows], previous[rows], np.asarray(doc_index, np.int64)[rows],
                        (window_index[rows] % 2).astype(np.int8))


def _group_codes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys, index of each position's key among them)."""
    return np.unique(keys, return_inverse=True)


@dataclass(frozen=True)
class GroupMeans:
    """Per fold, each group's mean codes; `removed(fold_of_rows, group_of_rows)` is what cross-fitting subtracts."""

    table: np.ndarray
    """(2 * n_groups + 2, F) float64: the group means of fold 0, of fold 1, then each fold's overall mean
    (one array, so that what a position loses is one gather)."""
    counts: np.ndarray
    """(2, n_groups) int64 positions of each group in each fold."""

    @property
    def means(self) -> np.ndarray:
        """(2, n_groups, F): means[f, g] is group g's mean over the positions of fold f."""
        return self.table[:-2].reshape(2, self.counts.shape[1], self.table.shape[1])

    @property
    def overall(self) -> np.ndarray:
        """(2, F) each fold's mean over all its positions."""
        return self.table[-2:]

    def removed(self, fold: np.ndarray, group: np.ndarray, min_count: int = 1,
                features: np.ndarray | None = None) -> np.ndarray:
        """(n, F) the other fold's mean of each position's group (its overall mean where the group has
        fewer than min_count positions there); only the columns `features` when given."""
        other = 1 - np.asarray(fold, np.int64)
        n_groups = self.counts.shape[1]
        known = (group >= 0) & (self.counts[other, np.maximum(group, 0)] >= min_count) if n_groups \
            else np.zeros(len(group), dtype=bool)
        row = np.where(known, other * n_groups + np.maximum(group, 0), 2 * n_groups + other)
        return self.table[row] if features is None else self.table[np.ix_(row, np.asarray(features))]


def group_means(blocks: Iterable, group: np.ndarray, fold: np.ndarray, n_groups: int) -> GroupMeans:
    """Means of the codes per (fold, group), streamed over `blocks` ((rows, F) numpy or sparse, in row order).

    A group index of -1 belongs to no group (its positions count only towards the overall means).
    """
    sums = counts = total = None
    start = 0
    group = np.asarray(group, np.int64)
    for block in blocks:
        rows = block.shape[0]
        block_group, block_fold = group[start:start + rows], np.asarray(fold[start:start + rows], np.int64)
        if sums is None:
            n_features = block.shape[1]
            sums = np.zeros((2, n_groups, n_features))
            counts = np.zeros((2, n_groups), dtype=np.int64)
            total = np.zeros((2, n_features))
        grouped = block_group >= 0
        np.add.at(counts, (block_fold[grouped], block_group[grouped]), 1)
        if sp.issparse(block):
            # Sparse codes: add each nonzero to its (fold, group, feature) sum, nothing dense per chunk.
            coo = block.tocoo()
            values = coo.data.astype(np.float64)
            np.add.at(total, (block_fold[coo.row], coo.col), values)
            in_group = grouped[coo.row]
            np.add.at(sums, (block_fold[coo.row[in_group]], block_group[coo.row[in_group]], coo.col[in_group]),
                      values[in_group])
        else:
            dense = np.asarray(block, dtype=np.float64)
            for side in (0, 1):
                mask = block_fold == side
                total[side] += dense[mask].sum(axis=0)
                np.add.at(sums[side], block_group[mask & grouped], dense[mask & grouped])
        start += rows
    if sums is None:
        raise ValueError("no positions: the controls need at least one chunk of codes")
    if start != len(group):
        raise ValueError(f"the chunks hold {start} positions but the keys {len(group)}")
    means = sums / np.maximum(counts, 1)[..., None]
    positions = np.array([max(1, int((np.asarray(fold) == side).sum())) for side in (0, 1)])
    table = np.concatenate([means.reshape(2 * n_groups, total.shape[1]), total / positions[:, None]])
    return GroupMeans(table, counts)


@dataclass(frozen=True)
class Residualizer:
    """How one side's codes lose what a key explains: fitted means, and which group each position is in."""

    means: GroupMeans
    group: np.ndarray
    """(n,) each position's group."""
    fold: np.ndarray
    """(n,) each position's fold."""
    fallback: "Residualizer | None" = None
    """Where a position's group has fewer than min_count positions in the other fold, this one's mean is removed."""
    min_count: int = 1

    def removed(self, start: int, stop: int, features: np.ndarray | None = None) -> np.ndarray:
        """(stop - start, F) what is subtracted from rows [start, stop); only the columns `features` when given."""
        fold, group = self.fold[start:stop], self.group[start:stop]
        out = self.means.removed(fold, group, self.min_count, features)
        if self.fallback is not None:
            other = 1 - fold.astype(np.int64)
            thin = ((group < 0) | (self.means.counts[other, np.maximum(group, 0)] < self.min_count)
                    if self.means.counts.shape[1] else np.ones(len(group), dtype=bool))
            if thin.any():
                out[thin] = self.fallback.removed(start, stop, features)[thin]
        return out


def fit_residualizer(blocks: Callable[[], Iterable], keys: PositionKeys, kind: str,
                     min_bigram_count: int = 5, token: Residualizer | None = None) -> Residualizer:
    """The cross-fitted `Residualizer` of one side for a key kind (KEY_TOKEN, KEY_BIGRAM or KEY_DOCUMENT).

    `blocks()` yields that side's codes in aligned row order. KEY_BIGRAM removes
    the (previous, current) pair's mean where the pair occurs at least
    `min_bigram_count` times in the other fold, the current token's otherwise
    (`token`: that side's KEY_TOKEN residualizer when already fitted, else fitted here).
    """
    if kind == KEY_TOKEN:
        distinct, group = _group_codes(keys.token)
        return Residualizer(group_means(blocks(), group, keys.fold, len(distinct)), group, keys.fold)
    if kind == KEY_DOCUMENT:
        distinct, group = _group_codes(keys.document)
        return Residualizer(group_means(blocks(), group, keys.fold, len(distinct)), group, keys.fold)
    if kind == KEY_BIGRAM:
        token = token or fit_residualizer(blocks, keys, KEY_TOKEN)
        pairs = np.stack([keys.previous, keys.token], axis=1)
        distinct, group = np.unique(pairs, axis=0, return_inverse=True)
        group = group.ravel()
        # Only pairs frequent enough in some fold get means of their own (the rest use the token's): this
        # bounds the means to a few thousand rows instead of one per pair ever seen.
        per_fold = np.zeros((2, len(distinct)), dtype=np.int64)
        np.add.at(per_fold, (keys.fold.astype(np.int64), group), 1)
        frequent = np.flatnonzero(per_fold.max(axis=0) >= min_bigram_count)
        compact = np.full(len(distinct), -1, dtype=np.int64)
        compact[frequent] = np.arange(len(frequent))
        group = compact[group]
        return Residualizer(group_means(blocks(), group, keys.fold, len(frequent)), group, keys.fold,
                            fallback=token, min_count=min_bigram_count)
    raise ValueError(f"unknown control key {kind!r}; use {KEY_TOKEN}, {KEY_BIGRAM} or {KEY_DOCUMENT}")


def residual_chunks(chunks: Chunks, residualizer_a: Residualizer | None, residualizer_b: Residualizer | None,
                    features_a: np.ndarray | None = None, features_b: np.ndarray | None = None) -> Chunks:
    """Aligned chunks with each side's fitted means removed (dense float64); None leaves a side as it is.

    With `features_a` / `features_b`, only those columns, in that order (cheap when few are needed).
    """

    def residual(block, residualizer, start, features):
        if features is not None:
            block = block[:, features]
        if residualizer is None:
            return block
        dense = block.toarray() if sp.issparse(block) else np.asarray(block, dtype=np.float64)
        dense -= residualizer.removed(start, start + dense.shape[0], features)
        return dense

    def generate() -> Iterator[tuple]:
        start = 0
        for block_a, block_b in chunks():
            rows = block_a.shape[0]
            yield (residual(block_a, residualizer_a, start, features_a),
                   residual(block_b, residualizer_b, start, features_b))
            start += rows

    return generate


def within_document_roll(document: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """(n,) an order of the positions that moves each one `fraction` of its document's length along, circularly.

    Applied to one side's rows, it keeps every position in its own document (and
    so its topic) while breaking the position-by-position pairing with the other
    side. A document's positions are taken in their order here, wherever they
    lie (windows may be shuffled); a document of one position stays where it is.
    """
    document = np.asarray(document)
    order = np.arange(len(document))
    by_document = np.argsort(document, kind="stable")  # each document's positions together, in their order
    sorted_documents = document[by_document]
    boundaries = np.flatnonzero(sorted_documents[1:] != sorted_documents[:-1]) + 1
    for members in np.split(by_document, boundaries):
        length = len(members)
        if length > 1:
            shift = int(round(fraction * length)) % length
            order[members] = members[(np.arange(length) + shift) % length]
    return order


def paired_correlations(chunks: Chunks, features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """(pairs,) Pearson correlation of A feature features_a[i] with B feature features_b[i] over all rows.

    Streamed in float64; NaN where either column does not vary.
    """
    features_a, features_b = np.asarray(features_a, np.int64), np.asarray(features_b, np.int64)
    n_pairs = len(features_a)
    sums = np.zeros((5, n_pairs))  # x, y, x^2, y^2, xy
    n = 0
    for block_a, block_b in chunks():
        x = block_a[:, features_a]
        y = block_b[:, features_b]
        x = x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float64)
        y = y.toarray() if sp.issparse(y) else np.asarray(y, dtype=np.float64)
        sums += np.stack([x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0), (x * y).sum(0)])
        n += x.shape[0]
    if n == 0:
        return np.full(n_pairs, np.nan)
    mean_x, mean_y = sums[0] / n, sums[1] / n
    covariance = sums[4] / n - mean_x * mean_y
    variance_x = np.maximum(sums[2] / n - mean_x**2, 0.0)
    variance_y = np.maximum(sums[3] / n - mean_y**2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = covariance / np.sqrt(variance_x * variance_y)
    # A column constant up to rounding has no correlation to speak of.
    scale = np.maximum(np.abs(mean_x), 1.0) * np.maximum(np.abs(mean_y), 1.0)
    correlation[(variance_x * variance_y) <= 1e-24 * scale**2] = np.nan
    return np.clip(correlation, -1.0, 1.0)
