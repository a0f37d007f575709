"""The stage layer on hand-made inputs with known answers: semantic rematching, example pairs, the pair table
(adjusted p, seed-to-seed ceilings, normalized scores) and the significance helpers."""

import numpy as np
import pandas as pd
import pytest

from sae_universality.matching.stage import N_EXAMPLE_PAIRS, example_pairs
from sae_universality.matching.categories import CategorySide, semantic_pairs
from sae_universality.settings import MatchSettings
from sae_universality.similarity.baselines import above_chance
from sae_universality.similarity.stage import SCORE_COLUMNS, pair_table, with_adjusted_p

# ---------------------------------------------------------------------------------------------------------------
# semantic_pairs

N_POSITIONS = 300
CATEGORIES = {"month_names": ["january", "march", "april"], "emotions": ["happy", "sad"], "countries": ["france"],
              "empty": ["zzz"], "weather": ["rain"]}
TOKENS_A = ["▁the", "▁april", "▁january", "▁March", "▁happy", "▁France", "▁rain"]
# A1's top token is "april", but only as part of "aprilfools": not a month feature.
CONTEXTS_A = ["the cat", "an aprilfools joke", "in January", ["a March day"], "so happy", "in France", "the rain"]
TOKENS_B = ["Ġjanuary", ["Ġapril", "Ġmay"], "Ġthe", "Ġsad", "ĠMarch", "Ġrain"]
CONTEXTS_B = ["on 5 january", ["april showers", "may"], "the", "sad", "in March", "rain"]
SIDES = (CategorySide(TOKENS_A, CONTEXTS_A), CategorySide(TOKENS_B, CONTEXTS_B))


def sparse_codes(rng, shape, density):
    return rng.exponential(size=shape) * (rng.random(shape) < density)


@pytest.fixture(scope="module")
def codes():
    """A (300 x 7) and B (300 x 6) with known relations.

    B0 is an exact copy of A2 (january); B1 is A3 (march) plus noise; B4 (march) is A2 plus more noise, so its
    best month partner is A2, already taken by B0; B3 (sad) is independent of A4 (happy); B5 (rain) never fires.
    """
    rng = np.random.default_rng(1)
    A = sparse_codes(rng, (N_POSITIONS, 7), 0.3)
    B = np.zeros((N_POSITIONS, 6))
    B[:, 0] = A[:, 2]
    B[:, 1] = A[:, 3] + 0.5 * sparse_codes(rng, N_POSITIONS, 0.3)
    B[:, 2] = rng.exponential(size=N_POSITIONS)
    B[:, 3] = sparse_codes(rng, N_POSITIONS, 0.3)
    B[:, 4] = A[:, 2] + sparse_codes(rng, N_POSITIONS, 0.5)
    return A, B


def chunks_of(A, B, rows=64):
    """A fresh iterator of aligned (block_a, block_b) chunks per call, as match_layer_pair passes them."""
    return lambda: ((A[start:start + rows], B[start:start + rows]) for start in range(0, len(A), rows))


def corr(x, y):
    return float(np.corrcoef(x, y)[0, 1])


def test_semantic_pairs_follow_the_configured_one_to_one_rule(codes):
    # B0 (january) and B4 (march) both pick A2; "highest" keeps B0 only, "none" keeps both.
    A, B = codes
    months = {"month_names": CATEGORIES["month_names"]}
    kept = {}
    for rule in ("highest", "none"):
        table = semantic_pairs(chunks_of(A, B), *SIDES, months, MatchSettings(threshold=0.0, one_to_one=rule))
        kept[rule] = sorted(zip(table.loc[table["kept"], "feature_b"], table.loc[table["kept"], "feature_a"]))
    assert (0, 2) in kept["highest"] and (4, 2) not in kept["highest"]
    assert {(0, 2), (4, 2)} <= set(kept["none"])
    assert len(kept["none"]) == len(kept["highest"]) + 1


