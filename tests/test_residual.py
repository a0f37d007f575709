"""The raw residual streams compared before any SAE: the feature-space debiased CKA equals the Gram one, held-out
SVCCA holds out whole windows, and on planted streams each comparison says what it should."""

import numpy as np
import pandas as pd
import pytest

from sae_universality.similarity.cca import grouped_folds, heldout_svcca
from sae_universality.similarity.cka import debiased_cka, debiased_cka_of_features
from sae_universality.similarity.residual import (ResidualPositions, residual_scores, whole_window_sample)


@pytest.mark.parametrize("shared", [0.0, 0.5, 1.0])
def test_debiased_cka_from_features_equals_the_gram_estimator(shared):
    rng = np.random.default_rng(int(shared * 10))
    X = rng.standard_normal((250, 12)) + 3.0  # uncentered on purpose
    Y = shared * X[:, :8] @ rng.standard_normal((8, 17)) + rng.standard_normal((250, 17))
    assert debiased_cka_of_features(X, Y) == pytest.approx(debiased_cka(X, Y), abs=1e-12)


def test_grouped_folds_hold_out_each_window_whole():
    groups = np.repeat(np.arange(40), 7)[np.random.default_rng(0).permutation(280)]
    labels = grouped_folds(groups, 5, seed=3)
    assert pd.Series(labels).groupby(groups).nunique().max() == 1
    assert sorted(np.unique(labels)) == [0, 1, 2, 3, 4]
    assert grouped_folds(groups, 5, seed=3).tolist() == labels.tolist()  # seeded


def test_whole_window_sample_takes_whole_windows_up_to_the_size():
    window = np.repeat(np.arange(50), 20)
    keep = whole_window_sample(window, 333, seed=0)
    assert keep.sum() == 320 and len(np.unique(window[keep])) == 16
    assert pd.Series(keep).groupby(window).nunique().max() == 1  # each window in or out entirely
    assert whole_window_sample(window, 5000, seed=0).all()


def planted_streams(context_weight: float, seed: int = 0) -> ResidualPositions:
    """Two 'models' over 60 documents of 2 windows of 40 positions: each stream is a token direction plus, with
    weight context_weight, a context signal shared by the two (what token identity cannot explain), plus noise."""
    from sae_universality.matching.lexical import token_mean_activations

    rng = np.random.default_rng(seed)
    n = 60 * 2 * 40
    window = np.repeat(np.arange(120), 40)
    document = window // 2
    tokens = rng.integers(0, 40, n)
    context = rng.standard_normal((n, 3))
    a = rng.standard_normal((40, 10))[tokens] + context_weight * context @ rng.standard_normal((3, 10))
    b = rng.standard_normal((40, 14))[tokens] + context_weight * context @ rng.standard_normal((3, 14))
    a, b = a + 0.3 * rng.standard_normal(a.shape), b + 0.3 * rng.standard_normal(b.shape)
    fold = (window % 2).astype(np.int8)
    return ResidualPositions(a, b, token_mean_activations(a, tokens, fold).astype(np.float64),
                             token_mean_activations(b, tokens, fold).astype(np.float64), window, document)


def test_residual_comparisons_separate_token_identity_context_and_chance():
    token_only = residual_scores(planted_streams(0.0), draws=8).set_index(["metric", "comparison"])["observed"]
    with_context = residual_scores(planted_streams(2.0), draws=8).set_index(["metric", "comparison"])
    for metric in ("debiased_cka", "heldout_svcca"):
        # Rolled within documents, nothing lines up: chance.
        assert abs(token_only[metric, "document_shifted"]) < 0.05
        # Tokens only: the aligned streams are alike, and no more alike than their per-token means.
        assert token_only[metric, "aligned"] > 0.15
        assert token_only[metric, "aligned"] <= token_only[metric, "token_means"] + 0.02
        # A shared context signal makes the aligned streams far more alike than their tokens do.
        assert with_context.loc[(metric, "aligned"), "observed"] > token_only[metric, "token_means"] + 0.2
    observed = with_context["observed"]
    assert (with_context["ci_low"] <= observed + 1e-12).all() and (with_context["ci_high"] >= observed - 1e-12).all()
    assert (with_context["n_positions"] == 4800).all() and (with_context["n_windows"] == 120).all()


def test_the_verdict_reads_the_residual_comparison_per_layer_pair():
    from sae_universality.report.verdict import residual_paragraph

    rows = [{"model_a": "a", "model_b": "b", "layer_a": 2, "layer_b": 1, "metric": metric, "comparison": comparison,
             "observed": value, "ci_low": value - 0.01, "ci_high": value + 0.01, "n_positions": 8000, "n_windows": 40}
            for metric, values in (("debiased_cka", (0.07, 0.16, 0.002)), ("heldout_svcca", (0.96, 0.97, 0.2)))
            for comparison, value in zip(("aligned", "token_means", "document_shifted"), values)]
    text = residual_paragraph(pd.DataFrame(rows), "b")
    assert "(8,000 aligned positions at most, whole windows)" in text
    assert ("- 2 / 1: debiased CKA 0.07 [0.06, 0.08] aligned, 0.16 [0.15, 0.17] per-token means, "
            "0.002 [-0.008, 0.012] rolled; held-out SVCCA 0.96 [0.95, 0.97] aligned") in text
    assert residual_paragraph(None, "b") == ""


def test_held_out_svcca_needs_three_folds_of_three_windows():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 5))
    Y = X @ rng.standard_normal((5, 6))
    assert np.isnan(heldout_svcca(X, Y, groups=np.repeat(np.arange(8), 50)))  # 8 windows: two folds of three
    assert heldout_svcca(X, Y, groups=np.repeat(np.arange(10), 40)) > 0.99
