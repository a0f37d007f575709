"""Tests for sae_universality.matching: exact streamed correlations, best matches, filters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from sae_universality.errors import UserError
from sae_universality.matching import (
    best_matches,
    correlation_blocks,
    kept_pairs,
    match_correlation_matrix,
    match_features,
    pearson_correlation,
    summarize_matches,
    top_activations,
    top_examples,
)

# ---------------------------------------------------------------------------
# Data and independent references
# ---------------------------------------------------------------------------


def sparse_codes(n_positions: int, n_features: int, density: float, seed: int) -> sp.csr_array:
    """Random nonnegative sparse codes with one dead (col 0) and one constant (col 1) feature."""
    rng = np.random.default_rng(seed)
    dense = rng.exponential(1.0, (n_positions, n_features)) * (rng.random((n_positions, n_features)) < density)
    dense[:, 0] = 0.0
    dense[:, 1] = 2.5
    return sp.csr_array(dense)


def reference_correlation(acts_a, acts_b) -> np.ndarray:
    """Float64 dense Pearson by explicit z-scoring (population std); NaN for zero variance."""
    dense_a = np.asarray(acts_a.toarray() if sp.issparse(acts_a) else acts_a, dtype=np.float64)
    dense_b = np.asarray(acts_b.toarray() if sp.issparse(acts_b) else acts_b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_a = (dense_a - dense_a.mean(axis=0)) / dense_a.std(axis=0)
        z_b = (dense_b - dense_b.mean(axis=0)) / dense_b.std(axis=0)
    z_a[:, dense_a.std(axis=0) == 0] = np.nan
    z_b[:, dense_b.std(axis=0) == 0] = np.nan
    return z_a.T @ z_b / dense_a.shape[0]


def assert_same_correlation(actual: np.ndarray, expected: np.ndarray, tolerance: float) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    finite = ~np.isnan(expected)
    assert np.abs(actual[finite] - expected[finite]).max() < tolerance


@pytest.fixture(scope="module")
def random_pair():
    acts_a = sparse_codes(400, 23, density=0.15, seed=1)
    acts_b = sparse_codes(400, 17, density=0.2, seed=2)
    return acts_a, acts_b, reference_correlation(acts_a, acts_b)


# ---------------------------------------------------------------------------
# Correlation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["numpy", "cpu"])
@pytest.mark.parametrize("kind", ["sparse", "dense", "mixed", "chunk_list", "chunk_factory", "chunk_generator"])
def test_pearson_correlation_matches_float64_reference(random_pair, kind, device):
    acts_a, acts_b, expected = random_pair
    if kind == "sparse":
        arguments = (acts_a, acts_b)
    elif kind == "dense":
        arguments = (acts_a.toarray(), acts_b.toarray())
    elif kind == "mixed":
        arguments = (acts_a, acts_b.toarray())
    else:
        # uneven chunks, alternating sparse and dense blocks on side B
        bounds = [0, 1, 97, 250, 251, 400]
        chunks = [
            (acts_a[start:stop], acts_b[start:stop] if index % 2 else acts_b[start:stop].toarray())
            for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:]))
        ]
        arguments = {
            "chunk_list": (chunks,),
            "chunk_factory": (lambda: iter(chunks),),
            "chunk_generator": ((chunk for chunk in chunks),),
        }[kind]
    correlation = pearson_correlation(*arguments, dtype=np.float64, device=device)
    assert_same_correlation(correlation, expected, 1e-12)
    # column 0 (dead) and 1 (constant) are NaN on both sides, nothing else is
    assert np.isnan(correlation[:2]).all() and np.isnan(correlation[:, :2]).all()


def test_pearson_correlation_default_float32_and_chunking(random_pair):
    acts_a, acts_b, expected = random_pair
    correlation = pearson_correlation(acts_a, acts_b, chunk_rows=33)
    assert correlation.dtype == np.float32
    assert_same_correlation(correlation, expected, 1e-6)


def test_pearson_correlation_large_offset_dense_stays_exact():
    # pre-activation-like dense data far from zero: raw float64 moments must not cancel badly
    rng = np.random.default_rng(3)
    acts_a = 300.0 + rng.normal(size=(2000, 6))
    acts_b = -50.0 + acts_a[:, [2, 0, 5]] * 0.5 + rng.normal(size=(2000, 3))
    correlation = pearson_correlation(acts_a, acts_b, dtype=np.float64, chunk_rows=128)
    assert_same_correlation(correlation, np.corrcoef(acts_a.T, acts_b.T)[:6, 6:], 1e-9)


def test_duplicate_sparse_entries_are_summed_like_toarray():
    rng = np.random.default_rng(9)
    n_positions, n_features = 60, 5
    columns = rng.integers(0, n_features, (n_positions, 4))  # repeats within a row are likely
    data = rng.random(n_positions * 4)
    indptr = np.arange(0, n_positions * 4 + 1, 4)
    with_duplicates = sp.csr_array((data, columns.ravel(), indptr), shape=(n_positions, n_features))
    acts_b = rng.random((n_positions, 3))
    expected = reference_correlation(with_duplicates.toarray(), acts_b)
    for device in ("numpy", "cpu"):
        for other in (acts_b, sp.csr_array(acts_b)):
            correlation = pearson_correlation(with_duplicates, other, dtype=np.float64, device=device)
            assert_same_correlation(correlation, expected, 1e-12)


def test_correlation_blocks_tile_the_full_matrix(random_pair):
    acts_a, acts_b, expected = random_pair
    blocks = list(correlation_blocks(acts_a, acts_b, feature_block=5, chunk_rows=100))
    assert [(block.a_start, block.a_stop) for block in blocks] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    assert_same_correlation(np.vstack([block.correlation for block in blocks]), expected, 1e-12)


def test_blocked_pass_needs_rereadable_chunks(random_pair):
    acts_a, acts_b, _ = random_pair
    one_shot = iter([(acts_a, acts_b)])
    with pytest.raises(ValueError, match="already consumed"):
        best_matches(one_shot, feature_block=10)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((np.zeros((5, 3)), np.zeros((6, 3))), "rows"),
        ((np.zeros((5, 3)),), "acts_b is missing"),
        (([(np.zeros((5, 3)), np.zeros((4, 3)))],), "aligned"),
        (([(np.zeros((5, 3)), np.zeros((5, 3))), (np.zeros((5, 4)), np.zeros((5, 3)))],), "widths changed"),
        (([],), "no chunks"),
        ((np.array([[np.nan, 1.0], [0.0, 1.0]]), np.ones((2, 2))), "NaN"),
        (("activations.h5", np.ones((2, 2))), "numpy array or scipy.sparse"),
    ],
)
def test_misuse_of_the_api_raises_value_or_type_errors_with_a_traceback(arguments, message):
    # Not UserError: these are contract failures of the Python API, and a bug must show where it happened.
    with pytest.raises((ValueError, TypeError), match=message) as error:
        pearson_correlation(*arguments)
    assert not isinstance(error.value, UserError)


# ---------------------------------------------------------------------------
# Best matches
# ---------------------------------------------------------------------------


def reference_top_candidates(correlation: np.ndarray, n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Per B column: A indices by decreasing correlation, ties by increasing A index (a stable sort)."""
    scores = np.where(np.isnan(correlation), -np.inf, correlation).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n_candidates]
    values = np.take_along_axis(scores, order, axis=1)
    return np.where(np.isneginf(values), -1, order), np.where(np.isneginf(values), np.nan, values)


