"""Similarity metrics, their declared invariances, the fast permutation null, controls and categories.

Every metric is checked against an independent float64 implementation written
a different way (CCA by the eigen route, RSA with scipy's spearmanr, CKA with
explicit centering matrices and the HSIC U-statistic, Procrustes with scipy's
orthogonal_procrustes, neighbours with sets), and the fast permutation null
against recomputing each metric from scratch.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
import torch

from sae_universality import similarity as sim
from sae_universality.similarity.representational_similarity import _average_ranks


def coupled_pair(seed: int, n: int = 40, d_a: int = 10, d_b: int = 7, noise: float = 1.0):
    """X (n, d_a) and Y (n, d_b) sharing a linear signal plus independent noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d_a)) * np.linspace(2.0, 0.5, d_a)
    Y = X @ rng.standard_normal((d_a, d_b)) / np.sqrt(d_a) + noise * rng.standard_normal((n, d_b))
    return X, Y


def random_orthogonal(dimension: int, rng) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((dimension, dimension)))[0]


# ------------------------------------------------------------------------------------------
# Independent reference implementations (float64, written differently on purpose)
# ------------------------------------------------------------------------------------------


def reference_pca_scores(matrix, variance=0.99, components=None):
    """Principal-component scores from the eigenvectors of the covariance (not the SVD)."""
    centered = matrix - matrix.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centered.T @ centered)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    if components is None and variance >= 1:
        components = np.linalg.matrix_rank(centered)
    if components is None:
        fractions = np.cumsum(eigenvalues) / eigenvalues.sum()
        components = int(np.argmax(fractions >= variance)) + 1
    return centered @ eigenvectors[:, :components]


def reference_svcca(X, Y, variance=0.99, components=None):
    """CCA by the eigenvalues of inv(Sxx) Sxy inv(Syy) Syx on the PCA-reduced matrices."""
    scores_x = reference_pca_scores(X, variance, components)
    scores_y = reference_pca_scores(Y, variance, components)
    sxx, syy, sxy = scores_x.T @ scores_x, scores_y.T @ scores_y, scores_x.T @ scores_y
    product = np.linalg.inv(sxx) @ sxy @ np.linalg.inv(syy) @ sxy.T
    squared = np.sort(np.real(np.linalg.eigvals(product)))[::-1]
    kept = min(scores_x.shape[1], scores_y.shape[1])
    return float(np.sqrt(np.clip(squared[:kept], 0, 1)).mean())


def reference_rsa(X, Y):
    """Spearman of np.corrcoef upper triangles (rounded so that float noise cannot split exact ties)."""
    upper = np.triu_indices(len(X), k=1)
    return float(scipy.stats.spearmanr(np.corrcoef(X)[upper].round(12), np.corrcoef(Y)[upper].round(12)).statistic)


def reference_cka(X, Y):
    """HSIC(K, L) = tr(K H L H) with an explicit centering matrix H."""
    n = len(X)
    centering = np.eye(n) - np.ones((n, n)) / n

    def hsic(K, L):
        return np.trace(K @ centering @ L @ centering)

    K, L = X @ X.T, Y @ Y.T
    return float(hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L)))


def reference_debiased_cka(X, Y):
    """CKA from the HSIC U-statistic summed over all tuples of distinct indices (tiny n only)."""
    n = len(X)

    def hsic(K, L):
        pairs = np.mean([K[i, j] * L[i, j] for i, j in itertools.permutations(range(n), 2)])
        quadruples = np.mean([K[i, j] * L[q, r] for i, j, q, r in itertools.permutations(range(n), 4)])
        triples = np.mean([K[i, j] * L[i, q] for i, j, q in itertools.permutations(range(n), 3)])
        return pairs + quadruples - 2 * triples

    K, L = X @ X.T, Y @ Y.T
    return float(hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L)))