def test_semantic_pairs_rematches_within_each_category_with_indices_of_the_whole_sae(codes):
    A, B = codes
    # The fixture holds what the expectations below rest on.
    assert corr(A[:, 2], B[:, 4]) > max(corr(A[:, 3], B[:, 4]), 0.3)  # B4's best month partner is A2, above 0.3
    assert corr(A[:, 2], B[:, 4]) < corr(A[:, 2], B[:, 0])  # ... but B0 correlates more with A2
    assert corr(A[:, 3], B[:, 1]) > max(corr(A[:, 2], B[:, 1]), 0.3)
    assert abs(corr(A[:, 4], B[:, 3])) < 0.3

    table = semantic_pairs(chunks_of(A, B), *SIDES, CATEGORIES, MatchSettings(threshold=0.3))

    assert list(table.columns) == ["category", "n_features_a", "n_features_b", "feature_a", "feature_b",
                                   "correlation", "kept"]
    expected = pd.DataFrame([
        # category, n_a, n_b, feature_a, feature_b, kept
        ("month_names", 2, 3, 2, 0, True),
        ("month_names", 2, 3, 3, 1, True),
        ("month_names", 2, 3, 2, 4, False),  # A2 went to B0, which correlates more with it
        ("emotions", 1, 1, 4, 3, False),  # below the threshold
        ("countries", 1, 0, -1, -1, False),  # no B feature: one placeholder row with the counts
        ("empty", 0, 0, -1, -1, False),
        ("weather", 1, 1, -1, -1, False),  # its B feature never fires: nothing to correlate
    ], columns=["category", "n_features_a", "n_features_b", "feature_a", "feature_b", "kept"])
    pd.testing.assert_frame_equal(table.drop(columns="correlation"), expected, check_dtype=False)
    assert table["kept"].dtype == bool
    expected_correlation = [1.0, corr(A[:, 3], B[:, 1]), corr(A[:, 2], B[:, 4]), corr(A[:, 4], B[:, 3]),
                            np.nan, np.nan, np.nan]
    np.testing.assert_allclose(table["correlation"], expected_correlation, rtol=1e-9, atol=1e-12)


def test_semantic_pairs_correlations_are_the_best_within_the_category(codes):
    """Each B month feature's partner is the A month feature it correlates with most, though A features
    outside the category correlate more with it."""
    A, B = codes
    B = B.copy()
    B[:, 1] = A[:, 3] + 3.0 * A[:, 0]  # mostly A0 ("the"), which is in no category
    table = semantic_pairs(chunks_of(A, B, rows=50), *SIDES, CATEGORIES, MatchSettings(threshold=0.3))
    months = table[table["category"] == "month_names"].set_index("feature_b")
    with np.errstate(invalid="ignore", divide="ignore"):  # B5 never fires: its column is NaN
        full = np.corrcoef(A, B, rowvar=False)[:7, 7:]
    assert np.nanargmax(full[:, 1]) == 0  # over the whole SAE, B1's partner would be A0
    month_a = [2, 3]
    for b in (0, 1, 4):
        best = month_a[int(np.argmax(full[month_a, b]))]
        assert months.loc[b, "feature_a"] == best
        assert months.loc[b, "correlation"] == pytest.approx(full[best, b], rel=1e-9)
    assert months.loc[1, "feature_a"] == 3


def test_semantic_pairs_threshold_decides_kept(codes):
    A, B = codes
    between = (corr(A[:, 3], B[:, 1]) + 1.0) / 2  # above B1's correlation, below B0's (1.0)
    table = semantic_pairs(chunks_of(A, B), *SIDES, CATEGORIES, MatchSettings(threshold=between))
    months = table[table["category"] == "month_names"].set_index("feature_b")
    assert months["kept"].to_dict() == {0: True, 1: False, 4: False}
    assert months["feature_a"].to_dict() == {0: 2, 1: 3, 4: 2}  # the pairs are the same, only kept differs


def test_semantic_pairs_without_categories_is_an_empty_table(codes):
    A, B = codes
    table = semantic_pairs(chunks_of(A, B), *SIDES, {}, MatchSettings(threshold=0.3))
    assert table.empty
    assert list(table.columns) == ["category", "n_features_a", "n_features_b", "feature_a", "feature_b",
                                   "correlation", "kept"]