@pytest.mark.parametrize("feature_block", [None, 1, 4, 22, 100])
def test_best_matches_blocked_equals_reference(random_pair, feature_block):
    acts_a, acts_b, expected = random_pair
    matches = best_matches(acts_a, acts_b, n_candidates=3, feature_block=feature_block, chunk_rows=64)
    expected_index, expected_value = reference_top_candidates(expected, 3)
    np.testing.assert_array_equal(matches.candidates_a, expected_index)
    np.testing.assert_allclose(matches.candidate_correlations, expected_value, atol=1e-12)
    # dead and constant B features have no candidate at all
    assert (matches.best_a[:2] == -1).all() and (matches.best_a[2:] >= 2).all()


def test_best_match_ties_go_to_lowest_a_index():
    rng = np.random.default_rng(4)
    acts_b = rng.random((50, 2))
    # A features 1, 3 and 4 are exact copies of B feature 0: a three-way tie, across feature blocks
    acts_a = np.column_stack([rng.random(50), acts_b[:, 0], rng.random(50), acts_b[:, 0], acts_b[:, 0]])
    for feature_block in (None, 2, 3):
        matches = best_matches(acts_a, acts_b, n_candidates=3, feature_block=feature_block)
        assert matches.candidates_a[0].tolist() == [1, 3, 4]
        np.testing.assert_allclose(matches.candidate_correlations[0], 1.0)