def reference_mutual_knn(X, Y, k):
    def neighbour_sets(matrix):
        distance = scipy.spatial.distance.cdist(matrix, matrix, metric="cosine")
        sets = []
        for row in range(len(matrix)):
            order = [column for column in np.argsort(distance[row], kind="stable") if column != row]
            sets.append(set(order[:k]))
        return sets

    return float(np.mean([len(a & b) / k for a, b in zip(neighbour_sets(X), neighbour_sets(Y))]))


def reference_procrustes(X, Y):
    """1 - d^2 / 2 with d the residual of scipy's orthogonal Procrustes on zero-padded unit matrices."""
    width = max(X.shape[1], Y.shape[1])

    def prepare(matrix):
        padded = np.zeros((len(matrix), width))
        padded[:, : matrix.shape[1]] = matrix - matrix.mean(axis=0)
        return padded / np.linalg.norm(padded)

    A, B = prepare(X), prepare(Y)
    rotation, _ = scipy.linalg.orthogonal_procrustes(A, B)
    return float(1 - np.linalg.norm(A @ rotation - B) ** 2 / 2)


# ------------------------------------------------------------------------------------------
# Metrics against the references
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("options", [{}, {"variance": 0.9}, {"components": 1}, {"components": 4},
                                     {"variance": 1.0}])
def test_svcca_matches_eigen_route_cca(seed, options):
    X, Y = coupled_pair(seed)
    expected = reference_svcca(X, Y, **options)
    assert sim.svcca(X, Y, **options) == pytest.approx(expected, abs=1e-9)


def test_svcca_one_component_is_abs_correlation_of_first_principal_scores():
    X, Y = coupled_pair(5, n=80)
    first_x = reference_pca_scores(X, components=1)[:, 0]
    first_y = reference_pca_scores(Y, components=1)[:, 0]
    expected = abs(np.corrcoef(first_x, first_y)[0, 1])
    assert sim.svcca(X, Y, components=1) == pytest.approx(expected, abs=1e-12)
    assert sim.svcca(X, Y) != pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_rsa_matches_scipy_spearman_of_corrcoef(seed):
    X, Y = coupled_pair(seed, n=35)
    assert sim.rsa(X, Y) == pytest.approx(reference_rsa(X, Y), abs=1e-12)