# ---------------------------------------------------------------------------------------------------------------
# example_pairs


def example_table(rows):
    return pd.DataFrame(rows, columns=["feature_b", "final_a", "final_correlation", "kept"])


def test_example_pairs_best_are_kept_pairs_by_correlation_and_surprising_share_no_token():
    table = example_table([
        (0, 0, 0.9, True),   # "Paris" on both sides: not surprising
        (1, 1, 0.5, True),   # only empty tokens in common: surprising
        (2, 2, 0.95, False),  # the highest correlation, but not kept
        (3, 3, 0.7, True),   # dog / cat: surprising
        (4, 4, 0.8, True),   # "##ing" and "ing" are one token: not surprising
    ])
    tokens_a = [["▁Paris", "▁France"], ["▁", "▁x"], ["▁kept"], ["▁dog"], ["##ing"]]
    tokens_b = [["Ġparis"], ["Ġ", "Ġy"], ["Ġnot"], ["Ġcat"], ["ing", "Ġz"]]
    contexts_a = [[f"a{feature} context {i}" for i in range(7)] for feature in range(5)]
    contexts_b = [[f"b{feature} context {i}" for i in range(3)] for feature in range(5)]
    examples = example_pairs(table, tokens_a, tokens_b, contexts_a, contexts_b)
    assert set(examples) == {"best", "surprising"}
    assert [(pair["feature_b"], pair["correlation"]) for pair in examples["best"]] == [
        (0, 0.9), (4, 0.8), (3, 0.7), (1, 0.5)]
    assert [pair["feature_b"] for pair in examples["surprising"]] == [3, 1]
    first = examples["best"][0]
    assert first == {"feature_a": 0, "feature_b": 0, "correlation": 0.9, "tokens_a": ["▁Paris", "▁France"],
                     "tokens_b": ["Ġparis"], "contexts_a": [f"a0 context {i}" for i in range(5)],
                     "contexts_b": ["b0 context 0", "b0 context 1", "b0 context 2"]}
    assert all(type(pair["feature_a"]) is int and type(pair["correlation"]) is float for pair in examples["best"])


def test_example_pairs_follow_final_a_and_stop_at_the_page_limit():
    n = N_EXAMPLE_PAIRS + 5
    # final_a differs from feature_b: the A side of a pair is final_a.
    table = example_table([(b, n - 1 - b, b / n, True) for b in range(n)])
    tokens_a = [[f"▁a{a}"] for a in range(n)]
    tokens_b = [[f"Ġb{b}"] for b in range(n)]
    contexts = [["context"] for _ in range(n)]
    examples = example_pairs(table, tokens_a, tokens_b, contexts, contexts)
    assert len(examples["best"]) == len(examples["surprising"]) == N_EXAMPLE_PAIRS
    assert [pair["feature_b"] for pair in examples["best"]] == list(range(n - 1, n - 1 - N_EXAMPLE_PAIRS, -1))
    assert all(pair["feature_a"] == n - 1 - pair["feature_b"] for pair in examples["best"])
    assert all(pair["tokens_a"] == [f"▁a{pair['feature_a']}"] for pair in examples["best"])
    none_kept = example_pairs(table.assign(kept=False), tokens_a, tokens_b, contexts, contexts)
    assert none_kept == {"best": [], "surprising": []}


# ---------------------------------------------------------------------------------------------------------------
# with_adjusted_p, above_chance


