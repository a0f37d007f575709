"""Controls and statistics around a score: random-subset baseline, interval, p adjustment, normalized score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .base import _as_matrix, _check_pair
from .registry import METRICS, _metric, _options_for, _route_options, compute_metric


def random_subset_baseline(W_dec_a, W_dec_b, n: int, metrics: Sequence[str] = ("svcca", "rsa"),
                           n_draws: int = 10, seed: int = 0, **metric_options) -> pd.DataFrame:
    """The paper's baseline: the metrics on n randomly chosen, unmatched features of each SAE.

    Draw j takes `rng.choice(n_features_a, n, replace=False)` then the same for B, from
    `numpy.random.default_rng(seed)`, and pairs the two row lists in the order drawn.

    Args:
        W_dec_a: (n_features_a, d_a) decoder directions of SAE A; W_dec_b likewise.
        n: features per draw (use the number of matched pairs for a like-for-like control).
        metrics: keys of `METRICS`; metric_options as in `permutation_test`.
        n_draws: number of random draws.
    Returns:
        Long table with columns draw, metric, value (n_draws * len(metrics) rows);
        summarize with `.groupby("metric")["value"].agg(["mean", "std"])`.
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in names:
        _metric(name)
    _route_options(names, metric_options)
    W_dec_a, W_dec_b = _as_matrix(W_dec_a, "W_dec_a"), _as_matrix(W_dec_b, "W_dec_b")
    if not 2 <= n <= min(len(W_dec_a), len(W_dec_b)):
        raise ValueError(f"random subset size n={n} must be in [2, {min(len(W_dec_a), len(W_dec_b))}] "
                         "(the smaller SAE's feature count)")
    generator = np.random.default_rng(seed)
    rows = []
    for draw in range(n_draws):
        rows_a = generator.choice(len(W_dec_a), n, replace=False)
        rows_b = generator.choice(len(W_dec_b), n, replace=False)
        for name in names:
            value = compute_metric(name, W_dec_a[rows_a], W_dec_b[rows_b],
                                   **_options_for(METRICS[name], metric_options))
            rows.append({"draw": draw, "metric": name, "value": value})
    return pd.DataFrame(rows, columns=["draw", "metric", "value"])


def bootstrap_interval(metric: str, X, Y, draws: int = 200, level: float = 0.95, seed: int = 0,
                       observed: float | None = None, **options) -> tuple[float, float]:
    """Interval of a metric's observed score over resamplings of the matched pairs.

    Each draw scores a random half of the pairs, drawn without replacement: with
    replacement, a duplicated pair would become its own nearest neighbour (mutual kNN),
    its own correlate (RSA) and leak from the fit folds into the held-out ones (held-out
    SVCCA). For a smooth statistic the spread of half-sample values equals the spread of
    the full-sample value (the delete-n/2 jackknife, Shao and Wu 1989), so the interval is
    the observed score plus the (1 - level)/2 and (1 + level)/2 quantiles of the
    half-sample values' deviations from their mean. It takes more than seven parameters
    because it keeps `compute_metric`'s signature (metric, the two matrices, the
    metric's own options as keywords) and adds the interval's four.

    Args:
        metric: a key of `METRICS`; X (n, d_a), Y (n, d_b) matched matrices, n >= 8.
        draws: half-samples; level: coverage in (0, 1); seed: of the draws.
        observed: the full-sample score if already computed.
        **options: the metric's keyword options.
    Returns:
        (low, high); NaN when the pairs are too few or the metric is undefined on the halves.
    """
    entry = _metric(metric)
    _route_options([metric], options)
    if not 0 < level < 1:
        raise ValueError(f"bootstrap level must be in (0, 1), got {level}")
    if draws < 2:
        raise ValueError(f"bootstrap draws must be at least 2, got {draws}")
    X, Y = _check_pair(X, Y)
    n = X.shape[0]
    half = n // 2
    if half < 4:
        return float("nan"), float("nan")
    if observed is None:
        observed = entry(X, Y, **options)
    options = dict(options)
    if "k" in options:  # mutual_knn's k must stay below the half-sample's size
        options["k"] = max(1, min(int(options["k"]), half - 1))
    generator = np.random.default_rng(seed)
    values = np.empty(draws)
    for draw in range(draws):
        rows = np.sort(generator.choice(n, half, replace=False))
        try:
            values[draw] = entry(X[rows], Y[rows], **options)
        except np.linalg.LinAlgError:  # a numerical failure (a ValueError too) is not a half's fault: show it
            raise
        except ValueError:  # e.g. a half with too few pairs for the nested SVCCA choice
            values[draw] = np.nan
    values = values[np.isfinite(values)]
    if values.size < max(2, draws // 2) or not np.isfinite(observed):
        return float("nan"), float("nan")
    deviations = values - values.mean()
    tail = (1 - level) / 2
    return float(observed + np.quantile(deviations, tail)), float(observed + np.quantile(deviations, 1 - tail))


P_ADJUSTMENTS = ("holm", "bh")


def adjust_p_values(p_values, method: str = "holm") -> np.ndarray:
    """p-values adjusted for testing them together; NaN entries are not part of the family.

    holm: Holm's step-down (controls the family-wise error rate); bh: Benjamini-Hochberg
    (controls the false discovery rate). Both are monotone in the raw p and capped at 1.

    Args:
        p_values: (m,) raw p-values (NaN for untested cells).
        method: "holm" or "bh".
    Returns:
        (m,) adjusted p-values, NaN where the input is NaN.
    """
    if method not in P_ADJUSTMENTS:
        raise ValueError(f"unknown p-value adjustment {method!r}; choose from {', '.join(P_ADJUSTMENTS)}")
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p_values.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p_values))
    m = tested.size
    if m == 0:
        return adjusted
    order = tested[np.argsort(p_values[tested], kind="stable")]
    ordered = p_values[order]
    if method == "holm":
        # The i-th smallest (from 0) is multiplied by m - i; running maximum keeps the order.
        stepped = np.maximum.accumulate(ordered * (m - np.arange(m)))
    else:
        # The i-th smallest (from 1) times m / i; running minimum from the largest down.
        stepped = np.minimum.accumulate((ordered * m / np.arange(1, m + 1))[::-1])[::-1]
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def normalized_score(observed, null_mean, ceiling=None, ceiling_null_mean=None):
    """(observed - null_mean) / (ceiling - ceiling_null_mean): 0 at chance, 1 at the same-model ceiling.

    The ceiling is the seed-to-seed score of one model and layer; its own pairing
    null (`ceiling_null_mean`) is what "chance" means for it. Raw values of a metric
    at chance depend on the number of pairs and on the spaces (linear CKA of random
    pairings of decoder rows is about 0.5 here), so subtracting the cross-model null
    from the ceiling would mix two chance levels; with `ceiling_null_mean` None it
    is `null_mean`, the literal METHOD.md formula. Works on scalars or arrays
    (broadcast). NaN where the ceiling is missing (None or NaN) or at its chance level.
    """
    observed = np.asarray(observed, dtype=np.float64)
    null_mean = np.asarray(null_mean, dtype=np.float64)
    ceiling = np.asarray(np.nan if ceiling is None else ceiling, dtype=np.float64)
    ceiling_null_mean = null_mean if ceiling_null_mean is None else np.asarray(ceiling_null_mean, dtype=np.float64)
    span = ceiling - ceiling_null_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(np.isfinite(span) & (span != 0), (observed - null_mean) / span, np.nan)
    return float(score) if score.ndim == 0 else score


