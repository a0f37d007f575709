"""The similarity stage's table logic: adjusted p per metric, ceilings, normalized scores only where defined,
and the verdict built from the tables."""

import json

import numpy as np
import pandas as pd
import pytest

from sae_universality.similarity.stage import ceilings_of, with_adjusted_p, with_normalized
from sae_universality.report.verdict import ExperimentTables, write_verdict

SETTINGS = {"significance": 0.05, "p_adjust": "holm"}


def cell_scores(observed, null_mean, p, metric="rsa", layers_a=(0, 1, 2)):
    return pd.DataFrame({
        "model_a": "a", "model_b": "b", "layer_a": list(layers_a), "layer_b": 5, "metric": metric,
        "observed": observed, "ci_low": np.asarray(observed) - 0.1, "ci_high": np.asarray(observed) + 0.1,
        "null_mean": null_mean, "excess": np.asarray(observed) - np.asarray(null_mean),
        "z": (np.asarray(observed) - np.asarray(null_mean)) / 0.01, "p": p, "n_pairs": 100, "n_permutations": 999,
    })


def ceiling_table(rows):
    return pd.DataFrame(rows, columns=["model", "layer", "metric", "observed", "null_mean", "p"])


def test_p_is_adjusted_per_metric_across_layer_pairs():
    scores = pd.concat([cell_scores([0.5, 0.4, 0.3], 0.0, [0.001, 0.02, 0.5]),
                        cell_scores([0.5, 0.4, 0.3], 0.0, [0.01, 0.01, 0.01], metric="procrustes")], ignore_index=True)
    adjusted = with_adjusted_p(scores, "holm", ["metric"])["p_adjusted"].to_numpy()
    np.testing.assert_allclose(adjusted, [0.003, 0.04, 0.5, 0.03, 0.03, 0.03])


def test_normalized_score_only_where_the_ceiling_is_above_chance():
    scores = cell_scores([0.5, 0.4, np.nan], [0.1, 0.1, np.nan], [0.001, 0.001, np.nan])
    ceilings = ceiling_table([
        ("a", 0, "rsa", 0.9, 0.1, 0.001), ("b", 5, "rsa", 0.7, 0.1, 0.002),  # cell 0: both ceilings valid
        ("a", 1, "rsa", 0.3, 0.29, 0.4),  # cell 1: a's ceiling at chance
        ("a", 2, "rsa", 0.9, 0.1, 0.001),
    ])
    scores = pd.concat([scores, ceilings_of(scores, ceilings, 0.05)], axis=1)
    table = with_normalized(scores, 0.05)
    # Cell 0: mean ceiling 0.8, mean ceiling null 0.1 -> (0.5 - 0.1) / 0.7, interval mapped the same way.
    assert table.loc[0, "normalized"] == pytest.approx(0.4 / 0.7)
    assert table.loc[0, "normalized_ci_low"] == pytest.approx(0.3 / 0.7)
    assert table.loc[0, "normalized_ci_high"] == pytest.approx(0.5 / 0.7)
    assert table.loc[0, "normalized_note"] == ""
    # Cell 1: the ceiling's p is the larger of its two layers' (0.4): empty, and the note says why.
    assert np.isnan(table.loc[1, "normalized"]) and np.isnan(table.loc[1, "normalized_ci_high"])
    assert table.loc[1, "normalized_note"] == "ceiling not above chance (p=0.4 >= 0.05)"
    assert table.loc[2, "normalized_note"] == "cell not scored (too few pairs)"
    no_ceiling = with_normalized(pd.concat([cell_scores([0.5], [0.1], [0.001], layers_a=[0]),
                                            ceilings_of(cell_scores([0.5], [0.1], [0.001], layers_a=[0]),
                                                        ceiling_table([]), 0.05)], axis=1), 0.05)
    assert np.isnan(no_ceiling.loc[0, "normalized"]) and no_ceiling.loc[0, "normalized_note"] == "no ceiling (one SAE seed)"