def topk_like_codes(n_positions: int, n_features: int, k: int, rng) -> np.ndarray:
    """Dense array holding k positive entries per row at random latents."""
    codes = np.zeros((n_positions, n_features))
    latents = np.argsort(rng.random((n_positions, n_features)), axis=1)[:, :k]
    np.put_along_axis(codes, latents, rng.exponential(1.0, (n_positions, k)) + 0.1, axis=1)
    return codes


@pytest.mark.parametrize("one_to_one", ["highest", "first", "hungarian"])
def test_planted_permutation_is_recovered(one_to_one):
    rng = np.random.default_rng(5)
    codes_a = topk_like_codes(3000, 48, 4, rng)
    permutation = rng.permutation(48)  # B feature j is A feature permutation[j]
    codes_b = codes_a[:, permutation] * rng.lognormal(0.0, 0.3, codes_a.shape)
    codes_b = codes_b * (rng.random(codes_b.shape) > 0.2)  # B misses 20% of A's activations
    codes_b += topk_like_codes(3000, 48, 1, rng)  # and fires once per row at random
    table = match_features(
        sp.csr_array(codes_a), sp.csr_array(codes_b), junk_filter=False, one_to_one=one_to_one, feature_block=16
    )
    assert table["kept"].all() and len(table) == 48
    np.testing.assert_array_equal(table["final_a"].to_numpy(), permutation)
    assert table["correlation"].min() > 0.5
    indices_a, indices_b = kept_pairs(table)
    np.testing.assert_array_equal(indices_a, permutation)
    np.testing.assert_array_equal(indices_b, np.arange(48))


# ---------------------------------------------------------------------------
# Match table: counts, filters, one-to-one
# ---------------------------------------------------------------------------


def test_dead_and_constant_features_are_counted_never_nan():
    rng = np.random.default_rng(6)
    acts_a = rng.random((200, 6)) * (rng.random((200, 6)) < 0.3)
    acts_a[:, [1, 4]] = 0.0  # dead
    acts_a[:, 2] = 7.0  # constant
    acts_b = rng.random((200, 5)) * (rng.random((200, 5)) < 0.3)
    acts_b[:, 3] = 0.0  # dead
    table = match_features(sp.csr_array(acts_a), sp.csr_array(acts_b), junk_filter=False, threshold=-1.0)
    assert not table.isna().any().any()
    assert table["feature_b"].tolist() == [0, 1, 2, 4]
    assert set(table["feature_a"]) <= {0, 3, 5}
    summary = summarize_matches(table)
    expected_counts = {
        "n_positions": 200, "n_features_a": 6, "n_features_b": 5, "n_alive_a": 3, "n_alive_b": 4,
        "n_dead_a": 2, "n_dead_b": 1, "n_constant_a": 1, "n_constant_b": 0, "n_b_without_partner": 0,
        "n_pairs_many_to_one": 4,
    }  # fmt: skip
    assert {key: summary[key] for key in expected_counts} == expected_counts
    reference = reference_correlation(acts_a, acts_b)
    expected_max = np.nanmax(reference[:, [0, 1, 2, 4]], axis=0)
    assert summary["mean_max_correlation"] == pytest.approx(expected_max.mean(), abs=1e-12)


def test_b_feature_without_alive_a_partner_is_counted():
    acts_a = np.zeros((10, 2))
    acts_b = np.arange(20.0).reshape(10, 2)
    table = match_features(acts_a, acts_b, junk_filter=False)
    assert len(table) == 0
    summary = summarize_matches(table)
    assert summary["n_b_without_partner"] == 2 and summary["mean_max_correlation"] is None


# Hand-made correlation matrices: rows are A features, columns B features.


