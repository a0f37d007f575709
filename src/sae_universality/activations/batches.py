"""Activation caches as streams of training batches: shuffled, resumable, read in contiguous chunks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import open_hdf5


def count_batches(n_rows: int, batch_size: int, epochs: int = 1) -> int:
    """Batches `iter_hdf5_batches` yields for n_rows rows: the remainder of each epoch is dropped."""
    return epochs * (n_rows // batch_size)


@dataclass(frozen=True)
class BatchOrder:
    """Which batches a stream yields, in which order: with the rows, all that the order depends on."""

    batch_size: int
    """Rows per batch; the last incomplete batch of an epoch is dropped."""
    seed: int
    """Seed of the chunk order and of the shuffles (each epoch has its own)."""
    epochs: int = 1
    """Passes over the rows."""
    buffer_rows: int = 65_536
    """Rows read into memory and shuffled together (memory: about buffer_rows * d * 4 bytes)."""
    chunk_rows: int = 512
    """Contiguous rows read at once; chunks come in a seeded random order."""


def iter_hdf5_batches(path: str | Path, order: BatchOrder, rows=None, start_batch: int = 0,
                      dataset: str = "activations") -> Iterator[np.ndarray]:
    """Shuffled float32 batches (order.batch_size, d) from an activation cache, streamed.

    Rows are taken in contiguous chunks of `order.chunk_rows` (in the order of `rows`),
    chunks in a seeded random order; each group of buffer_rows // chunk_rows
    chunks is read into memory and its rows shuffled. Each epoch has its own
    order; the last batch_size-incomplete batch of an epoch is dropped. The order
    depends only on `order` and `rows`, so `start_batch` restarts mid-stream
    exactly, reading from the group that holds that batch.

    rows: row indices to use (e.g. a train split); sorted and deduplicated; None = all.
    With train_sae, as the SAE stage uses it (settings: a TrainSettings):

        order = BatchOrder(settings.batch_size, seed, epochs=settings.epochs)
        make_batches = functools.partial(iter_hdf5_batches, path, order, train_rows)
        cfg = TrainConfig.for_rows(settings, len(train_rows), seed)  # count_batches(...) steps
        train_sae(lambda start: make_batches(start_batch=start), sae_cfg, cfg, checkpoint_dir)
    """
    batch_size, seed, epochs, chunk_rows = order.batch_size, order.seed, order.epochs, order.chunk_rows
    with open_hdf5(path) as handle:
        if dataset not in handle:
            raise UserError(f"{path} has no dataset {dataset!r}; it is not an activation cache")
        data = handle[dataset]
        selected = np.arange(data.shape[0]) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        if len(selected) and (selected[0] < 0 or selected[-1] >= data.shape[0]):
            raise ValueError(f"row indices must lie in [0, {data.shape[0]}) for {path}")
        batches_per_epoch = len(selected) // batch_size
        if batches_per_epoch == 0:
            return
        chunks_per_group = max(1, order.buffer_rows // chunk_rows)
        for epoch in range(start_batch // batches_per_epoch, epochs):
            skip_rows = max(0, start_batch - epoch * batches_per_epoch) * batch_size
            yield from _epoch_batches(data, selected, batch_size, (seed, epoch), chunk_rows, chunks_per_group, skip_rows)


def _epoch_batches(data, selected: np.ndarray, batch_size: int, seed: tuple[int, int], chunk_rows: int,
                   chunks_per_group: int, skip_rows: int) -> Iterator[np.ndarray]:
    """One epoch's batches, after skipping its first skip_rows shuffled rows."""
    n_chunks = math.ceil(len(selected) / chunk_rows)
    chunk_order = np.random.default_rng(seed).permutation(n_chunks)
    rows_left = (len(selected) // batch_size) * batch_size - skip_rows
    position = 0  # rows of this epoch's order passed so far
    pending = np.empty((0, data.shape[1]), dtype=np.float32)
    for group_index, start in enumerate(range(0, n_chunks, chunks_per_group)):
        chunks = [selected[c * chunk_rows:(c + 1) * chunk_rows] for c in chunk_order[start:start + chunks_per_group]]
        group_size = sum(len(chunk) for chunk in chunks)
        if position + group_size <= skip_rows:
            position += group_size
            continue
        shuffle = np.random.default_rng([*seed, group_index]).permutation(group_size)
        block = np.concatenate([read_rows(data, chunk) for chunk in chunks])[shuffle]
        pending = np.concatenate([pending, block[max(0, skip_rows - position):]])
        position += group_size
        while len(pending) >= batch_size and rows_left > 0:
            yield pending[:batch_size]
            pending, rows_left = pending[batch_size:], rows_left - batch_size
        if rows_left <= 0:
            return


def read_rows(data, rows: np.ndarray) -> np.ndarray:
    """Rows of an HDF5 dataset as float32, read as one contiguous slice covering them."""
    block = data[rows[0]:rows[-1] + 1]
    return np.asarray(block[rows - rows[0]], dtype=np.float32)