def test_a_ceiling_below_its_null_gives_no_normalized_score():
    scores = cell_scores([0.5], [0.1], [0.001], layers_a=[0])
    ceilings = ceiling_table([("a", 0, "rsa", 0.05, 0.1, 0.001)])  # "significant" p but below its null
    table = with_normalized(pd.concat([scores, ceilings_of(scores, ceilings, 0.05)], axis=1), 0.05)
    assert np.isnan(table.loc[0, "normalized"]) and table.loc[0, "normalized_note"] == "ceiling below its null"


def verdict_inputs(p_values, n_permutations=999):
    scores = cell_scores([0.5, 0.4, 0.3], 0.0, p_values)
    scores["n_permutations"] = n_permutations
    scores = with_adjusted_p(scores, "holm", ["metric"])
    scores = pd.concat([scores, ceilings_of(scores, ceiling_table([]), 0.05)], axis=1)
    return with_normalized(scores, 0.05)


def quality():
    return pd.DataFrame({"model": ["a", "b"], "layer": [0, 5], "sae": "seed0", "fvu": [0.2, 0.3],
                         "dead_fraction": [0.01, 0.05], "fraction_recovered": [0.9, 0.85]})


def test_verdict_says_plainly_when_nothing_is_significant(tmp_path):
    scores = verdict_inputs([0.3, 0.5, 0.9])
    text = write_verdict(ExperimentTables({("a", "b"): scores}, quality()), SETTINGS,
                         tmp_path / "verdict.md", tmp_path / "verdict.tsv")
    assert "**Nothing is significant.**" in text
    assert "No floor control ran for this pair: set `floor: true`" in text
    assert "rsa: best at layers 0 / 5, observed 0.5 [0.4, 0.6] against 0 for random pairings" in text
    assert "loss recovered 0.9 to 0.9" in text and "loss recovered 0.85 to 0.85" in text
    table = pd.read_csv(tmp_path / "verdict.tsv", sep="\t")
    assert table.loc[0, "n_significant"] == 0 and table.loc[0, "best_layer_a"] == 0


def test_verdict_names_significant_layer_pairs_and_the_floor(tmp_path):
    scores = verdict_inputs([0.001, 0.01, 0.9])
    # A floor above chance at the best layer pair: part of it needs no trained weights, and the difference counts.
    floor = verdict_inputs([0.001, 0.5, 0.9]).assign(model_b="b-rerandomized", observed=[0.2, 0.1, 0.1],
                                                     excess=[0.2, 0.1, 0.1])
    text = write_verdict(ExperimentTables({("a", "b"): scores, ("a", "b-rerandomized"): floor}, quality(),
                                          floors={("a", "b"): ("a", "b-rerandomized")}),
                         SETTINGS, tmp_path / "v.md", tmp_path / "v.tsv")
    assert "Nothing is significant" not in text and "rsa 2/3" in text
    assert ("**2 of 3 layer pairs are significantly similar on at least one metric.** The most consistent is a "
            "layer 0 with b layer 5, significant on 1 of 1 metrics (rsa).") in text
    assert "Caution" not in text  # these SAEs recover 0.85 and more, with few dead latents
    assert "**significant**" in text
    assert "re-randomized floor (b-rerandomized) is above chance too (excess 0.2, adjusted p 0.003" in text
    assert "exceeds it by 0.3" in text
    assert "a vs b-rerandomized" not in text  # the floor pair is part of its real pair's verdict
    assert "No floor control ran" not in text
    table = pd.read_csv(tmp_path / "v.tsv", sep="\t")
    assert len(table) == 1 and table.loc[0, "excess_above_floor"] == pytest.approx(0.3)
    # A floor at chance: its excess is noise, so no difference is drawn from it (the table keeps the number).
    at_chance = floor.assign(p=[0.4, 0.5, 0.9], p_adjusted=[0.8, 0.8, 0.9], excess=[-0.5, 0.1, 0.1])
    text = write_verdict(ExperimentTables({("a", "b"): scores, ("a", "b-rerandomized"): at_chance}, quality(),
                                          floors={("a", "b"): ("a", "b-rerandomized")}), SETTINGS,
                         tmp_path / "v.md", tmp_path / "v.tsv")
    assert ("the re-randomized floor (b-rerandomized) is at chance here (excess -0.5, adjusted p 0.8") in text
    assert "a model with redrawn weights does not produce this score" in text
    assert "exceeds it by" not in text and "falls below it by" not in text
    table = pd.read_csv(tmp_path / "v.tsv", sep="\t")
    assert table.loc[0, "excess_above_floor"] == pytest.approx(1.0)  # 0.5 - (-0.5)