def test_holm_and_bh_within_each_family_by_hand():
    # Rows of two metrics interleaved, on an index that is not 0..n-1; the NaN p is no member of its family.
    scores = pd.DataFrame({"metric": ["x", "y", "x", "x", "y", "x", "x"],
                           "p": [0.01, 0.2, 0.04, 0.03, 0.5, 0.005, np.nan]},
                          index=[10, 11, 12, 13, 14, 15, 16])
    holm = with_adjusted_p(scores, "holm", ["metric"])
    # x, m=4, sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    # y, m=2: 0.2*2=0.4, 0.5*1=0.5.
    np.testing.assert_allclose(holm["p_adjusted"], [0.03, 0.4, 0.06, 0.06, 0.5, 0.02, np.nan])
    assert list(holm.index) == list(scores.index) and "p_adjusted" not in scores  # a copy, the input untouched
    bh = with_adjusted_p(scores, "bh", ["metric"])
    # x sorted: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04; y: 0.2*2/1=0.4, 0.5*2/2=0.5.
    np.testing.assert_allclose(bh["p_adjusted"], [0.02, 0.4, 0.04, 0.04, 0.5, 0.02, np.nan])
    # A family of two columns: each (category, metric) is adjusted on its own.
    scores["category"] = ["c", "c", "c", "d", "c", "d", "c"]
    by_both = with_adjusted_p(scores, "holm", ["category", "metric"])
    # (c, x): 0.01, 0.04 -> 0.02, 0.04; (d, x): 0.03, 0.005 -> 0.03, 0.01; (c, y): 0.2, 0.5 -> 0.4, 0.5.
    np.testing.assert_allclose(by_both["p_adjusted"], [0.02, 0.4, 0.04, 0.03, 0.5, 0.01, np.nan])


def test_above_chance_needs_a_small_p_and_a_score_above_the_null():
    scores = pd.DataFrame({
        "p": [0.01, 0.01, 0.05, np.nan, 0.01, 0.049],
        "observed": [0.5, 0.1, 0.5, 0.5, 0.05, np.nan],
        "null_mean": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
    })
    assert above_chance(scores, 0.05).tolist() == [True, False, False, False, False, False]
    assert above_chance(scores, 0.06).tolist() == [True, False, True, False, False, False]


# ---------------------------------------------------------------------------------------------------------------
# pair_table

SETTINGS = {"significance": 0.05, "p_adjust": "holm"}


def score_rows(labels, rows):
    """Score tables as score_pairs writes them: labels, then SCORE_COLUMNS."""
    frame = pd.DataFrame(rows, columns=["metric", "observed", "null_mean", "p", "n_pairs"])
    frame["ci_low"] = frame["observed"] - 0.1
    frame["ci_high"] = frame["observed"] + 0.1
    frame["null_std"] = 0.05
    frame["excess"] = frame["observed"] - frame["null_mean"]
    frame["z"] = frame["excess"] / 0.05
    frame["n_permutations"] = 999
    frame["random_subset_mean"] = frame["observed"] / 2
    frame["random_subset_std"] = 0.01
    return pd.concat([pd.DataFrame([labels] * len(frame)), frame[SCORE_COLUMNS]], axis=1)


@pytest.fixture
def pair_inputs(tmp_path):
    cells = {
        (0, 5): [("rsa", 0.5, 0.1, 0.004, 40), ("procrustes", 0.6, 0.5, 0.3, 40)],
        (1, 5): [("rsa", 0.3, 0.1, 0.03, 30), ("procrustes", 0.55, 0.5, 0.001, 30)],
        (2, 5): [("rsa", 0.4, 0.1, 0.5, 20), ("procrustes", 0.45, 0.5, 0.6, 20)],
        (3, 5): [("rsa", np.nan, np.nan, np.nan, 3), ("procrustes", np.nan, np.nan, np.nan, 3)],  # too few pairs
    }
    score_files = []
    for (layer_a, layer_b), rows in cells.items():
        path = tmp_path / f"layer{layer_a}--layer{layer_b}.tsv"
        labels = {"model_a": "a", "model_b": "b", "layer_a": layer_a, "layer_b": layer_b}
        score_rows(labels, rows).to_csv(path, sep="\t", index=False)
        score_files.append(path)
    ceilings = {  # model a, layer 2 has no ceiling (one seed): its cells use b's alone
        ("a", 0): [("rsa", 0.9, 0.1, 0.001, 50), ("procrustes", 0.8, 0.5, 0.001, 50)],
        ("a", 1): [("rsa", 0.7, 0.2, 0.002, 50), ("procrustes", 0.52, 0.5, 0.2, 50)],
        ("a", 3): [("rsa", 0.9, 0.1, 0.001, 50), ("procrustes", 0.8, 0.5, 0.001, 50)],
        ("b", 5): [("rsa", 0.8, 0.1, 0.003, 50), ("procrustes", 0.9, 0.4, 0.001, 50)],
    }
    ceiling_files = []
    for (model, layer), rows in ceilings.items():
        path = tmp_path / f"ceiling-{model}-{layer}.tsv"
        score_rows({"model": model, "layer": layer}, rows).to_csv(path, sep="\t", index=False)
        ceiling_files.append(path)
    return score_files, ceiling_files