def standard_normal_quantile(level: float) -> float:
    """z with P(|Z| <= z) = level for a standard normal Z (1.96 at 0.95)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def ratio_interval(numerator, numerator_se_low, numerator_se_high, denominator, denominator_se, level: float = 0.95):
    """Fieller's interval for numerator / denominator, both estimated with independent normal errors.

    The set of ratios r with |numerator - r * denominator| <= z * sqrt(se_n^2 + r^2 se_d^2):
    unlike dividing the numerator's interval by the denominator, it widens with the
    denominator's own uncertainty, and unlike the delta method it stays honest when the
    denominator is near zero. A bootstrap interval is rarely symmetric, so the lower
    bound uses the numerator's lower half-width (`numerator_se_low`, in standard
    errors) and the upper bound its upper one; with `denominator_se` 0 the bounds are
    exactly the numerator's interval divided by the denominator. Where the denominator
    is not distinguishable from zero at this level (denominator^2 <= z^2 se_d^2) the
    set is unbounded: both bounds are NaN. Arrays broadcast.
    """
    z = standard_normal_quantile(level)
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    denominator_variance = np.square(np.asarray(denominator_se, dtype=np.float64))
    leading = denominator ** 2 - z ** 2 * denominator_variance

    def root(numerator_se, sign):
        numerator_variance = np.square(np.asarray(numerator_se, dtype=np.float64))
        discriminant = z ** 2 * (numerator ** 2 * denominator_variance + denominator ** 2 * numerator_variance
                                 - z ** 2 * numerator_variance * denominator_variance)
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = (numerator * denominator + sign * np.sqrt(np.maximum(discriminant, 0.0))) / leading
        return np.where(leading > 0, bound, np.nan)

    low, high = root(numerator_se_low, -1.0), root(numerator_se_high, 1.0)
    return (float(low), float(high)) if low.ndim == 0 else (low, high)


def above_chance(scores: pd.DataFrame, significance: float) -> pd.Series:
    """Rows scoring significantly above their own null: p < significance and observed above the null mean.

    The test a seed-to-seed ceiling must pass before anything is measured against it.
    """
    return (scores["p"].astype(float) < significance) & (scores["observed"].astype(float) > scores["null_mean"])