def test_verdict_reads_an_unscorable_floor_as_no_matches_from_token_identity(tmp_path):
    """The floor's matching kept fewer pairs than min_pairs: its scores are NaN, which is an answer."""
    scores = verdict_inputs([0.001, 0.01, 0.9])
    floor = verdict_inputs([0.4, 0.5, 0.9]).assign(model_b="b-rerandomized", observed=np.nan, excess=np.nan,
                                                   p_adjusted=np.nan, n_pairs=3)
    text = write_verdict(ExperimentTables({("a", "b"): scores, ("a", "b-rerandomized"): floor}, quality(),
                                          floors={("a", "b"): ("a", "b-rerandomized")}),
                         SETTINGS, tmp_path / "v.md", tmp_path / "v.tsv")
    assert ("the re-randomized floor (b-rerandomized) keeps only 3 matched pairs at these layers, too few to score: "
            "a model with redrawn weights does not produce these matches.") in text
    assert "n/a" not in text and "falls below" not in text
    table = pd.read_csv(tmp_path / "v.tsv", sep="\t")
    assert table.loc[0, "floor_n_pairs"] == 3 and np.isnan(table.loc[0, "excess_above_floor"])


def test_verdict_warns_when_permutations_cannot_reach_significance(tmp_path):
    scores = verdict_inputs([0.005, 0.005, 0.005], n_permutations=199)  # Holm over 3: at best 3 / 200 = 0.015
    text = write_verdict(ExperimentTables({("a", "b"): scores}, quality()), SETTINGS,
                         tmp_path / "v.md", tmp_path / "v.tsv")
    assert "Too few random pairings" not in text
    scores = verdict_inputs([0.05, 0.05, 0.05], n_permutations=19)  # Holm over 3: at best 3 / 20 = 0.15
    text = write_verdict(ExperimentTables({("a", "b"): scores}, quality()), SETTINGS,
                         tmp_path / "v.md", tmp_path / "v.tsv")
    assert "**Too few random pairings to find anything:** with 19 per null and 3 layer pairs" in text
    assert "above 60" in text


def test_verdict_cautions_about_weak_saes(tmp_path):
    weak = quality().assign(fraction_recovered=[0.32, 0.9], dead_fraction=[0.02, 0.5], loss_tokens=[2500, 2500])
    text = write_verdict(ExperimentTables({("a", "b"): verdict_inputs([0.3, 0.5, 0.9])}, weak), SETTINGS,
                         tmp_path / "v.md", tmp_path / "v.tsv")
    assert "**Caution: some SAEs are weak** (loss recovered as low as 0.32; up to 50% of latents dead" in text


def test_verdict_reports_semantic_cells():
    from sae_universality.report.verdict import semantic_sentence

    semantic = pd.DataFrame({
        "layer_a": [0, 0, 1, 1], "layer_b": 5, "category": ["time", "time", "months", "nature"],
        "metric": ["rsa", "procrustes", "rsa", "rsa"], "n_pairs": [30, 30, 25, 3],
        "skipped": [False, False, False, True], "p_adjusted": [0.01, 0.5, 0.2, np.nan], "excess": [0.12, 0.0, 0.03, np.nan],
    })
    assert semantic_sentence(semantic, 0.05) == (
        "**Semantic subspaces:** 2 (layer pair, category) cells had pairs enough to score (at most 30 pairs); "
        "significant after adjustment: time at 0 / 5 on rsa (excess 0.12).")
    none = semantic.assign(skipped=True)
    assert "no category had pairs enough to score at any layer pair (the largest had 30" in semantic_sentence(none, 0.05)