def test_pair_table_adjusts_p_and_normalizes_by_the_mean_of_both_layers_ceilings(pair_inputs, tmp_path):
    score_files, ceiling_files = pair_inputs
    scores = pair_table(score_files, ceiling_files, tmp_path / "wide.tsv", tmp_path / "long.tsv", SETTINGS)
    cell = scores.set_index(["layer_a", "metric"])
    # By hand, per (layer_a, metric): ceiling = mean of (a, layer_a) and (b, 5) ceilings, its null the mean of
    # their null means, its p the larger p; normalized = (observed - null) / (ceiling - ceiling null).
    expected = {
        (0, "rsa"): dict(ceiling=0.85, ceiling_null_mean=0.1, ceiling_p=0.003, ceiling_valid=True,
                         normalized=0.4 / 0.75, normalized_ci_low=0.3 / 0.75, normalized_ci_high=0.5 / 0.75),
        (1, "rsa"): dict(ceiling=0.75, ceiling_null_mean=0.15, ceiling_p=0.003, ceiling_valid=True,
                         normalized=0.2 / 0.6, normalized_ci_low=0.1 / 0.6, normalized_ci_high=0.3 / 0.6),
        (2, "rsa"): dict(ceiling=0.8, ceiling_null_mean=0.1, ceiling_p=0.003, ceiling_valid=True,  # b's alone
                         normalized=0.3 / 0.7, normalized_ci_low=0.2 / 0.7, normalized_ci_high=0.4 / 0.7),
        (0, "procrustes"): dict(ceiling=0.85, ceiling_null_mean=0.45, ceiling_p=0.001, ceiling_valid=True,
                                normalized=0.1 / 0.4, normalized_ci_low=0.0, normalized_ci_high=0.2 / 0.4),
        (1, "procrustes"): dict(ceiling=0.71, ceiling_null_mean=0.45, ceiling_p=0.2, ceiling_valid=False,
                                normalized=np.nan, normalized_ci_low=np.nan, normalized_ci_high=np.nan),
        (2, "procrustes"): dict(ceiling=0.9, ceiling_null_mean=0.4, ceiling_p=0.001, ceiling_valid=True,
                                normalized=-0.05 / 0.5, normalized_ci_low=-0.15 / 0.5, normalized_ci_high=0.05 / 0.5),
    }
    # The intervals are Fieller's: each score's interval is +-0.1 and so is each ceiling layer's, so the excess has
    # standard error 0.1 / z and a ceiling of two layers sqrt(2) (0.1 / z) / 2 (one layer alone: 0.1 / z).
    z = 1.959963984540054
    for key, values in expected.items():
        if not values["ceiling_valid"]:
            continue
        ceiling_layers = 1 if key[0] == 2 else 2  # layer_a 2 has no ceiling of its own: b's alone
        span = values["ceiling"] - values["ceiling_null_mean"]
        excess = values["normalized"] * span
        se_excess, se_span = 0.1 / z, np.sqrt(ceiling_layers) * (0.1 / z) / ceiling_layers
        leading = span ** 2 - z ** 2 * se_span ** 2
        root = np.sqrt(z ** 2 * (excess ** 2 * se_span ** 2 + span ** 2 * se_excess ** 2 - z ** 2 * se_excess ** 2 * se_span ** 2))
        mapped = (values["normalized_ci_low"], values["normalized_ci_high"])
        values["normalized_ci_low"], values["normalized_ci_high"] = (excess * span - root) / leading, (excess * span + root) / leading
        # Wider than the score's interval mapped by the ceiling alone, which ignored the ceiling's own uncertainty.
        assert values["normalized_ci_low"] < mapped[0] and values["normalized_ci_high"] > mapped[1]
        values["ceiling_se"] = se_span
    for key, values in expected.items():
        for column, value in values.items():
            if isinstance(value, bool):
                assert bool(cell.loc[key, column]) is value, (key, column)
            else:
                np.testing.assert_allclose(cell.loc[key, column], value, rtol=1e-9, atol=1e-12,
                                           err_msg=f"{key} {column}")
    # Holm per metric over the three scored layer pairs (the unscored one is no member of the family):
    # rsa p 0.004, 0.03, 0.5 -> 0.012, 0.06, 0.5; procrustes p 0.3, 0.001, 0.6 -> 0.6, 0.003, 0.6.
    p_adjusted = {(0, "rsa"): 0.012, (1, "rsa"): 0.06, (2, "rsa"): 0.5, (3, "rsa"): np.nan,
                  (0, "procrustes"): 0.6, (1, "procrustes"): 0.003, (2, "procrustes"): 0.6, (3, "procrustes"): np.nan}
    keys = list(p_adjusted)
    np.testing.assert_allclose(cell.loc[keys, "p_adjusted"], list(p_adjusted.values()), rtol=1e-9)
    assert cell.loc[keys, "significant"].tolist() == [True, False, False, False, False, True, False, False]
    assert cell.loc[(1, "procrustes"), "normalized_note"] == "ceiling not above chance (p=0.2 >= 0.05)"
    assert cell.loc[(3, "rsa"), "normalized_note"] == "cell not scored (too few pairs)"
    assert np.isnan(cell.loc[(3, "rsa"), "normalized"]) and cell.loc[(0, "rsa"), "normalized_note"] == ""
    # The long table on disk is the returned one (6 significant digits).
    long = pd.read_csv(tmp_path / "long.tsv", sep="\t").set_index(["layer_a", "metric"])
    np.testing.assert_allclose(long.loc[keys, "normalized"], cell.loc[keys, "normalized"], rtol=1e-5)
    np.testing.assert_allclose(long.loc[keys, "p_adjusted"], cell.loc[keys, "p_adjusted"], rtol=1e-5)


