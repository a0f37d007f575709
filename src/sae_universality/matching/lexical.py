"""The lexical floor: what token identity alone gives matching and the scores.

Each model's activations are replaced by their mean for the current token
(`token_mean_activations`), then encoded by the layer's own SAE, matched and
scored exactly like the real codes. What a pair of such "models" shares is the
tokenizers' overlap and nothing else: any feature they match fires on a token,
never on a context. The floor the re-randomized model was meant to be, from
models that work.

The means are cross-fitted like the controls' (`controls.group_means`): a
position gets the mean of its token over the other fold of context windows (the
other fold's overall mean where the token is absent there), so a rare token does
not simply keep its own activation.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..io import atomic_path, open_hdf5
from .controls import group_means

CHUNK_ROWS = 16_384


def fit_token_means(blocks, token_ids: np.ndarray, fold: np.ndarray):
    """(the per-fold token means of the activations in `blocks`, each position's token group, distinct tokens)."""
    groups, group = np.unique(np.asarray(token_ids, np.int64), return_inverse=True)
    return group_means(blocks, group, fold, len(groups)), group, len(groups)


def token_mean_activations(activations: np.ndarray, token_ids: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """(n, d) float32: each position's activation replaced by the other fold's mean activation of its token."""
    means, group, _ = fit_token_means([np.asarray(activations)], token_ids, fold)
    return means.removed(np.asarray(fold), group).astype(np.float32)


def write_lexical_cache(cache_path: str | Path, out_path: str | Path, chunk_rows: int = CHUNK_ROWS) -> None:
    """A copy of an activation cache whose activations are `token_mean_activations` of its own, fold = window parity.

    Every per-position field and attribute is kept, so encoding, alignment and the
    top-activation filters read it as they read the real cache.
    """
    with open_hdf5(cache_path) as source:
        activations = source["activations"]
        n_positions, width = activations.shape
        token_ids = source["token_ids"][:]
        fold = (source["window_index"][:] % 2).astype(np.int8)
        chunks = (activations[start:start + chunk_rows] for start in range(0, n_positions, chunk_rows))
        means, group, distinct = fit_token_means(chunks, token_ids, fold)
        with atomic_path(out_path, suffix=".h5") as temporary, h5py.File(temporary, "w") as out:
            for name, dataset in source.items():
                if name != "activations":
                    out.create_dataset(name, data=dataset[:], chunks=dataset.chunks)
            lexical = out.create_dataset("activations", shape=(n_positions, width), dtype=np.float32,
                                         chunks=activations.chunks)
            for start in range(0, n_positions, chunk_rows):
                stop = min(start + chunk_rows, n_positions)
                lexical[start:stop] = means.removed(fold[start:stop], group[start:stop])
            out.attrs.update(dict(source.attrs))
            out.attrs.update(lexical_floor_of=str(cache_path), distinct_tokens=distinct)