def test_verdict_cautions_about_a_loss_on_few_tokens(tmp_path):
    few = quality().assign(loss_tokens=[240, 240])  # good SAEs, but one loss window
    text = write_verdict(ExperimentTables({("a", "b"): verdict_inputs([0.3, 0.5, 0.9])}, few), SETTINGS,
                         tmp_path / "v.md", tmp_path / "v.tsv")
    assert ("**Caution: some SAEs are weak** (loss measured on only 240 held-out tokens, a noisy estimate: raise "
            "saes.loss_windows;") in text


def control_rows(layer_a, layer_b, kept, above=(1.0, 0.5, 0.4, 1.0, 0.0), rematched=(40, 20, 18, 40, 1)):
    controls = ["full", "context_only", "context_only_bigram", "document_demeaned", "document_shifted"]
    return pd.DataFrame({"model_a": "a", "model_b": "b", "layer_a": layer_a, "layer_b": layer_b, "control": controls,
                         "n_kept_full": 40, "kept_full_mean_correlation": kept, "kept_full_above_threshold": above,
                         "n_kept_rematched": rematched, "rematched_mean_correlation": 0.2, "what": ""})


def test_context_only_scores_sit_beside_the_full_ones_with_the_share_of_the_excess_kept():
    from sae_universality.similarity.controls import beside_full as context_only_scores

    full = pd.DataFrame({"model_a": "a", "model_b": "b", "layer_a": [0, 1], "layer_b": 5, "metric": "rsa",
                         "observed": [0.5, 0.3], "ci_low": 0.0, "ci_high": 1.0, "null_mean": 0.0,
                         "excess": [0.5, -0.1], "p_adjusted": [0.01, 0.9], "n_pairs": 40})
    context = full.assign(observed=[0.2, 0.1], excess=[0.2, 0.1], p=[0.004, 0.3], n_pairs=20).drop(
        columns="p_adjusted")
    table = context_only_scores(context, full, SETTINGS)
    assert table["p_adjusted"].tolist() == pytest.approx([0.008, 0.3])  # Holm over the two layer pairs
    assert table["significant"].tolist() == [True, False]
    assert table["full_excess"].tolist() == [0.5, -0.1] and table["full_n_pairs"].tolist() == [40, 40]
    assert table["excess_surviving"].iloc[0] == pytest.approx(0.4)
    assert np.isnan(table["excess_surviving"].iloc[1])  # no share of a full excess that is not positive


def test_verdict_says_what_token_identity_and_the_document_explain():
    from sae_universality.report.verdict import control_paragraph

    controls = pd.concat([control_rows(0, 5, [0.3, 0.12, 0.1, 0.29, 0.01]),
                          control_rows(1, 5, [0.25, 0.02, 0.01, 0.25, 0.005], above=(1.0, 0.05, 0.0, 1.0, 0.0),
                                       rematched=(40, 2, 1, 40, 0))])
    context_only = pd.DataFrame({"model_a": "a", "model_b": "b", "layer_a": [0, 0, 1, 1], "layer_b": 5,
                                 "metric": ["rsa", "procrustes"] * 2, "observed": [0.2, 0.1, np.nan, np.nan],
                                 "p_adjusted": [0.01, 0.2, np.nan, np.nan], "excess_surviving": [0.4, 0.3, np.nan, np.nan]})
    untrained_row = pd.DataFrame([{"model_a": "a", "model_b": "b", "layer_a": 0, "layer_b": 5,
                                   "control": "untrained_dictionary", "n_kept_rematched": 7,
                                   "rematched_mean_correlation": 0.15}])
    untrained = context_only.assign(observed=[0.01, 0.0, np.nan, np.nan], p_adjusted=[0.5, 0.04, np.nan, np.nan],
                                    excess_surviving=[0.05, 0.1, np.nan, np.nan])
    text = control_paragraph(pd.concat([controls, untrained_row]), {"context_only": context_only,
                                                                    "untrained": untrained}, 0.05, "a", "b")
    assert ("- 0 / 5: the 40 kept pairs correlate at 0.3 in full, 0.12 without the current token (50% of them still "
            "at the threshold or above), 0.1 without the previous and current token, 0.29 without each document's "
            "mean, and 0.01 with b rolled within documents. Matched again, the context-only codes keep 20 pairs, "
            "significant on 1 of 2 metrics after adjustment (rsa); their excess over chance is 0.30 to 0.40 times "
            "the full result's, metric by metric. Untrained dictionaries of the same width and k in place of the SAEs "
            "keep 7 pairs (mean correlation 0.15) against the SAEs' 40 (0.3); their decoder directions are random, so "
            "their geometry says nothing (significant on 1 of 2 metrics) and only their matching is a baseline.") in text
    assert "- 1 / 5: " in text and "keep 2 pairs, too few to score." in text
    assert "Without token identity, 1 of 2 layer pairs still match significantly (0 / 5)" in text
    assert "At 1 / 5 nothing significant survives without token identity" in text
    assert "The document does not explain the matches" in text
    assert "\n\n- 0 / 5:" in text and ".\n\nWithout token identity" in text  # a list, apart from the paragraphs
    assert control_paragraph(None, {}, 0.05, "a", "b") == ""


