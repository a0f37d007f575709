"""Similarity over depth: the best layer of B per layer of A, its look-alikes, and the rank trend's exact p."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sae_universality.report.depth import depth_profile, depth_trend, relative_depth, write_depth


def scores_table(excess_of, layers_a, layers_b, half_width=0.01, metrics=("rsa", "debiased_cka")):
    rows = []
    for metric, la, lb in itertools.product(metrics, layers_a, layers_b):
        excess = excess_of(metric, la, lb)
        rows.append({"model_a": "small", "model_b": "large", "layer_a": la, "layer_b": lb, "metric": metric,
                     "observed": excess + 0.02, "null_mean": 0.02, "ci_low": excess + 0.02 - half_width,
                     "ci_high": excess + 0.02 + half_width, "p_adjusted": 0.001 if excess > 0.05 else 0.5})
    return pd.DataFrame(rows)


def test_relative_depth_puts_a_blocks_output_at_its_share_of_the_model():
    assert relative_depth(0, 4) == 0.25 and relative_depth(3, 4) == 1.0
    np.testing.assert_allclose(relative_depth([5, 11, 17], 24), [0.25, 0.5, 0.75])


def test_a_profile_that_follows_depth_finds_each_layers_twin_and_an_exact_p():
    # A has 6 of 12 blocks, B 6 of 24: A's layer l sits at (l+1)/12, B's m at (m+1)/24; similarity peaks where they meet.
    layers_a, layers_b = [0, 2, 4, 6, 8, 11], [1, 5, 9, 13, 17, 23]

    def excess(metric, la, lb):
        return 0.3 - abs(relative_depth(la, 12) - relative_depth(lb, 24))

    profile = depth_profile(scores_table(excess, layers_a, layers_b), 12, 24)
    assert len(profile) == 12 and set(profile["metric"]) == {"rsa", "debiased_cka"}
    assert set(profile["scale"]) == {"excess"}
    rsa = profile[profile["metric"] == "rsa"].set_index("layer_a")
    for la in layers_a:  # the brute-force best: the layer of B nearest in relative depth
        nearest = min(layers_b, key=lambda lb: abs(relative_depth(la, 12) - relative_depth(lb, 24)))
        assert rsa.loc[la, "best_layer_b"] == nearest
        assert rsa.loc[la, "best_value"] == pytest.approx(excess("rsa", la, nearest))
    # Intervals of 0.01 either side: only layers within 0.02 of the best overlap it; here none but itself.
    assert (rsa["plausible_layers_b"] == 1).all()
    assert (rsa["plausible_low_relative_depth_b"] == rsa["best_relative_depth_b"]).all()
    trend = depth_trend(profile).set_index("metric")
    assert trend.loc["rsa", "spearman"] == pytest.approx(1.0)
    # Exact: of the 720 orderings of A's 6 layers only the identity reaches rho = 1.
    assert trend.loc["rsa", "p_one_sided"] == pytest.approx(1 / math.factorial(6))
    # Holm over the two metrics of the scale: both at 1/720, so both at 2/720.
    assert trend["p_adjusted"].to_numpy() == pytest.approx([2 / 720, 2 / 720])
    assert trend.loc["rsa", "n_layers_a"] == 6
    expected_offset = np.mean([abs(rsa.loc[la, "best_relative_depth_b"] - relative_depth(la, 12)) for la in layers_a])
    assert trend.loc["rsa", "mean_abs_offset"] == pytest.approx(expected_offset)


def test_wide_intervals_widen_the_range_of_look_alikes_and_a_flat_profile_has_no_trend():
    layers = [0, 1, 2, 3]
    flat = scores_table(lambda metric, la, lb: 0.2 + 0.001 * lb, layers, layers, half_width=0.05, metrics=("rsa",))
    profile = depth_profile(flat, 4, 4)
    assert (profile["best_layer_b"] == 3).all()
    assert (profile["plausible_layers_b"] == 4).all()
    assert (profile["plausible_low_relative_depth_b"] == 0.25).all() and (profile["plausible_high_relative_depth_b"] == 1).all()
    trend = depth_trend(profile).iloc[0]
    assert math.isnan(trend["spearman"]) and trend["p_one_sided"] == 1.0


def test_a_reversed_profile_is_not_called_a_trend():
    layers = [0, 1, 2, 3, 4]
    reversed_ = scores_table(lambda metric, la, lb: 0.3 - abs((4 - la) - lb) * 0.05, layers, layers, metrics=("rsa",))
    trend = depth_trend(depth_profile(reversed_, 5, 5)).iloc[0]
    assert trend["spearman"] == pytest.approx(-1.0)
    assert trend["p_one_sided"] == pytest.approx(1.0)


def test_many_layers_use_random_orderings_with_the_observed_one_counted():
    layers = list(range(10))
    table = scores_table(lambda metric, la, lb: 0.3 - abs(la - lb) * 0.02, layers, layers, metrics=("rsa",))
    trend = depth_trend(depth_profile(table, 10, 10), draws=999).iloc[0]
    assert trend["spearman"] == pytest.approx(1.0)
    assert trend["p_one_sided"] == pytest.approx(1 / 1000)


def test_the_fraction_of_the_ceiling_divides_out_structure_that_grows_with_depth():
    """The atlas's case: the excess grows with B's depth (deeper codes are more structured, and so is their
    seed-to-seed ceiling), so on the excess B's deepest layer is every layer's best; divided by the ceiling,
    similarity peaks at equal relative depth, and that is the profile the fraction of the ceiling finds."""
    layers = [0, 1, 2, 3, 4, 5]

    def fraction(la, lb):
        return 1.0 - 0.1 * abs(la - lb)

    table = scores_table(lambda metric, la, lb: fraction(la, lb) * 0.05 * (1 + lb), layers, layers, half_width=0.001,
                         metrics=("rsa",))
    ceiling = 0.05 * (1 + table["layer_b"])
    table["normalized"] = (table["observed"] - table["null_mean"]) / ceiling
    table["normalized_ci_low"], table["normalized_ci_high"] = table["normalized"] - 0.01, table["normalized"] + 0.01
    table["ceiling_valid"] = True
    table.loc[(table["layer_a"] == 5) & (table["layer_b"] == 0), ["normalized_ci_high"]] = np.nan  # unbounded above
    excess = depth_profile(table, 6, 6)
    assert (excess["best_layer_b"] == 5).all()
    assert depth_trend(excess).iloc[0]["p_one_sided"] == 1.0
    fractions = depth_profile(table, 6, 6, scale="fraction_of_ceiling")
    assert list(fractions["best_layer_b"]) == layers and set(fractions["scale"]) == {"fraction_of_ceiling"}
    assert fractions["best_value"].to_numpy() == pytest.approx(np.ones(6))
    # The unbounded interval of (5, 0) reaches every best value, so it is a look-alike of layer 5's best.
    assert fractions.set_index("layer_a").loc[5, "plausible_low_relative_depth_b"] == pytest.approx(1 / 6)
    trend = depth_trend(fractions).iloc[0]
    assert trend["spearman"] == pytest.approx(1.0) and trend["p_one_sided"] == pytest.approx(1 / 720)
    # A cell whose ceiling is not valid has no fraction: it cannot be anyone's best.
    table.loc[(table["layer_a"] == 2) & (table["layer_b"] == 2), "ceiling_valid"] = False
    assert depth_profile(table, 6, 6, scale="fraction_of_ceiling").set_index("layer_a").loc[2, "best_layer_b"] != 2
    with pytest.raises(ValueError, match="not one of"):
        depth_profile(table, 6, 6, scale="raw")


def test_write_depth_reads_the_models_depths_from_their_manifests(tmp_path):
    layers_a, layers_b = [1, 3, 5], [2, 6, 10]
    table = scores_table(lambda metric, la, lb: 0.3 - abs(relative_depth(la, 6) - relative_depth(lb, 12)),
                         layers_a, layers_b)
    table.to_csv(tmp_path / "scores.tsv", sep="\t", index=False)
    for name, n_layers in (("a", 6), ("b", 12)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"name": name, "n_layers": n_layers}))
    profile, trend = write_depth(tmp_path / "scores.tsv", tmp_path / "a.json", tmp_path / "b.json",
                                 tmp_path / "depth.tsv", tmp_path / "trend.tsv", tmp_path / "depth.png")
    written = pd.read_csv(tmp_path / "depth.tsv", sep="\t")
    assert list(written["best_layer_b"][written["metric"] == "rsa"]) == [2, 6, 10]
    assert set(written["model_a"]) == {"small"} and set(written["model_b"]) == {"large"}
    assert set(written["scale"]) == {"excess"}  # no ceiling in the table, so no fraction of it
    assert pd.read_csv(tmp_path / "trend.tsv", sep="\t")["spearman"].tolist() == pytest.approx([1.0, 1.0])
    with Image.open(tmp_path / "depth.png") as image:
        one_row = image.height
        assert image.width > 400 and image.height > 200
    # With the ceiling in the table: both scales, in the tables and as two rows of the figure.
    table["normalized"] = table["observed"] - table["null_mean"]
    table["normalized_ci_low"], table["normalized_ci_high"] = table["ci_low"], table["ci_high"]
    table["ceiling_valid"] = True
    table.to_csv(tmp_path / "scores.tsv", sep="\t", index=False)
    profile, trend = write_depth(tmp_path / "scores.tsv", tmp_path / "a.json", tmp_path / "b.json",
                                 tmp_path / "depth.tsv", tmp_path / "trend.tsv", tmp_path / "depth.png")
    written = pd.read_csv(tmp_path / "trend.tsv", sep="\t")
    assert list(zip(written["scale"], written["metric"])) == [("excess", "debiased_cka"), ("excess", "rsa"),
                                                              ("fraction_of_ceiling", "debiased_cka"),
                                                              ("fraction_of_ceiling", "rsa")]
    with Image.open(tmp_path / "depth.png") as image:
        assert image.height > 1.8 * one_row
