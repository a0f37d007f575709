"""Functional agreement of matched pairs: do the two features of a kept pair act alike on the model's predictions?

Per kept pair, the correlation of A's and B's effect profiles (`effects`) over the aligned positions of the
causal sample: high where the two features help (or hurt) their models' next-token predictions at the same
places in the text, by similar relative amounts. Per layer pair, the mean over kept pairs, set against:

- random pairings (the null): the same mean with the B features shuffled among the kept pairs;
- the seed-to-seed ceiling: the same mean for the kept pairs of two seeds' SAEs of one model and layer, on
  that model's sample positions (the mean of the two models' ceilings, as the similarity scores use);
- the context-only result: the same mean once each feature's mean effect for the current token is removed
  (cross-fitted over two halves of the windows), the causal side of the lexical control.

An interval comes from resampling the sample's windows (positions within a window are not independent). Each
pair also gets its own test (its correlation against its A feature's correlations with the other kept pairs' B
features), so the share of pairs that agree beyond chance can be stated after a false-discovery adjustment,
and the overlap of the output strings the two features promote (decoded, whitespace-normalized: the
tokenizers differ).
"""

from __future__ import annotations

import numpy as np


def _standardized(matrix: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Columns centred and scaled to unit (weighted) variance, and which columns vary at all."""
    matrix = np.asarray(matrix, dtype=np.float64)
    weights = np.ones(len(matrix)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    mean = weights @ matrix / total
    centred = matrix - mean
    spread = np.sqrt(weights @ np.square(centred) / total)
    varies = spread > 1e-12 * np.maximum(np.abs(mean), 1.0)
    return centred / np.where(varies, spread, 1.0), varies


def column_pair_correlations(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation of column i of x with column i of y, (weighted by row); NaN where a column is
    constant."""
    weights = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    zx, vx = _standardized(x, weights)
    zy, vy = _standardized(y, weights)
    correlation = weights @ (zx * zy) / weights.sum()
    return np.where(vx & vy, correlation, np.nan)


def correlation_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(columns of x, columns of y) Pearson correlations; NaN rows and columns for constant columns."""
    zx, vx = _standardized(x)
    zy, vy = _standardized(y)
    matrix = zx.T @ zy / len(x)
    matrix[~vx] = np.nan
    matrix[:, ~vy] = np.nan
    return matrix


def pairing_null(matrix: np.ndarray, draws: int, rng) -> np.ndarray:
    """The mean paired correlation under random pairings: per draw, A feature i with the B feature of the kept
    pair pi(i), pi a random permutation (NaN cells left out of each mean). `matrix` from `correlation_matrix`."""
    n = len(matrix)
    means = np.empty(draws)
    for draw in range(draws):
        means[draw] = np.nanmean(matrix[np.arange(n), rng.permutation(n)]) if n else np.nan
    return means


def per_pair_p(matrix: np.ndarray) -> np.ndarray:
    """Per kept pair i, the rank p-value of its correlation among its A feature's correlations with every kept
    pair's B feature: (1 + #{j != i: C[i, j] >= C[i, i]}) / n. NaN where C[i, i] is undefined."""
    n = len(matrix)
    own = np.diag(matrix)
    with np.errstate(invalid="ignore"):
        beaten = np.nansum(matrix >= own[:, None], axis=1) - 1  # minus itself
    return np.where(np.isfinite(own), (1 + np.maximum(beaten, 0)) / max(n, 1), np.nan)


def token_residuals(matrix: np.ndarray, tokens: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each column minus its mean for the current token, fitted on the other fold (cross-fitted: a token's mean
    from the same positions would remove each position's own value for rare tokens). A token the other fold
    does not hold keeps its values."""
    matrix = np.asarray(matrix, dtype=np.float64)
    residual = matrix.copy()
    for fold in np.unique(folds):
        fit, apply = folds != fold, folds == fold
        keys, inverse = np.unique(tokens[fit], return_inverse=True)
        sums = np.zeros((len(keys), matrix.shape[1]))
        np.add.at(sums, inverse, matrix[fit])
        means = sums / np.bincount(inverse, minlength=len(keys))[:, None]
        index = np.searchsorted(keys, tokens[apply])
        known = (index < len(keys)) & (keys[np.minimum(index, len(keys) - 1)] == tokens[apply])
        rows = np.flatnonzero(apply)
        residual[rows[known]] -= means[index[known]]
    return residual


def window_bootstrap(x: np.ndarray, y: np.ndarray, windows: np.ndarray, draws: int, rng,
                     level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean paired correlation over resamples of whole windows (with replacement)."""
    unique, inverse = np.unique(windows, return_inverse=True)
    means = []
    for _ in range(draws):
        counts = np.bincount(rng.integers(0, len(unique), len(unique)), minlength=len(unique))
        weights = counts[inverse].astype(np.float64)
        if weights.sum() == 0:
            continue
        keep = weights > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append(np.nanmean(column_pair_correlations(x[keep], y[keep], weights[keep])))
    means = np.asarray(means)
    means = means[np.isfinite(means)]
    if not len(means):
        return np.nan, np.nan
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def normalized_string(text: str) -> str:
    """A decoded token with its whitespace normalized: leading and trailing removed, inner runs one space (the
    tokenizers mark a word's leading space differently: " and", "▁and", "Ġand" all decode to " and")."""
    return " ".join(str(text).split())


def overlap_matrix(strings_a: list, strings_b: list) -> np.ndarray:
    """(len(a), len(b)) Jaccard overlaps of the normalized string sets (empty strings dropped)."""
    sets_a = [{normalized_string(text) for text in strings} - {""} for strings in strings_a]
    sets_b = [{normalized_string(text) for text in strings} - {""} for strings in strings_b]
    vocabulary = {text: index for index, text in enumerate(sorted(set().union(*sets_a, *sets_b)))}
    incidence_a = np.zeros((len(sets_a), len(vocabulary)))
    incidence_b = np.zeros((len(sets_b), len(vocabulary)))
    for incidence, sets in ((incidence_a, sets_a), (incidence_b, sets_b)):
        for row, strings in enumerate(sets):
            incidence[row, [vocabulary[text] for text in strings]] = 1.0
    shared = incidence_a @ incidence_b.T
    union = incidence_a.sum(axis=1)[:, None] + incidence_b.sum(axis=1)[None, :] - shared
    return np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)