def test_verdict_sets_each_layer_pair_beside_its_lexical_floor():
    from sae_universality.report.verdict import control_paragraph

    controls = pd.concat([control_rows(0, 5, [0.3, 0.12, 0.1, 0.29, 0.01]), control_rows(1, 5, [0.3, 0.12, 0.1, 0.29, 0.01])])
    floor_rows = pd.DataFrame([{"model_a": "a", "model_b": "b", "layer_a": layer, "layer_b": 5, "control": "lexical_floor",
                                "n_kept_rematched": kept, "rematched_mean_correlation": 0.4}
                               for layer, kept in ((0, 30), (1, 35))])
    lexical = pd.DataFrame({"model_a": "a", "model_b": "b", "layer_a": [0, 0, 1, 1], "layer_b": 5,
                            "metric": ["rsa", "procrustes"] * 2, "observed": [0.05, 0.02, 0.3, 0.02],
                            "ci_low": [0.0, 0.0, 0.2, 0.0], "ci_high": [0.1, 0.04, 0.45, 0.04],
                            "p_adjusted": [0.2, 0.3, 0.001, 0.3], "excess_surviving": [0.1, 0.05, 0.6, 0.05],
                            "null_mean": 0.0, "full_ci_low": [0.3, 0.1, 0.4, 0.1], "full_null_mean": 0.0})
    text = control_paragraph(pd.concat([controls, floor_rows]), {"lexical": lexical}, 0.05, "a", "b")
    assert ("With each model's activations replaced by their per-token means (the lexical floor), the same SAEs keep "
            "30 pairs (mean correlation 0.4), significant on 0 of 2 metrics after adjustment; their excess over "
            "chance is 0.05 to 0.10 times the full result's, metric by metric; the full result's excess over chance lies "
            "above the lexical floor's (their intervals apart) on 2 of 2 metrics.") in text
    assert "on 1 of 2 metrics." in text  # layer 1: rsa's intervals overlap (0.4 <= 0.45)
    assert "At 0 / 5 every metric's excess over chance lies above what token identity alone gives" in text
    assert "At 1 / 5 some metrics' excess over chance is within reach of the lexical floor's" in text
    # Excesses, not raw scores: the default's Procrustes at 9 / 10, where the floor's pairs have a higher chance
    # level (0.806 against 0.797) and so a higher raw score, but a smaller excess than the full result.
    from sae_universality.report.verdict import excess_intervals_apart
    procrustes = pd.DataFrame({"ci_high": [0.8134], "null_mean": [0.8058], "full_ci_low": [0.8062],
                               "full_null_mean": [0.7974]})
    assert excess_intervals_apart(procrustes).tolist() == [True]