def test_pair_table_wide_has_one_row_per_layer_pair_and_a_column_per_metric_and_value(pair_inputs, tmp_path):
    score_files, ceiling_files = pair_inputs
    scores = pair_table(score_files, ceiling_files, tmp_path / "wide.tsv", tmp_path / "long.tsv", SETTINGS)
    wide = pd.read_csv(tmp_path / "wide.tsv", sep="\t")
    values = ["observed", "ci_low", "ci_high", "null_mean", "excess", "z", "p", "p_adjusted", "normalized",
              "normalized_ci_low", "normalized_ci_high", "normalized_note", "random_subset_mean"]
    assert list(wide.columns) == (["model_a", "model_b", "layer_a", "layer_b", "n_pairs"]
                                  + [f"{metric}_{value}" for metric in ("rsa", "procrustes") for value in values])
    assert wide["layer_a"].tolist() == [0, 1, 2, 3] and (wide["layer_b"] == 5).all()
    assert wide["n_pairs"].tolist() == [40, 30, 20, 3]
    long = scores.set_index(["layer_a", "metric"])
    for metric in ("rsa", "procrustes"):
        for value in ("observed", "p_adjusted", "normalized", "normalized_ci_high", "random_subset_mean"):
            np.testing.assert_allclose(wide[f"{metric}_{value}"], long.xs(metric, level="metric")[value].loc[[0, 1, 2, 3]],
                                       rtol=1e-5, err_msg=f"{metric}_{value}")
    np.testing.assert_allclose(wide["rsa_normalized"], [0.4 / 0.75, 0.2 / 0.6, 0.3 / 0.7, np.nan], rtol=1e-5)
    np.testing.assert_allclose(wide["procrustes_p_adjusted"], [0.6, 0.003, 0.6, np.nan], rtol=1e-5)
    assert wide["procrustes_normalized_note"].tolist()[1] == "ceiling not above chance (p=0.2 >= 0.05)"