def test_rsa_handles_ties_with_average_ranks():
    rng = np.random.default_rng(3)
    # Small-integer rows make many row correlations exactly equal; two fixed columns keep rows non-constant.
    X = rng.integers(0, 3, size=(20, 5)).astype(float)
    Y = rng.integers(0, 3, size=(20, 4)).astype(float)
    X[:, :2] = Y[:, :2] = [0.0, 2.0]
    assert len(np.unique(np.corrcoef(X)[np.triu_indices(20, 1)])) < 60
    assert sim.rsa(X, Y) == pytest.approx(reference_rsa(X, Y), abs=1e-12)
    perms = sim.draw_permutations(20, 15, seed=4)
    fast = sim.permutation_null("rsa", X, Y, permutations=perms)
    naive = [reference_rsa(X, Y[p]) for p in perms]
    np.testing.assert_allclose(fast, naive, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_cka_matches_explicit_centering_hsic(seed):
    X, Y = coupled_pair(seed)
    assert sim.linear_cka(X, Y) == pytest.approx(reference_cka(X, Y), abs=1e-12)


def test_debiased_cka_matches_hsic_u_statistic():
    X, Y = coupled_pair(7, n=8, d_a=4, d_b=3, noise=0.5)
    expected = reference_debiased_cka(X, Y)
    assert sim.linear_cka(X, Y, debiased=True) == pytest.approx(expected, abs=1e-10)
    assert sim.debiased_cka(X, Y) == pytest.approx(expected, abs=1e-10)
    assert sim.linear_cka(X, Y) != pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_mutual_knn_matches_neighbour_sets(k):
    X, Y = coupled_pair(11, n=30)
    assert sim.mutual_knn(X, Y, k=k) == pytest.approx(reference_mutual_knn(X, Y, k), abs=1e-12)


@pytest.mark.parametrize("shapes", [(10, 7), (6, 9), (5, 5)])
def test_procrustes_matches_scipy_orthogonal_procrustes(shapes):
    X, Y = coupled_pair(13, d_a=shapes[0], d_b=shapes[1])
    assert sim.procrustes(X, Y) == pytest.approx(reference_procrustes(X, Y), abs=1e-10)


# ------------------------------------------------------------------------------------------
# Declared properties
# ------------------------------------------------------------------------------------------


def transform(invariance: str, Y: np.ndarray, rng) -> np.ndarray:
    width = Y.shape[1]
    if invariance == "orthogonal_transform":
        return Y @ random_orthogonal(width, rng)
    if invariance == "isotropic_scaling":
        return 3.7 * Y
    if invariance == "invertible_linear_transform":
        return Y @ (np.eye(width) + 0.8 * rng.standard_normal((width, width)))
    if invariance == "translation":
        return Y + 5.0 * rng.standard_normal(width)
    if invariance == "column_permutation":
        return Y[:, rng.permutation(width)]
    raise ValueError(invariance)


DECLARED = [(name, invariance) for name, metric in sim.METRICS.items() for invariance in metric.invariances]
UNDECLARED = [(name, invariance) for name, metric in sim.METRICS.items() for invariance in sim.INVARIANCES
              if invariance not in metric.invariances]


def test_registry_declares_known_invariances_and_options():
    assert set(sim.METRICS) >= {"svcca", "rsa", "linear_cka", "debiased_cka", "mutual_knn", "procrustes"}
    for metric in sim.METRICS.values():
        assert set(metric.invariances) <= set(sim.INVARIANCES)
        assert metric.larger_is_more_similar
    assert sim.METRICS["svcca"].options == ("variance", "components")
    assert sim.METRICS["svcca"].invariances["invertible_linear_transform"] == {"variance": 1.0}
    assert "orthogonal_transform" not in sim.METRICS["rsa"].invariances


@pytest.mark.parametrize(("name", "invariance"), DECLARED)
def test_declared_invariance_holds(name, invariance):
    rng = np.random.default_rng(21)
    X, Y = coupled_pair(17, n=36)
    options = dict(sim.METRICS[name].invariances[invariance])
    before = sim.compute_metric(name, X, Y, **options)
    after = sim.compute_metric(name, X, transform(invariance, Y, rng), **options)
    assert after == pytest.approx(before, abs=1e-9)


@pytest.mark.parametrize(("name", "invariance"), UNDECLARED)
def test_undeclared_invariance_really_fails(name, invariance):
    """The declarations are tight: a transform not declared does change the score."""
    rng = np.random.default_rng(22)
    X, Y = coupled_pair(18, n=36)
    before = sim.compute_metric(name, X, Y)
    after = sim.compute_metric(name, X, transform(invariance, Y, rng))
    assert abs(after - before) > 1e-4


@pytest.mark.parametrize("name", list(sim.METRICS))
def test_identical_inputs_score_one(name):
    X, _ = coupled_pair(19, n=30)
    assert sim.compute_metric(name, X, X) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", [name for name in sim.METRICS if name != "heldout_svcca"])
def test_permuting_both_sides_together_changes_nothing(name):
    # heldout_svcca is left out: its folds are drawn over row positions, so reordering the pairs
    # draws another split (its spread over splits is part of its interval).
    X, Y = coupled_pair(23, n=30)
    order = np.random.default_rng(1).permutation(30)
    assert sim.compute_metric(name, X[order], Y[order]) == pytest.approx(sim.compute_metric(name, X, Y), abs=1e-10)


@pytest.mark.parametrize("name", [name for name, metric in sim.METRICS.items() if metric.symmetric])
def test_symmetric_metrics_are_symmetric(name):
    X, Y = coupled_pair(29, n=30)
    assert sim.compute_metric(name, X, Y) == pytest.approx(sim.compute_metric(name, Y, X), abs=1e-10)


def test_torch_tensors_are_accepted():
    X, Y = coupled_pair(31)
    assert sim.svcca(torch.from_numpy(X).float(), torch.from_numpy(Y)) == pytest.approx(sim.svcca(X, Y), abs=1e-5)


# ------------------------------------------------------------------------------------------
# Permutation null
# ------------------------------------------------------------------------------------------

NULL_CASES = [("svcca", {}), ("svcca", {"components": 1}), ("svcca", {"variance": 1.0}), ("rsa", {}),
              ("linear_cka", {}), ("linear_cka", {"debiased": True}), ("debiased_cka", {}),
              ("mutual_knn", {"k": 4}), ("procrustes", {})]


@pytest.mark.parametrize("device", [None, "cpu"])  # None: default CPU kernels; "cpu": all-torch kernels
@pytest.mark.parametrize(("name", "options"), NULL_CASES)
def test_fast_null_equals_recomputing_from_scratch(name, options, device):
    X, Y = coupled_pair(37, n=45, d_a=9, d_b=12)
    permutations = sim.draw_permutations(45, 30, seed=5)
    fast = sim.permutation_null(name, X, Y, permutations=permutations, device=device, **options)
    naive = np.array([sim.compute_metric(name, X, Y[p], **options) for p in permutations])
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-10)
    # The same seed draws the same permutations.
    again = sim.permutation_null(name, X, Y, n_permutations=30, seed=5, device=device, **options)
    np.testing.assert_array_equal(again, fast)