def test_highest_and_first_differ_the_way_the_paper_defect_predicts():
    correlation = np.array(
        [
            [0.30, 0.80, 0.05],  # A0 is the best partner of B0 (0.30) and of B1 (0.80)
            [0.20, 0.10, 0.60],
        ]
    )
    highest = match_correlation_matrix(correlation, junk_filter=False, one_to_one="highest")
    first = match_correlation_matrix(correlation, junk_filter=False, one_to_one="first")
    assert highest["feature_a"].tolist() == [0, 0, 1]
    # "highest" keeps A0's best partner B1; the paper's "first" keeps B0, the lower B index
    assert highest["passes_one_to_one"].tolist() == [False, True, True]
    assert first["passes_one_to_one"].tolist() == [True, False, True]
    assert summarize_matches(highest)["mean_correlation_kept"] == pytest.approx(0.7)
    assert summarize_matches(first)["mean_correlation_kept"] == pytest.approx(0.45)


def test_one_to_one_tie_keeps_lowest_b_and_best_a_tie_lowest_a():
    correlation = np.array(
        [
            [0.5, 0.5, 0.9],
            [0.1, 0.2, 0.9],  # B2 ties between A0 and A1: A0 (lowest index) wins
        ]
    )
    table = match_correlation_matrix(correlation, junk_filter=False, one_to_one="highest")
    assert table["feature_a"].tolist() == [0, 0, 0]
    assert table["passes_one_to_one"].tolist() == [False, False, True]
    tied = match_correlation_matrix(correlation[:, :2], junk_filter=False, one_to_one="highest")
    assert tied["passes_one_to_one"].tolist() == [True, False]  # B0 and B1 tie on A0: B0 kept


def test_threshold_is_inclusive_and_cumulative():
    correlation = np.array([[0.1, 0.0, 0.0], [0.0, 0.0999, 0.0], [0.0, 0.0, 0.95]])
    table = match_correlation_matrix(correlation, junk_filter=False, threshold=0.1, one_to_one=None)
    assert table["passes_one_to_one"].all()
    assert table["passes_threshold"].tolist() == [True, False, True]
    assert table["kept"].equals(table["passes_threshold"])


def test_non_concept_filter_runs_before_one_to_one():
    correlation = np.array([[0.9, 0.5], [0.0, 0.1]])  # B0 and B1 both prefer A0
    top_tokens_a = [["▁Paris", "▁London", "▁Berlin"], ["ĠMonday", "ĠTuesday", "ĠFriday"]]
    top_tokens_b = [[",", ".", "▁;"], [" paris", " london", "rome"]]  # B0 is punctuation
    table = match_correlation_matrix(correlation, top_tokens_a=top_tokens_a, top_tokens_b=top_tokens_b)
    assert table["passes_non_concept"].tolist() == [False, True]
    # B0 is dropped first, so B1 keeps A0 although B0's correlation with A0 was higher
    assert table["passes_one_to_one"].tolist() == [False, True]
    assert table["kept"].tolist() == [False, True]
    without = match_correlation_matrix(correlation, junk_filter=False)
    assert without["kept"].tolist() == [True, False]
    summary = summarize_matches(table)
    assert (summary["n_after_non_concept"], summary["n_after_one_to_one"], summary["n_after_threshold"]) == (1, 1, 1)


def test_junk_filter_needs_more_than_half_junk():
    correlation = np.eye(3) * 0.9
    words = ["cat", "dog", "sun", "sea", "sky"]
    half_junk = words + ["\n", " ", "!", "<s>", "Ġ"]  # 5 of 10 junk: not mostly junk
    mostly_junk = words[:4] + ["\n", " ", "!", "<s>", "Ġ", "<|endoftext|>"]  # 6 of 10
    top_tokens_a = [half_junk, mostly_junk, []]  # no tokens at all counts as junk
    top_tokens_b = [words, words, words]
    table = match_correlation_matrix(correlation, top_tokens_a=top_tokens_a, top_tokens_b=top_tokens_b)
    assert table["passes_non_concept"].tolist() == [True, False, False]
    # only the first n_top_tokens count: with 5, half_junk is all words
    table = match_correlation_matrix(
        correlation, top_tokens_a=[mostly_junk, words, words], top_tokens_b=top_tokens_b, n_top_tokens=4
    )
    assert table["passes_non_concept"].tolist() == [True, True, True]