def test_pair_table_without_ceilings_has_no_normalized_score(pair_inputs, tmp_path):
    score_files, _ = pair_inputs
    scores = pair_table(score_files, [], tmp_path / "wide.tsv", tmp_path / "long.tsv", SETTINGS)
    scored = scores[scores["layer_a"] < 3]
    assert scores["normalized"].isna().all() and not scores["ceiling_valid"].any()
    assert (scored["normalized_note"] == "no ceiling (one SAE seed)").all()
    # The adjustment does not depend on the ceilings.
    np.testing.assert_allclose(scores.set_index(["layer_a", "metric"]).loc[[(0, "rsa"), (1, "procrustes")], "p_adjusted"],
                               [0.012, 0.003], rtol=1e-9)


# ---------------------------------------------------------------------------
# What a user's config or files can make the scoring stage meet
# ---------------------------------------------------------------------------


def test_a_decoder_with_nan_is_named_as_a_damaged_sae(tmp_path):
    from safetensors.numpy import save_file

    from sae_universality.errors import UserError
    from sae_universality.similarity.stage import decoder_rows

    weights = np.eye(4, dtype=np.float32)
    save_file({"W_dec": weights}, str(tmp_path / "sae_weights.safetensors"))
    np.testing.assert_array_equal(decoder_rows(tmp_path), np.eye(4))
    weights[2, 1] = np.nan
    save_file({"W_dec": weights}, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(UserError, match=r"sae_weights.safetensors: the decoder holds NaN.*delete its folder and rerun"):
        decoder_rows(tmp_path)


def test_svcca_components_are_bounded_by_the_pairs_and_widths_of_a_small_category():
    from sae_universality.settings import SimilaritySettings
    from sae_universality.similarity.stage import metric_options

    settings = SimilaritySettings(metrics=("svcca", "mutual_knn"), svcca_components=8, knn_k=10)
    assert metric_options(settings, n_pairs=5, width=16)["components"] == 5
    assert metric_options(settings, n_pairs=50, width=6)["components"] == 6
    assert metric_options(settings, n_pairs=50, width=16)["components"] == 8
    assert metric_options(settings, n_pairs=5, width=16)["k"] == 4
    unset = SimilaritySettings(metrics=("svcca",))
    assert metric_options(unset, n_pairs=5, width=16)["components"] is None


def test_zeroed_decoder_rows_are_left_out_of_the_random_subset_baseline():
    from sae_universality.settings import SimilaritySettings
    from sae_universality.similarity.stage import score_pairs

    rng = np.random.default_rng(0)
    W_dec_a, W_dec_b = rng.normal(size=(40, 6)), rng.normal(size=(40, 7))
    W_dec_a[30:] = 0.0  # dead latents some published SAEs blank out
    settings = SimilaritySettings(metrics=("mutual_knn", "rsa"), knn_k=3, n_permutations=20, bootstrap_draws=5,
                                  random_subset_draws=4, min_pairs=5)
    scores = score_pairs(W_dec_a, W_dec_b, np.arange(12), np.arange(12), settings).set_index("metric")
    assert np.isfinite(scores["random_subset_mean"]).all() and (scores["n_pairs"] == 12).all()


def test_config_rejects_similarity_settings_the_metrics_cannot_run():
    import yaml

    from sae_universality.config import SCHEMA, check_config
    from sae_universality.errors import UserError

    def config_with(**similarity):
        config = yaml.safe_load((SCHEMA.parents[2] / "config.yaml").read_text())
        config["similarity"] = {**config.get("similarity", {}), **similarity}
        return config

    with pytest.raises(UserError, match="svcca_folds: 1 leaves heldout_svcca no folds"):
        check_config(config_with(svcca_folds=1))
    check_config(config_with(svcca_folds=1, svcca_components=4))
    with pytest.raises(UserError, match=r"min_pairs.*debiased_cka needs 4"):
        check_config(config_with(min_pairs=3))