@pytest.mark.parametrize("options", [{}, {"components": 3}, {"folds": 3, "fold_seed": 4}])
def test_heldout_svcca_null_is_the_metric_under_within_fold_shuffles(options):
    X, Y = coupled_pair(38, n=60, d_a=9, d_b=12)
    permutations = sim.draw_permutations(60, 12, seed=5)
    fast = sim.permutation_null("heldout_svcca", X, Y, permutations=permutations, **options)
    labels = sim.heldout_folds(60, options.get("folds", 5), options.get("fold_seed", 0))
    naive = []
    for permutation in permutations:
        within = sim.within_fold_permutation(permutation, labels)
        assert all(set(within[labels == fold]) == set(np.flatnonzero(labels == fold)) for fold in set(labels))
        naive.append(sim.heldout_svcca(X, Y[within], **options))
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-10)
    assert np.ptp(naive) > 1e-3


@pytest.mark.parametrize("name", ["svcca", "procrustes", "linear_cka", "rsa"])
def test_fast_null_handles_more_columns_than_rows(name):
    X, Y = coupled_pair(39, n=10, d_a=15, d_b=12)
    permutations = sim.draw_permutations(10, 12, seed=6)
    fast = sim.permutation_null(name, X, Y, permutations=permutations)
    naive = np.array([sim.compute_metric(name, X, Y[p]) for p in permutations])
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-10)


@pytest.mark.parametrize("options", [{}, {"components": 40}, {"components": 49}, {"variance": 0.9}])
def test_svcca_null_through_complements_equals_naive(options):
    # n = 60 pairs, many kept components: the kernel works on the orthogonal complements
    # (k_x + k_y > n); unequal widths make k_x != k_y.
    X, Y = coupled_pair(43, n=60, d_a=80, d_b=50)
    permutations = sim.draw_permutations(60, 25, seed=7)
    fast = sim.permutation_null("svcca", X, Y, permutations=permutations, **options)
    naive = np.array([sim.compute_metric("svcca", X, Y[p], **options) for p in permutations])
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-10)
    assert np.ptp(naive) > 1e-4, "the permutations must actually move the score"