def test_shared_token_filter_uses_normalized_strings():
    correlation = np.eye(3) * 0.9
    top_tokens_a = [["▁Paris", "▁France"], ["Ġcat", "Ġkitten"], ["2019", "\n"]]
    top_tokens_b = [[" paris", "Ġrome"], ["dog", "puppy"], ["\n", "▁"]]
    table = match_correlation_matrix(
        correlation, top_tokens_a=top_tokens_a, top_tokens_b=top_tokens_b, junk_filter=False, shared_token_filter=True
    )
    # whitespace-only tokens never count as shared
    assert table["passes_non_concept"].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="top_tokens_a"):
        match_correlation_matrix(correlation)


def test_top_tokens_length_is_checked():
    with pytest.raises(ValueError, match="top_tokens_a has 1 entries"):
        match_correlation_matrix(np.eye(2), top_tokens_a=[["x"]], top_tokens_b=[["x"], ["y"]])


def test_dead_features_in_matrix_get_no_partner():
    correlation = np.array([[np.nan, np.nan, np.nan], [np.nan, 0.4, 0.3], [np.nan, 0.2, 0.6]])
    table = match_correlation_matrix(correlation, junk_filter=False)
    assert table["feature_b"].tolist() == [1, 2] and table["feature_a"].tolist() == [1, 2]
    assert table.attrs["n_dead_a"] == 1 and table.attrs["n_dead_b"] == 1
    assert table.attrs["n_positions"] is None  # unknown from a matrix
    assert not table.isna().any().any()


def test_hungarian_beats_greedy_on_a_hand_made_case():
    correlation = np.array([[0.9, 0.85], [0.8, 0.1]])  # B0: A0 .9, A1 .8; B1: A0 .85, A1 .1
    greedy = match_correlation_matrix(correlation, junk_filter=False, one_to_one="highest")
    assert greedy["passes_one_to_one"].tolist() == [True, False]
    optimal = match_correlation_matrix(correlation, junk_filter=False, one_to_one="hungarian")
    assert optimal["final_a"].tolist() == [1, 0]
    assert optimal["final_correlation"].tolist() == [0.8, 0.85]
    assert optimal["feature_a"].tolist() == [0, 0]  # the many-to-one columns are unchanged
    assert optimal["kept"].all()


def test_hungarian_leaves_negative_pairs_unmatched():
    correlation = np.array([[0.7, -0.2], [0.1, -0.3]])  # B1 correlates negatively with everything
    table = match_correlation_matrix(correlation, junk_filter=False, one_to_one="hungarian", threshold=-1.0)
    assert table["passes_one_to_one"].tolist() == [True, False]
    assert table["final_a"].tolist() == [0, 0] and table["final_correlation"].tolist() == [0.7, -0.2]
    assert not table.isna().any().any()


def test_hungarian_is_valid_one_to_one_and_at_least_greedy():
    rng = np.random.default_rng(7)
    correlation = rng.uniform(-0.2, 1.0, (30, 40)) ** 3
    correlation[5] = np.nan  # a dead A feature
    greedy = match_correlation_matrix(correlation, junk_filter=False, one_to_one="highest", threshold=-1.0)
    options = {"junk_filter": False, "one_to_one": "hungarian", "threshold": -1.0}
    optimal = match_correlation_matrix(correlation, n_candidates=30, **options)
    matched = optimal[optimal["passes_one_to_one"]]
    assert matched["final_a"].is_unique and 5 not in set(matched["final_a"])
    np.testing.assert_allclose(matched["final_correlation"], correlation[matched["final_a"], matched["feature_b"]])
    greedy_total = greedy.loc[greedy["passes_one_to_one"], "correlation"].sum()
    optimal_total = matched["final_correlation"].sum()
    assert optimal_total >= greedy_total - 1e-12
    # with every A feature a candidate, the optimum equals a dense assignment on max(r, 0)
    weights = np.nan_to_num(np.maximum(correlation, 0.0))
    rows, columns = linear_sum_assignment(weights, maximize=True)
    assert optimal_total == pytest.approx(weights[rows, columns].sum(), abs=1e-9)
    # with few candidates it is still valid and no worse than greedy
    sparse_graph = match_correlation_matrix(correlation, n_candidates=2, **options)
    sparse_matched = sparse_graph[sparse_graph["passes_one_to_one"]]
    assert sparse_matched["final_a"].is_unique
    assert sparse_matched["final_correlation"].sum() >= greedy_total - 1e-12