def test_verdict_reports_seed_stability_in_the_literatures_terms(tmp_path):
    stable = quality().assign(sae="seed1", fraction_shared=[0.31, 0.42], decoder_cosine_mean=[0.71, 0.8])
    text = write_verdict(ExperimentTables({("a", "b"): verdict_inputs([0.3, 0.5, 0.9])},
                                          pd.concat([quality(), stable])), SETTINGS,
                         tmp_path / "v.md", tmp_path / "v.tsv")
    assert ("paired one to one by decoder direction, its seeds share 31.0% of their latents at cosine 0.7 or "
            "more (mean cosine 0.71 to 0.71)") in text
    assert "share 42.0% of" in text


def test_verdict_calls_a_broken_floor_model_broken(tmp_path):
    from sae_universality.report.verdict import degenerate_floor_note

    floor_quality = pd.DataFrame({"model": "b-rerandomized", "layer": [10, 14], "sae": "seed0",
                                  "fvu": [0.62, 0.61], "dead_fraction": 0.0, "fraction_recovered": [1.2, 1.0],
                                  "ce_clean": 232.3, "ce_zero": [208.7, 240.0], "uniform_loss": np.log(262144)})
    note = degenerate_floor_note(floor_quality, "b-rerandomized")
    assert note == ("**The re-randomized floor (b-rerandomized) is a broken model:** its clean loss is 232 nats, "
                    "above the 12.5 of a uniform guess over its vocabulary; zero-ablating layer 10 lowers that loss "
                    "(to 209); its SAEs leave 0.61 to 0.62 of its variance unexplained. Its scores say what a model "
                    "with redrawn weights gives, not what token identity gives: the context-only control answers "
                    "that.")
    working = floor_quality.assign(ce_clean=3.1, ce_zero=[6.0, 7.0])
    assert degenerate_floor_note(working, "b-rerandomized") == ""
    assert degenerate_floor_note(floor_quality.drop(columns="uniform_loss"), "b-rerandomized") == ""
    scores = verdict_inputs([0.001, 0.01, 0.9])
    floor = verdict_inputs([0.4, 0.5, 0.9]).assign(model_b="b-rerandomized")
    text = write_verdict(ExperimentTables({("a", "b"): scores, ("a", "b-rerandomized"): floor},
                                          pd.concat([quality(), floor_quality]),
                                          floors={("a", "b"): ("a", "b-rerandomized")}),
                         SETTINGS, tmp_path / "v.md", tmp_path / "v.tsv")
    assert "**The re-randomized floor (b-rerandomized) is a broken model:**" in text


def test_fiellers_interval_covers_the_true_ratio_at_its_level():
    """Monte Carlo in float64: estimates of a numerator and a denominator with known normal errors; the
    interval should contain the true ratio in about 95% of draws, where dividing the numerator's interval
    by the estimated denominator (the old mapping) covers clearly less once the denominator is noisy."""
    from sae_universality.similarity.baselines import ratio_interval

    rng = np.random.default_rng(0)
    draws, true_numerator, true_denominator, numerator_se, denominator_se = 20000, 0.3, 0.5, 0.05, 0.1
    numerator = true_numerator + numerator_se * rng.standard_normal(draws)
    denominator = true_denominator + denominator_se * rng.standard_normal(draws)
    low, high = ratio_interval(numerator, numerator_se, numerator_se, denominator, denominator_se, 0.95)
    bounded = np.isfinite(low)
    truth = true_numerator / true_denominator
    coverage = np.mean(np.where(bounded, (low <= truth) & (truth <= high), True))
    assert 0.94 <= coverage <= 0.96
    mapped = np.mean(np.abs(numerator / denominator - truth) <= 1.96 * numerator_se / denominator)
    assert mapped < 0.85
    # Without the denominator's uncertainty it is the numerator's interval divided by the denominator,
    # each side with its own half-width; with a denominator not distinguishable from 0 it is unbounded.
    z = 1.959963984540054
    assert ratio_interval(0.4, 0.1 / z, 0.2 / z, 0.8, 0.0, 0.95) == pytest.approx((0.3 / 0.8, 0.6 / 0.8))
    assert all(np.isnan(ratio_interval(0.4, 0.05, 0.05, 0.1, 0.1, 0.95)))