def test_permutation_test_equals_naive_loop():
    X, Y = coupled_pair(41, n=30, noise=3.0)
    table = sim.permutation_test(X, Y, metrics=tuple(sim.METRICS), n_permutations=60, seed=9, k=3)
    permutations = sim.draw_permutations(30, 60, seed=9)
    assert list(table.columns[:6]) == ["metric", "observed", "null_mean", "null_std", "z", "p"]
    for row in table.itertuples():
        options = {"k": 3} if row.metric == "mutual_knn" else {}
        observed = sim.compute_metric(row.metric, X, Y, **options)
        # heldout_svcca's random pairings shuffle within its folds (see its own null test).
        shuffles = ([sim.within_fold_permutation(p, sim.heldout_folds(30, 5)) for p in permutations]
                    if row.metric == "heldout_svcca" else permutations)
        null = np.array([sim.compute_metric(row.metric, X, Y[p], **options) for p in shuffles])
        assert row.observed == observed
        assert row.null_mean == pytest.approx(null.mean(), abs=1e-12)
        assert row.null_std == pytest.approx(null.std(ddof=1), abs=1e-12)
        assert row.z == pytest.approx((observed - null.mean()) / null.std(ddof=1), rel=1e-9)
        assert row.p == (1 + np.sum(null >= observed)) / 61
        assert row.n_permutations == 60 and row.n_pairs == 30


def test_draw_permutations_is_seeded_and_valid():
    first = sim.draw_permutations(17, 130, seed=3)
    assert first.shape == (130, 17)
    np.testing.assert_array_equal(np.sort(first, axis=1), np.tile(np.arange(17), (130, 1)))
    np.testing.assert_array_equal(first, sim.draw_permutations(17, 130, seed=3))
    assert not np.array_equal(first, sim.draw_permutations(17, 130, seed=4))


def test_planted_rotation_scores_near_one_with_minimal_p():
    rng = np.random.default_rng(43)
    X = rng.standard_normal((60, 8)) * np.linspace(3, 1, 8)
    Y = X @ random_orthogonal(8, rng) + 0.01 * rng.standard_normal((60, 8))
    table = sim.permutation_test(X, Y, metrics=tuple(sim.METRICS), n_permutations=99, seed=0).set_index("metric")
    for name in ("svcca", "linear_cka", "debiased_cka", "procrustes"):
        assert table.loc[name, "observed"] > 0.999
    # Row correlations center each row across its columns, which a rotation does not preserve exactly.
    assert table.loc["rsa", "observed"] > 0.95
    assert table.loc["mutual_knn", "observed"] > 0.9
    assert (table["p"] == 1 / 100).all()
    assert (table["z"] > 5).all()


def test_p_value_is_never_zero_and_counts_ties():
    assert sim.permutation_p_value(5.0, np.zeros(999)) == 1 / 1000
    assert sim.permutation_p_value(0.5, np.array([0.5, 0.4, 0.6, 0.5 - 1e-15])) == 4 / 5
    assert sim.permutation_p_value(-1.0, np.zeros(9)) == 1.0


def test_independent_spaces_score_like_the_null():
    rng = np.random.default_rng(47)
    X, Y = rng.standard_normal((80, 10)), rng.standard_normal((80, 6))
    table = sim.permutation_test(X, Y, metrics=("svcca", "rsa", "linear_cka", "procrustes"), n_permutations=199,
                                 seed=1)
    assert (table["z"].abs() < 3).all()
    assert (table["p"] > 0.01).all()


def test_p_values_are_uniform_for_independent_spaces():
    rng = np.random.default_rng(53)
    p_values = {"svcca": [], "rsa": []}
    for draw in range(200):
        X, Y = rng.standard_normal((12, 3)), rng.standard_normal((12, 2))
        table = sim.permutation_test(X, Y, metrics=("svcca", "rsa"), n_permutations=49, seed=draw)
        for row in table.itertuples():
            p_values[row.metric].append(row.p)
    for values in p_values.values():
        values = np.asarray(values)
        assert values.min() >= 1 / 50
        assert scipy.stats.kstest(values, "uniform").pvalue > 1e-3
        for threshold in (0.1, 0.3, 0.5, 0.8):
            assert abs(np.mean(values <= threshold) - threshold) < 0.1


# ------------------------------------------------------------------------------------------
# Controls
# ------------------------------------------------------------------------------------------


