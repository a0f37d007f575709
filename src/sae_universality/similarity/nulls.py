"""The pairing null: row permutations of Y, the null distribution of a metric, its p-value and the test."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..devices import kernel_device
from .base import _check_pair
from .kernels import _PERMUTATION_BLOCK
from .registry import METRICS, _metric, _options_for, _route_options, compute_metric

if TYPE_CHECKING:
    import torch


def _permutation_blocks(n_pairs: int, n_permutations: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of rows of `draw_permutations(n_pairs, n_permutations, seed)`, drawn lazily."""
    generator = np.random.default_rng(seed)
    for start in range(0, n_permutations, _PERMUTATION_BLOCK):
        size = min(_PERMUTATION_BLOCK, n_permutations - start)
        yield np.stack([generator.permutation(n_pairs) for _ in range(size)])


def draw_permutations(n_pairs: int, n_permutations: int, seed: int = 0) -> np.ndarray:
    """The (n_permutations, n_pairs) row permutations of Y that `permutation_test` uses for this seed.

    Permutation j is the j-th `numpy.random.default_rng(seed).permutation(n_pairs)`;
    every metric of one call sees the same permutations.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    return np.concatenate(list(_permutation_blocks(n_pairs, n_permutations, seed)))


def permutation_null(metric: str, X, Y, n_permutations: int = 1000, seed: int = 0,
                     permutations: np.ndarray | None = None, device: str | torch.device | None = None,
                     **options) -> np.ndarray:
    """Metric values with the rows of Y shuffled against X, one per permutation.

    Decompositions a row permutation leaves unchanged are computed once, so this
    equals `[compute_metric(metric, X, Y[p], **options) for p in permutations]`
    to float tolerance, much faster. It takes more than seven parameters because it
    keeps `compute_metric`'s signature (metric, the two matrices, the metric's own
    options as keywords) and adds the null's three: the draws, or explicit
    permutations, and the device.

    Args:
        metric: a key of `METRICS`.
        X: (n, d_a), Y: (n, d_b) matched matrices.
        n_permutations, seed: draw `draw_permutations(n, n_permutations, seed)`.
        permutations: (m, n) explicit row permutations instead (then n_permutations/seed are ignored).
        device: torch device for every kernel; default CUDA when present, else CPU with numpy
            for every kernel (torch is then never imported).
        **options: the metric's keyword options.
    Returns:
        (m,) float64 null values.
    """
    entry = _metric(metric)
    _route_options([metric], options)
    X, Y = _check_pair(X, Y)
    device = kernel_device(device)
    evaluate = entry.prepare_null(X, Y, device, **options)
    n = X.shape[0]
    if permutations is None:
        if n_permutations < 1:
            raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
        blocks = _permutation_blocks(n, n_permutations, seed)
    else:
        permutations = np.asarray(permutations, dtype=np.int64)
        if permutations.ndim != 2 or permutations.shape[1] != n:
            raise ValueError(f"permutations must have shape (m, {n}), got {permutations.shape}")
        blocks = (permutations[start : start + _PERMUTATION_BLOCK]
                  for start in range(0, len(permutations), _PERMUTATION_BLOCK))
    return np.concatenate([evaluate(block) for block in blocks])


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """One-sided p = (1 + #{null >= observed}) / (1 + len(null)); never 0.

    A null value within 1e-12 (relative) below `observed` counts as a tie, so a
    value that equals the observed one up to rounding is never counted as smaller.
    """
    null = np.asarray(null, dtype=np.float64)
    if math.isnan(observed):
        return float("nan")
    tolerance = 1e-12 * max(1.0, abs(observed))
    return float((1 + np.count_nonzero(null >= observed - tolerance)) / (1 + null.size))


def permutation_test(X, Y, metrics: Sequence[str] = ("svcca", "rsa"), n_permutations: int = 1000,
                     seed: int = 0, device: str | torch.device | None = None, **metric_options) -> pd.DataFrame:
    """Pairing null for each metric: how the matched pairing compares with random pairings.

    Args:
        X: (n, d_a), Y: (n, d_b) matched matrices, row i of each is pair i.
        metrics: keys of `METRICS`.
        n_permutations: random pairings (row shuffles of Y), the same ones for every metric.
        seed: seed of `draw_permutations`.
        device: torch device for the kernels (see `permutation_null`).
        **metric_options: keyword options, each passed to the metrics that accept it
            (e.g. variance=, components= for svcca; k= for mutual_knn).
    Returns:
        One row per metric with columns metric, observed, null_mean, null_std (ddof=1),
        z = (observed - null_mean) / null_std, p (see `permutation_p_value`),
        n_pairs, n_permutations.
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in names:
        _metric(name)
    _route_options(names, metric_options)
    X, Y = _check_pair(X, Y)
    rows = []
    for name in names:
        options = _options_for(METRICS[name], metric_options)
        observed = compute_metric(name, X, Y, **options)
        null = permutation_null(name, X, Y, n_permutations=n_permutations, seed=seed, device=device, **options)
        null_mean = float(np.mean(null))
        null_std = float(np.std(null, ddof=1)) if null.size > 1 else float("nan")
        z = (observed - null_mean) / null_std if null_std > 0 else float("nan")
        rows.append({"metric": name, "observed": observed, "null_mean": null_mean, "null_std": null_std,
                     "z": z, "p": permutation_p_value(observed, null), "n_pairs": X.shape[0],
                     "n_permutations": int(null.size)})
    return pd.DataFrame(rows, columns=["metric", "observed", "null_mean", "null_std", "z", "p",
                                       "n_pairs", "n_permutations"])
