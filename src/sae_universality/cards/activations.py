"""What a feature's activations look like over the positions a card shows: firing density, a histogram of its
firing activations, and positions sampled from each quantile range of them (the conventions of SAEDashboard
and Neuronpedia: the top contexts alone show only the strongest, rarest uses of a feature)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
"""Edges of the activation ranges positions are sampled from: the firing activations' quantiles."""


@dataclass(frozen=True)
class ActivationProfile:
    """One feature's activations over n positions."""

    n_positions: int
    density: float
    """Fraction of the positions where the feature fires (activation > 0)."""
    histogram_edges: np.ndarray
    """(bins + 1,) edges from 0 to the largest activation."""
    histogram_counts: np.ndarray
    """(bins,) firing positions per bin (the last bin includes its right edge)."""
    quantile_edges: np.ndarray
    """The firing activations at `DEFAULT_QUANTILES` (or the quantiles asked for)."""
    quantile_samples: tuple[np.ndarray, ...]
    """Per range between consecutive quantile edges: up to `per_range` positions (indices into the values),
    drawn without replacement, seeded; the last range includes its upper edge."""


def activation_profile(values: np.ndarray, bins: int = 24, quantiles: Sequence[float] = DEFAULT_QUANTILES,
                       per_range: int = 3, seed: int = 0) -> ActivationProfile:
    """The profile of one feature's activations `values` (n,), zeros where it does not fire."""
    values = np.asarray(values, dtype=np.float64)
    firing = np.flatnonzero(values > 0)
    n = len(values)
    if not len(firing):
        empty = np.zeros(0)
        return ActivationProfile(n, 0.0, np.linspace(0.0, 1.0, bins + 1), np.zeros(bins, dtype=np.int64), empty,
                                 tuple(np.zeros(0, dtype=np.int64) for _ in range(len(quantiles) - 1)))
    active = values[firing]
    edges = np.linspace(0.0, float(active.max()), bins + 1)
    counts, _ = np.histogram(active, bins=edges)
    quantile_edges = np.quantile(active, quantiles)
    rng = np.random.default_rng(seed)
    samples = []
    for index, (low, high) in enumerate(zip(quantile_edges[:-1], quantile_edges[1:])):
        last = index == len(quantile_edges) - 2
        inside = firing[(active >= low) & ((active <= high) if last else (active < high))]
        chosen = rng.choice(inside, min(per_range, len(inside)), replace=False) if len(inside) else inside
        samples.append(np.sort(chosen).astype(np.int64))
    return ActivationProfile(n, len(firing) / n if n else 0.0, edges, counts.astype(np.int64), quantile_edges,
                             tuple(samples))