def test_random_subset_baseline_draws_reproducible_unmatched_subsets():
    rng = np.random.default_rng(59)
    W_dec_a, W_dec_b = rng.standard_normal((50, 6)), rng.standard_normal((70, 5))
    table = sim.random_subset_baseline(W_dec_a, torch.from_numpy(W_dec_b), n=20, metrics=("svcca", "rsa"),
                                       n_draws=3, seed=2, components=1)
    assert list(table.columns) == ["draw", "metric", "value"] and len(table) == 6
    generator = np.random.default_rng(2)
    for draw in range(3):
        rows_a, rows_b = generator.choice(50, 20, replace=False), generator.choice(70, 20, replace=False)
        values = table[table["draw"] == draw].set_index("metric")["value"]
        assert values["svcca"] == pytest.approx(sim.svcca(W_dec_a[rows_a], W_dec_b[rows_b], components=1))
        assert values["rsa"] == pytest.approx(sim.rsa(W_dec_a[rows_a], W_dec_b[rows_b]))
    with pytest.raises(ValueError, match="random subset size"):
        sim.random_subset_baseline(W_dec_a, W_dec_b, n=60)


def test_normalized_score():
    assert sim.normalized_score(0.6, 0.1, 0.9) == pytest.approx(0.625)
    assert np.isnan(sim.normalized_score(0.6, 0.1, None))
    assert np.isnan(sim.normalized_score(0.6, 0.1, float("nan")))
    assert np.isnan(sim.normalized_score(0.6, 0.3, 0.3))
    np.testing.assert_allclose(sim.normalized_score(np.array([0.2, 0.5]), 0.0, np.array([0.4, np.nan])),
                               [0.5, np.nan])


# ------------------------------------------------------------------------------------------
# Misuse of the API: ValueError or TypeError, shown with a traceback
# ------------------------------------------------------------------------------------------


