"""Aligning positions across two models (METHOD.md section 3).

A position of A and a position of B describe the same event when both tokens
end at the same character of the same context window: at such a common token
boundary both causal models have read exactly the same prefix of text. With
identical tokenizers every position is such a boundary, so this one rule
covers both cases.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .cache import read_positions
from ..io import atomic_path, open_hdf5, write_tsv


def boundary_keys(window_index: np.ndarray, char_end: np.ndarray, max_char_end: int) -> np.ndarray:
    """One int64 key per (window, character offset) pair."""
    return window_index.astype(np.int64) * (int(max_char_end) + 1) + char_end.astype(np.int64)


def _last_row_per_key(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique keys and, for each, the LAST row carrying it.

    Several tokens can end at the same character (byte-fallback pieces of one
    character); the last of them is the one that has read the whole character.
    """
    reversed_keys = keys[::-1]
    unique, first_in_reversed = np.unique(reversed_keys, return_index=True)
    return unique, len(keys) - 1 - first_in_reversed


def same_tokenization(positions_a: dict[str, np.ndarray], positions_b: dict[str, np.ndarray]) -> bool:
    """True when both caches hold the same tokens at the same offsets of the same windows."""
    return all(
        np.array_equal(positions_a[field], positions_b[field])
        for field in ("token_ids", "window_index", "char_end")
    )


def align_positions(positions_a: dict[str, np.ndarray], positions_b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows of A and B at common token boundaries, sorted by (window, char_end).

    Inputs are the per-position fields of two caches (see `read_positions`).
    Returns {"rows_a", "rows_b", "doc_index", "char_end"}, each of length M.
    When both models tokenized the windows identically, positions pair one to
    one (byte pieces of one character included).
    """
    if same_tokenization(positions_a, positions_b):
        rows = np.arange(len(positions_a["char_end"]), dtype=np.int64)
        return {"rows_a": rows, "rows_b": rows.copy(),
                "doc_index": positions_a["doc_index"].astype(np.int64),
                "char_end": positions_a["char_end"].astype(np.int64)}
    max_char_end = max(int(positions_a["char_end"].max(initial=0)), int(positions_b["char_end"].max(initial=0)))
    keys_a, rows_a = _last_row_per_key(boundary_keys(positions_a["window_index"], positions_a["char_end"], max_char_end))
    keys_b, rows_b = _last_row_per_key(boundary_keys(positions_b["window_index"], positions_b["char_end"], max_char_end))
    _, in_a, in_b = np.intersect1d(keys_a, keys_b, assume_unique=True, return_indices=True)
    rows_a, rows_b = rows_a[in_a], rows_b[in_b]
    return {
        "rows_a": rows_a.astype(np.int64),
        "rows_b": rows_b.astype(np.int64),
        "doc_index": positions_a["doc_index"][rows_a].astype(np.int64),
        "char_end": positions_a["char_end"][rows_a].astype(np.int64),
    }


def write_alignment(cache_a: str | Path, cache_b: str | Path, out_path: str | Path, model_a: str, model_b: str) -> dict:
    """Align two caches of the same windows and write the result (docs/formats.md). Returns the summary."""
    positions_a, positions_b = read_positions(cache_a), read_positions(cache_b)
    aligned = align_positions(positions_a, positions_b)
    n_a, n_b, n_aligned = len(positions_a["char_end"]), len(positions_b["char_end"]), len(aligned["rows_a"])
    with open_hdf5(cache_a) as a, open_hdf5(cache_b) as b:
        same_corpus = a.attrs.get("corpus_fingerprint") == b.attrs.get("corpus_fingerprint")
    if not same_corpus:
        from ..errors import UserError

        raise UserError(f"{cache_a} and {cache_b} were cached from different corpora: rerun both activation jobs")
    summary = {
        "model_a": model_a,
        "model_b": model_b,
        "n_positions_a": n_a,
        "n_positions_b": n_b,
        "n_aligned": n_aligned,
        "fraction_aligned_a": n_aligned / n_a if n_a else 0.0,
        "fraction_aligned_b": n_aligned / n_b if n_b else 0.0,
        "same_tokenizer": same_tokenization(positions_a, positions_b),
    }
    with atomic_path(out_path, suffix=".h5") as temporary, h5py.File(temporary, "w") as out:
        for name, values in aligned.items():
            out.create_dataset(name, data=values)
        out.attrs.update(summary)
    return summary


def write_alignment_summary(summary: dict, out_path: str | Path) -> None:
    """The summary as a one-row tab-separated table with a header."""
    import pandas as pd

    write_tsv(pd.DataFrame([summary]), out_path)