def test_hungarian_uses_only_concept_edges():
    correlation = np.array([[0.9, 0.8], [0.7, 0.1], [0.6, 0.05]])
    top_tokens_a = [["cat"], ["!!"], ["cat"]]  # A1 is junk: never a partner
    top_tokens_b = [["cat"], ["cat"]]
    table = match_correlation_matrix(
        correlation, top_tokens_a=top_tokens_a, top_tokens_b=top_tokens_b, one_to_one="hungarian", n_candidates=3
    )
    assert table["final_a"].tolist() == [2, 0]
    np.testing.assert_allclose(table["final_correlation"], [0.6, 0.8])


def test_invalid_one_to_one_rule():
    with pytest.raises(ValueError, match="one_to_one"):
        match_correlation_matrix(np.eye(2), junk_filter=False, one_to_one="greedy")


# ---------------------------------------------------------------------------
# Top activations and token strings
# ---------------------------------------------------------------------------


def reference_top_activations(dense: np.ndarray, n_top: int, stored: np.ndarray):
    """Brute force: per column, stored entries by value descending, then row ascending."""
    n_features = dense.shape[1]
    indices = np.full((n_features, n_top), -1)
    values = np.full((n_features, n_top), np.nan)
    for feature in range(n_features):
        rows = np.nonzero(stored[:, feature])[0]
        order = sorted(rows, key=lambda row: (-dense[row, feature], row))[:n_top]
        indices[feature, : len(order)] = order
        values[feature, : len(order)] = dense[order, feature]
    return indices, values