def test_the_normalized_interval_widens_with_the_ceilings_own_interval():
    scores = cell_scores([0.5], [0.1], [0.001], layers_a=[0])
    narrow = ceiling_table([("a", 0, "rsa", 0.9, 0.1, 0.001), ("b", 5, "rsa", 0.7, 0.1, 0.002)])
    wide = narrow.assign(ci_low=narrow["observed"] - 0.2, ci_high=narrow["observed"] + 0.2)
    by_ceiling = {}
    for name, ceilings in (("narrow", narrow), ("wide", wide)):
        table = with_normalized(pd.concat([scores, ceilings_of(scores, ceilings, 0.05)], axis=1), 0.05)
        by_ceiling[name] = table.loc[0]
    # The ceiling's standard error: each layer's half-width over z, the mean of two independent ones.
    assert by_ceiling["narrow"]["ceiling_se"] == 0.0
    assert by_ceiling["wide"]["ceiling_se"] == pytest.approx(np.sqrt(2 * (0.2 / 1.959964) ** 2) / 2)
    assert by_ceiling["wide"]["normalized"] == pytest.approx(0.4 / 0.7)
    assert by_ceiling["wide"]["normalized_ci_low"] < by_ceiling["narrow"]["normalized_ci_low"] == pytest.approx(0.3 / 0.7)
    assert by_ceiling["wide"]["normalized_ci_high"] > by_ceiling["narrow"]["normalized_ci_high"] == pytest.approx(0.5 / 0.7)
    # Independent float64 check of the upper bound: solve (E - rC)^2 = z^2 (sE^2 + r^2 sC^2) by bisection.
    z, excess, ceiling, se_e, se_c = 1.959964, 0.4, 0.7, 0.1 / 1.959964, by_ceiling["wide"]["ceiling_se"]
    lo, hi = 0.4 / 0.7, 10.0
    for _ in range(200):
        middle = (lo + hi) / 2
        inside = (excess - middle * ceiling) ** 2 <= z ** 2 * (se_e ** 2 + middle ** 2 * se_c ** 2)
        lo, hi = (middle, hi) if inside else (lo, middle)
    assert by_ceiling["wide"]["normalized_ci_high"] == pytest.approx(lo, rel=1e-6)


def test_the_ceiling_of_three_seeds_is_the_mean_over_their_three_pairs_with_its_spread():
    from sae_universality.similarity.stage import mean_over_seed_pairs

    def seed_pair(sae_a, sae_b, observed):
        return pd.DataFrame({"model": "a", "layer": 3, "sae_a": sae_a, "sae_b": sae_b, "metric": ["rsa", "procrustes"],
                             "observed": observed, "null_mean": [0.0, 0.1], "p": [0.001, 0.01], "n_pairs": [100, 100]})

    tables = [seed_pair("seed0", "seed1", [0.3, 0.5]), seed_pair("seed0", "seed2", [0.4, 0.6]),
              seed_pair("seed1", "seed2", [0.8, 0.7])]
    combined = mean_over_seed_pairs(tables, ["model", "layer", "metric"]).set_index("metric")
    assert list(combined.columns[:5]) == ["model", "layer", "observed", "null_mean", "p"]
    assert combined.loc["rsa", "observed"] == pytest.approx(0.5)
    assert combined.loc["rsa", "seed_sd"] == pytest.approx(np.std([0.3, 0.4, 0.8], ddof=1))
    assert (combined.loc["rsa", "observed_min"], combined.loc["rsa", "observed_max"]) == (0.3, 0.8)
    assert combined["seed_pairs"].tolist() == [3, 3] and combined["layer"].tolist() == [3, 3]
    # One pair passes through as it is: the two-seed default's ceiling keeps its values.
    single = mean_over_seed_pairs(tables[:1], ["model", "layer", "metric"])
    assert single.drop(columns="seed_pairs").equals(tables[0].drop(columns=["sae_a", "sae_b"]))
    # The spread over seed pairs enters the ceiling's standard error: 3 pairs, sd 0.265 -> + sd^2 / 3.
    from sae_universality.similarity.stage import ceiling_standard_errors
    with_interval = combined.reset_index().assign(ci_low=lambda t: t["observed"] - 0.1,
                                                  ci_high=lambda t: t["observed"] + 0.1)
    expected = np.sqrt((0.1 / 1.959964) ** 2 + np.var([0.3, 0.4, 0.8], ddof=1) / 3)
    assert ceiling_standard_errors(with_interval, 0.95)[0] == pytest.approx(expected, rel=1e-5)


