"""The two models' residual streams compared position by position, before any SAE: context for the SAE scores.

Every other score here compares SAE decoder directions of matched features. This
one asks how alike the raw activations of the two layers are over the aligned
positions, with two measures that ignore rotations of either space:

- debiased linear CKA over the positions (`debiased_cka_of_features`, exact on any
  number of rows);
- held-out SVCCA over the positions, whole context windows held out together
  (`heldout_svcca(groups=...)`), so shared context cannot leak from fit to test.

Each is measured on three versions of the positions (`COMPARISONS`):

- `aligned`: the two models at the same characters of text;
- `token_means`: each model's activations replaced by their cross-fitted mean for
  the current token (the lexical floor's activations): what token identity alone
  makes alike;
- `document_shifted`: B's positions rolled within each document against A's: what
  the shared document (topic) alone makes alike, the chance level of this
  comparison.

Positions are a seeded subsample of whole windows (`positions` of them at most),
and each score's interval comes from half-samples of those windows, like every
interval of this project (`bootstrap_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .cca import heldout_svcca
from .cka import debiased_cka_of_features

COMPARISONS = ("aligned", "token_means", "document_shifted")
RESIDUAL_METRICS = {
    "debiased_cka": lambda X, Y, window, seed: debiased_cka_of_features(X, Y),
    "heldout_svcca": lambda X, Y, window, seed: heldout_svcca(X, Y, fold_seed=seed, groups=window),
}
"""Measure name -> score(X, Y, window of each row, seed): the windows are held out whole where it holds out."""


@dataclass(frozen=True)
class ResidualPositions:
    """The aligned positions of one layer pair, both models' rows in the same order."""

    a: np.ndarray
    """(n, d_a) model A's residual stream."""
    b: np.ndarray
    """(n, d_b) model B's, at the same characters."""
    a_token_means: np.ndarray
    """(n, d_a) A's activations replaced by their cross-fitted token means (matching/lexical.py)."""
    b_token_means: np.ndarray
    """(n, d_b) the same for B."""
    window: np.ndarray
    """(n,) the context window of each position (held out together, resampled together)."""
    document: np.ndarray
    """(n,) the document of each position."""



def whole_window_sample(window: np.ndarray, positions: int, seed: int) -> np.ndarray:
    """(n,) bool: whole windows drawn at random (seeded) until `positions` rows at most; everything if fewer."""
    window = np.asarray(window)
    if len(window) <= positions:
        return np.ones(len(window), dtype=bool)
    windows, sizes = np.unique(window, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(windows))
    chosen = windows[order][: max(1, int(np.searchsorted(np.cumsum(sizes[order]), positions, side="right")))]
    return np.isin(window, chosen)


def residual_scores(positions: ResidualPositions, draws: int, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (metric, comparison): observed, its half-sample interval, and n_positions, n_windows.

    `draws` half-samples of the windows per score (0: no interval). The rows of the
    document-shifted comparison are B's rolled half a document along, within
    documents (`within_document_roll`).
    """
    from ..matching.controls import within_document_roll

    window = positions.window
    windows = np.unique(window)

    def interval(metric, X, Y, observed):
        # The observed score plus the quantiles of half-samples' deviations from their mean (bootstrap_interval).
        generator = np.random.default_rng(seed)
        values = []
        for _ in range(draws):
            keep = np.isin(window, generator.choice(windows, len(windows) // 2, replace=False))
            values.append(RESIDUAL_METRICS[metric](X[keep], Y[keep], window[keep], seed))
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size < 2 or not np.isfinite(observed):
            return float("nan"), float("nan")
        low, high = np.quantile(values - values.mean(), [(1 - level) / 2, (1 + level) / 2])
        return float(observed + low), float(observed + high)

    roll = within_document_roll(positions.document)
    versions = {"aligned": (positions.a, positions.b),
                "token_means": (positions.a_token_means, positions.b_token_means),
                "document_shifted": (positions.a, positions.b[roll])}
    rows = []
    for metric in RESIDUAL_METRICS:
        for comparison in COMPARISONS:
            X, Y = versions[comparison]
            observed = RESIDUAL_METRICS[metric](X, Y, window, seed)
            low, high = interval(metric, X, Y, observed) if draws else (np.nan, np.nan)
            rows.append({"metric": metric, "comparison": comparison, "observed": observed, "ci_low": low,
                         "ci_high": high, "n_positions": len(X), "n_windows": len(windows)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class ResidualFiles:
    """What one layer pair's residual comparison reads."""

    alignment: str
    """The pair's aligned rows (rows_a, rows_b)."""
    cache_a: str
    """A's activation cache at layer_a; cache_b likewise."""
    cache_b: str
    lexical_a: str
    """A's lexical-floor cache (token means) at layer_a; lexical_b likewise."""
    lexical_b: str


def read_residual_positions(files: ResidualFiles, positions: int, seed: int) -> ResidualPositions:
    """The aligned positions of a layer pair, a `whole_window_sample` of them, read from the caches as float64."""
    from ..io import open_hdf5

    with open_hdf5(files.alignment) as alignment:
        rows_a, rows_b = alignment["rows_a"][:], alignment["rows_b"][:]
    with open_hdf5(files.cache_a) as cache:
        window, document = cache["window_index"][:][rows_a], cache["doc_index"][:][rows_a]
    keep = whole_window_sample(window, positions, seed)
    rows_a, rows_b = rows_a[keep], rows_b[keep]

    def read(path, rows):
        # The sampled windows lie all over the file: one read of it beats h5py's point selection.
        with open_hdf5(path) as cache:
            return cache["activations"][:][rows].astype(np.float64)

    return ResidualPositions(read(files.cache_a, rows_a), read(files.cache_b, rows_b), read(files.lexical_a, rows_a),
                             read(files.lexical_b, rows_b), window[keep], document[keep])


def residual_layer_pair(files: ResidualFiles, out_path, labels: dict, controls, similarity) -> pd.DataFrame:
    """One layer pair's residual comparison (`residual_scores`) with its labels -> a TSV.

    `controls` (ControlSettings) gives the positions and half-samples, `similarity`
    (SimilaritySettings) the interval's level and the seed.
    """
    from ..io import write_tsv

    positions = read_residual_positions(files, controls.residual_positions, similarity.seed)
    table = residual_scores(positions, controls.residual_draws, similarity.bootstrap_level, similarity.seed)
    table = pd.concat([pd.DataFrame([labels] * len(table)), table], axis=1)
    write_tsv(table, out_path)
    return table