@pytest.mark.parametrize("kind", ["sparse_chunks", "dense_chunks", "one_matrix"])
def test_top_activations_match_brute_force_with_ties(kind):
    rng = np.random.default_rng(8)
    # few distinct values: many ties, which go to the lowest row
    dense = rng.integers(0, 4, (90, 7)).astype(float) * (rng.random((90, 7)) < 0.3)
    dense[:, 3] = 0.0
    dense[[5, 60], 3] = 2.0  # fewer nonzeros than n_top
    bounds = [0, 10, 11, 50, 90]
    if kind == "sparse_chunks":
        chunks = [sp.csr_array(dense[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]
        stored = dense != 0
    elif kind == "dense_chunks":
        chunks = [dense[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]
        stored = np.ones(dense.shape, dtype=bool)
    else:
        chunks = sp.csr_array(dense)
        stored = dense != 0
    indices, values = top_activations(chunks, n_top=5)
    expected_indices, expected_values = reference_top_activations(dense, 5, stored)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(values, expected_values)
    if kind == "dense_chunks":  # zeros are stored values there: they fill the list after the two nonzeros
        assert indices[3, :2].tolist() == [5, 60] and (values[3, 2:] == 0).all()
    else:
        assert indices[3].tolist() == [5, 60, -1, -1, -1]


def test_top_examples_decode_tokens_and_contexts():
    vocabulary = ["<s>", " the", " cat", " sat", ".", " dog", " ran"]
    token_ids = np.array([1, 2, 3, 4, 1, 5, 6, 4])
    document = np.array([0, 0, 0, 0, 1, 1, 1, 1])

    def decode(ids):
        return "".join(vocabulary[i] for i in ids)

    top_rows = np.array([[2, 5, -1], [4, 0, 7]])
    tokens, contexts = top_examples(top_rows, token_ids, decode, group=document, context_before=2, context_after=1)
    assert tokens == [[" sat", " dog"], [" the", " the", "."]]
    assert contexts == [
        [" the cat[[ sat]].", " the[[ dog]] ran"],
        ["[[ the]] dog", "[[ the]] cat", " dog ran[[.]]"],  # contexts stop at document boundaries
    ]
    with pytest.raises(ValueError, match="token_ids has 8 rows"):
        top_examples(np.array([[8]]), token_ids, decode)


def test_summary_is_json_ready(random_pair):
    acts_a, acts_b, _ = random_pair
    table = match_features(acts_a, acts_b, junk_filter=False)
    summary = summarize_matches(table)
    import json

    assert json.loads(json.dumps(summary)) == summary
    assert summary["n_after_threshold"] == int(table["kept"].sum())
    assert isinstance(table, pd.DataFrame)


def test_lazy_contexts_equal_the_eager_ones():
    from sae_universality.matching import LazyContexts, top_tokens

    rng = np.random.default_rng(3)
    vocabulary = [f" w{i}" for i in range(30)]
    token_ids = rng.integers(0, 30, 200)
    group = np.repeat(np.arange(10), 20)
    top_rows = rng.integers(-1, 200, (12, 4))

    def decode(ids):
        return "".join(vocabulary[i] for i in ids)

    tokens, contexts = top_examples(top_rows, token_ids, decode, group=group)
    lazy = LazyContexts(top_rows, token_ids, decode, group=group)
    assert top_tokens(top_rows, token_ids, decode) == tokens
    assert len(lazy) == 12
    assert [lazy[feature] for feature in reversed(range(12))] == contexts[::-1]
    assert lazy[2:5] == contexts[2:5]


def _kept(table):
    kept = table[table["kept"]]
    return sorted(zip(kept["feature_b"].tolist(), kept["final_a"].tolist()))


@pytest.mark.parametrize("seed", range(8))
def test_sinkhorn_tends_to_the_optimal_assignment_as_its_regularization_goes_to_zero(seed):
    """On the whole matrix, Sinkhorn's argmax at small regularization and the Hungarian rule both equal scipy's
    maximum-weight assignment of the full correlation matrix (the paper's whole-matrix Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    from sae_universality.matching import match_correlation_matrix
    from sae_universality.settings import MatchSettings

    rng = np.random.default_rng(seed)
    correlation = rng.uniform(0.1, 0.9, size=(6, 6))
    rows, columns = linear_sum_assignment(correlation, maximize=True)
    optimal = sorted(zip(columns.tolist(), rows.tolist()))  # (feature_b, feature_a)
    base = dict(junk_filter=False, threshold=0.0, n_candidates="all")
    hungarian = match_correlation_matrix(correlation, settings=MatchSettings(one_to_one="hungarian", **base))
    assert _kept(hungarian) == optimal
    sharp = match_correlation_matrix(correlation, settings=MatchSettings(
        one_to_one="sinkhorn", sinkhorn_regularization=1e-3, sinkhorn_iterations=4000, **base))
    assert _kept(sharp) == optimal
    # At the paper's settings the plan is blurred; what it keeps is still one-to-one and positive.
    paper = match_correlation_matrix(correlation, settings=MatchSettings(one_to_one="sinkhorn", **base))
    kept = _kept(paper)
    assert len({a for _, a in kept}) == len(kept) and len(kept) >= 4


@pytest.mark.parametrize("n_candidates", [5, "all"])
def test_every_rule_recovers_a_planted_permutation(n_candidates):
    from sae_universality.matching import match_correlation_matrix
    from sae_universality.matching.rules import ONE_TO_ONE_RULES
    from sae_universality.settings import MatchSettings

    rng = np.random.default_rng(3)
    n = 30
    planted = rng.permutation(n)  # B feature j pairs with A feature planted[j]
    correlation = rng.normal(0.0, 0.05, size=(n, n))
    correlation[planted, np.arange(n)] += 0.6
    for rule in ONE_TO_ONE_RULES:
        table = match_correlation_matrix(correlation, settings=MatchSettings(
            one_to_one=rule, junk_filter=False, threshold=0.3, n_candidates=n_candidates))
        assert _kept(table) == sorted(zip(range(n), planted.tolist())), rule


def test_every_candidate_of_a_streamed_match_is_the_whole_sorted_matrix():
    from sae_universality.matching.correlation import best_matches, pearson_correlation

    rng = np.random.default_rng(5)
    acts_a = np.maximum(rng.normal(size=(400, 7)), 0)
    acts_b = np.maximum(rng.normal(size=(400, 5)) + acts_a[:, :5] * 0.5, 0)
    acts_a[:, 6] = 0.0  # a dead A feature: never a candidate
    matches = best_matches(acts_a, acts_b, n_candidates=None, feature_block=3)
    reference = pearson_correlation(acts_a, acts_b)  # (F_A, F_B), NaN for the dead feature
    assert matches.candidates_a.shape == (5, 7)
    for b in range(5):
        alive = np.flatnonzero(~np.isnan(reference[:, b]))
        expected = alive[np.argsort(-reference[alive, b], kind="stable")]
        assert matches.candidates_a[b, :len(alive)].tolist() == expected.tolist()
        np.testing.assert_allclose(matches.candidate_correlations[b, :len(alive)], reference[expected, b], atol=1e-6)
        assert (matches.candidates_a[b, len(alive):] == -1).all()