def test_verdict_gives_the_context_only_fraction_of_its_own_ceiling():
    from sae_universality.report.verdict import control_paragraph

    context_only = pd.DataFrame({"model_a": "a", "model_b": "b", "layer_a": 0, "layer_b": 5,
                                 "metric": ["rsa", "procrustes"], "observed": [0.2, 0.1], "p_adjusted": [0.01, 0.02],
                                 "excess_surviving": [0.4, 0.3], "normalized": [0.35, 0.8]})
    text = control_paragraph(control_rows(0, 5, [0.3, 0.12, 0.1, 0.29, 0.01]), {"context_only": context_only},
                             0.05, "a", "b")
    assert ("times the full result's, metric by metric; against the context-only codes' own seed-to-seed ceiling "
            "they reach 0.35 to 0.80 of it") in text


def test_the_lexical_floor_is_scored_on_as_many_pairs_as_the_full_result(tmp_path):
    """score_layer_pair(at_most=n): a seeded random subset of n kept pairs, the same one each time."""
    from safetensors.numpy import save_file

    from sae_universality.similarity.stage import score_layer_pair

    rng = np.random.default_rng(0)
    for name, width in (("a", 12), ("b", 14)):
        folder = tmp_path / name
        folder.mkdir()
        save_file({"W_dec": rng.standard_normal((60, width)).astype(np.float32)}, str(folder / "sae_weights.safetensors"))
        (folder / "cfg.json").write_text(json.dumps({"d_in": width, "d_sae": 60, "architecture": "topk", "k": 4}))
    table = pd.DataFrame({"feature_b": np.arange(50), "final_a": rng.permutation(60)[:50], "kept": True})
    table.to_csv(tmp_path / "matches.tsv", sep="\t", index=False)
    settings = {"metrics": ["rsa"], "n_permutations": 20, "bootstrap_draws": 5, "random_subset_draws": 2, "min_pairs": 5}
    once = score_layer_pair(tmp_path / "matches.tsv", tmp_path / "a", tmp_path / "b", tmp_path / "one.tsv",
                            settings=settings, labels={"layer_a": 1}, at_most=20)
    again = score_layer_pair(tmp_path / "matches.tsv", tmp_path / "a", tmp_path / "b", tmp_path / "two.tsv",
                             settings=settings, labels={"layer_a": 1}, at_most=20)
    every = score_layer_pair(tmp_path / "matches.tsv", tmp_path / "a", tmp_path / "b", tmp_path / "all.tsv",
                             settings=settings, labels={"layer_a": 1})
    assert once["n_pairs"].tolist() == [20] and every["n_pairs"].tolist() == [50]
    assert once["observed"].tolist() == again["observed"].tolist() != every["observed"].tolist()


def test_verdict_says_what_the_models_are_beside_their_results(tmp_path):
    manifests = []
    for name, description in (("a", "Model A (the instruction-tuned one), a 4-bit GGUF"), ("b", "")):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"name": name, "source": "path", "location": f"/models/{name}",
                                    **({"description": description} if description else {})}))
        manifests.append(path)
    from sae_universality.report.verdict import model_descriptions

    models = model_descriptions(manifests)
    assert models == {"a": "Model A (the instruction-tuned one), a 4-bit GGUF", "b": "path: /models/b"}
    text = write_verdict(ExperimentTables({("a", "b"): verdict_inputs([0.001, 0.5, 0.9])}, quality(), models=models),
                         SETTINGS, tmp_path / "v.md", tmp_path / "v.tsv")
    assert "*The models.* a: Model A (the instruction-tuned one), a 4-bit GGUF. b: path: /models/b." in text