def test_misuse_errors_name_the_problem():
    X, Y = coupled_pair(61)
    with pytest.raises(ValueError, match="rows"):
        sim.svcca(X, Y[:-1])
    with pytest.raises(ValueError, match="unknown similarity metric 'cca'"):
        sim.compute_metric("cca", X, Y)
    with pytest.raises(TypeError, match="'kk' is not accepted"):
        sim.permutation_test(X, Y, metrics=("mutual_knn",), n_permutations=5, kk=3)
    with pytest.raises(ValueError, match="components=11 exceeds"):
        sim.svcca(X, Y, components=11)
    with pytest.raises(TypeError, match="svcca components must be a positive integer"):
        sim.svcca(X, Y, components=True)
    with pytest.raises(ValueError, match="mutual_knn k"):
        sim.mutual_knn(X, Y, k=40)
    with pytest.raises(TypeError, match="mutual_knn k"):
        sim.mutual_knn(X, Y, k=True)
    with pytest.raises(ValueError, match="constant"):
        sim.rsa(np.ones((5, 3)), np.eye(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        sim.procrustes(np.full((4, 2), np.nan), np.ones((4, 2)))
    with pytest.raises(ValueError, match="n_permutations"):
        sim.draw_permutations(5, 0)


def test_average_ranks_equal_scipys_with_ties():
    import scipy.stats

    rng = np.random.default_rng(11)
    values = np.round(rng.standard_normal(500), 1)  # many ties
    np.testing.assert_array_equal(_average_ranks(values), scipy.stats.rankdata(values, method="average"))
    np.testing.assert_array_equal(_average_ranks(np.array([3.0, 3.0, 3.0])), [2.0, 2.0, 2.0])


def test_scoring_on_cpu_imports_neither_torch_nor_scipy_stats():
    # Matching jobs import it for the semantic categories; torch and scipy.stats cost them seconds.
    code = ("import sys, numpy as np, sae_universality.similarity as sim; "
            "X, Y = np.random.default_rng(0).standard_normal((2, 40, 6)); "
            "sim.permutation_test(X, Y, metrics=list(sim.METRICS), n_permutations=5); "
            "print('torch' in sys.modules, 'scipy.stats' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_normalized_score_against_the_ceilings_own_null():
    # Chance is 0.5 for the cross-model pairs and 0.4 for the seed-to-seed ceiling.
    assert sim.normalized_score(0.6, 0.5, 0.9, ceiling_null_mean=0.4) == pytest.approx(0.2)
    assert sim.normalized_score(0.5, 0.5, 0.9, ceiling_null_mean=0.4) == 0.0
    assert np.isnan(sim.normalized_score(0.6, 0.5, 0.4, ceiling_null_mean=0.4))


# ------------------------------------------------------------------------------------------
# Chance levels: held-out SVCCA and debiased CKA are about 0 on unrelated spaces
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d, n", [(64, 100), (64, 300), (64, 1000), (576, 100), (576, 300), (576, 1000), (576, 3000)])
def test_chance_free_metrics_average_zero_on_independent_spaces(d, n):
    """50 values per metric on independent Gaussian X (n, d) and Y (n, 640 when d is 576, else d).

    576 against 640 are SmolLM2's and Gemma-3's widths: the reference pair's regime, where
    dimensions near or above the pairs make in-sample scores high, up to its 3,000 pairs.

    Five independent draws, each with its score and nine random pairings: a random pairing
    of independent rows is itself an independent draw, and costs no new decomposition.
    """
    rng = np.random.default_rng(n + d)
    values = {"heldout_svcca": [], "debiased_cka": []}
    for draw in range(5):
        X = rng.standard_normal((n, d))
        Y = rng.standard_normal((n, 640 if d == 576 else d))
        permutations = np.vstack([np.arange(n), sim.draw_permutations(n, 9, seed=draw)])
        for name in values:
            values[name].extend(sim.permutation_null(name, X, Y, permutations=permutations))
    for name, scores in values.items():
        assert len(scores) == 50
        assert abs(np.mean(scores)) < 0.03, (name, np.mean(scores))
    if n <= 1000 and d >= 576:
        # In the same regime in-sample SVCCA at 99% variance is far from 0: k_x + k_y near or above n.
        assert sim.svcca(X, Y, variance=0.99) > 0.5


@pytest.mark.parametrize("name", ["heldout_svcca", "debiased_cka"])
def test_chance_free_metrics_rise_monotonically_to_one_on_a_planted_rotation(name):
    rng = np.random.default_rng(67)
    X = rng.standard_normal((300, 64)) * np.linspace(2.0, 0.5, 64)
    rotation = random_orthogonal(64, rng)
    noise = rng.standard_normal((300, 64))
    scores = [sim.compute_metric(name, X, X @ rotation + level * noise) for level in (8, 4, 2, 1, 0.5, 0.1, 0.01)]
    assert np.all(np.diff(scores) > 0), scores
    assert scores[-1] > 0.99 and abs(scores[0]) < 0.2


@pytest.mark.parametrize(("components", "shapes"), [(1, (40, 8, 6)), (4, (40, 8, 6)), (7, (30, 80, 50))])
def test_heldout_svcca_with_one_fold_is_in_sample_svcca(components, shapes):
    n, d_a, d_b = shapes
    X, Y = coupled_pair(71, n=n, d_a=d_a, d_b=d_b)
    expected = reference_svcca(X, Y, components=components)  # the independent eigen-route CCA
    assert sim.heldout_svcca(X, Y, components=components, folds=1) == pytest.approx(expected, abs=1e-9)


def test_heldout_svcca_chooses_components_on_the_fit_folds_only():
    X, Y = coupled_pair(73, n=200, d_a=30, d_b=20, noise=0.5)
    choices = sim.heldout_svcca_choices(X, Y)
    assert list(choices["fold"]) == [0, 1, 2, 3, 4] and choices["heldout_rows"].sum() == 200
    assert set(choices["components"]) <= set(sim.HELDOUT_COMPONENT_GRID)
    assert (choices["averaged"] <= choices["components"]).all()
    # Changing only the rows of one fold leaves that fold's own choice unchanged: it never saw them.
    labels = sim.heldout_folds(200, 5, 0)
    changed = Y.copy()
    changed[labels == 0] = np.random.default_rng(0).standard_normal(((labels == 0).sum(), 20))
    again = sim.heldout_svcca_choices(X, changed)
    assert again.loc[0, "components"] == choices.loc[0, "components"]
    assert again.loc[0, "averaged"] == choices.loc[0, "averaged"]
    with pytest.raises(ValueError, match="components"):
        sim.heldout_svcca(X, Y, folds=1)
    # Too few pairs to hold any out: NaN (and a NaN null), never a silent in-sample score.
    assert np.isnan(sim.heldout_svcca(X[:8], Y[:8]))
    assert np.isnan(sim.heldout_svcca(X[:5], Y[:5], components=2))
    assert np.isfinite(sim.heldout_svcca(X[:9], Y[:9])) and np.isfinite(sim.heldout_svcca(X[:6], Y[:6], components=1))
    assert np.isnan(sim.permutation_null("heldout_svcca", X[:8], Y[:8], n_permutations=3)).all()


# ------------------------------------------------------------------------------------------
# Adjusted p-values and intervals
# ------------------------------------------------------------------------------------------


def test_adjusted_p_values_equal_hand_computed_ones():
    p = [0.01, 0.04, 0.03, np.nan, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max.
    np.testing.assert_allclose(sim.adjust_p_values(p, "holm"), [0.03, 0.06, 0.06, np.nan, 0.02])
    # BH: times 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04 -> running min from the top.
    np.testing.assert_allclose(sim.adjust_p_values(p, "bh"), [0.02, 0.04, 0.04, np.nan, 0.02])
    np.testing.assert_allclose(sim.adjust_p_values([0.5, 0.9], "holm"), [1.0, 1.0])
    np.testing.assert_allclose(sim.adjust_p_values([0.3, 0.2, 0.1], "bh"), [0.3, 0.3, 0.3])
    assert np.isnan(sim.adjust_p_values([np.nan, np.nan])).all()
    with pytest.raises(ValueError, match="holm, bh"):
        sim.adjust_p_values([0.1], "bonferroni")


def test_interval_covers_the_true_value_at_about_the_nominal_rate():
    """Debiased CKA of Y = X A + noise, whose population value is known in closed form."""
    rng = np.random.default_rng(79)
    d, sigma, n = 8, 1.0, 120
    A = 0.5 * rng.standard_normal((d, d))
    # Population covariances: Sxx = I, Sxy = A, Syy = A'A + sigma^2 I.
    true = np.linalg.norm(A) ** 2 / (np.sqrt(d) * np.linalg.norm(A.T @ A + sigma**2 * np.eye(d)))
    covered, widths = [], []
    for simulation in range(100):
        X = rng.standard_normal((n, d))
        Y = X @ A + sigma * rng.standard_normal((n, d))
        low, high = sim.bootstrap_interval("debiased_cka", X, Y, draws=100, seed=simulation)
        covered.append(low <= true <= high)
        widths.append(high - low)
    assert 0.88 <= np.mean(covered) <= 0.99, np.mean(covered)
    assert 0 < np.mean(widths) < 0.5


def test_interval_contains_the_observed_score_and_is_seeded():
    X, Y = coupled_pair(83, n=60)
    for name in sim.METRICS:
        options = {"k": 5} if name == "mutual_knn" else {}
        low, high = sim.bootstrap_interval(name, X, Y, draws=30, seed=1, **options)
        observed = sim.compute_metric(name, X, Y, **options)
        assert low <= observed + 1e-12 and observed - 1e-12 <= high, name
        assert (low, high) == sim.bootstrap_interval(name, X, Y, draws=30, seed=1, **options)
    assert np.isnan(sim.bootstrap_interval("rsa", X[:7], Y[:7])).all()  # halves of 3 pairs: no interval
