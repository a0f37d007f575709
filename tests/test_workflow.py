"""The whole workflow on a tiny config: real Snakemake, real models (tiny, random), real text."""

import re
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from sae_universality.text.corpus import read_windows

from conftest import REPO, perturbation_gradient, write_tiny_experiment


def snakemake(workdir, *arguments, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(workdir / "config.yaml"), "--cores", "2", *arguments],
        capture_output=True, text=True, timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def finished_run(tiny_models, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    write_tiny_experiment(workdir, tiny_models, floor=True)
    snakemake(workdir)
    return workdir


def test_outputs_hold_the_models_activations(finished_run):
    from sae_universality.models.sources import load_model

    windows = read_windows(finished_run / "resources/corpus/windows.jsonl")
    model, tokenizer, manifest = load_model(finished_run / "resources/models/llama/manifest.json")
    assert manifest["n_layers"] == 4 and manifest["source"] == "path"
    assert manifest["description"].startswith("the local model folder ")
    # The verdict says what each model is beside the results.
    verdict = (finished_run / "results/verdict.md").read_text()
    assert f"*The models.* neox: {load_model(finished_run / 'resources/models/neox/manifest.json')[2]['description']}" in verdict
    window = windows[-1]  # the last window lives in the second shard
    encoded = tokenizer(window.text, return_special_tokens_mask=True)
    with torch.no_grad():
        hidden = model(torch.tensor([encoded["input_ids"]]), output_hidden_states=True).hidden_states[2][0].numpy()
    text_positions = [i for i, special in enumerate(encoded["special_tokens_mask"]) if not special]
    with h5py.File(finished_run / "results/activations/llama/layer1.h5", "r") as cache:
        rows = np.flatnonzero(cache["window_index"][:] == window.window_index)
        np.testing.assert_array_equal(cache["position"][rows], text_positions)
        np.testing.assert_allclose(cache["activations"][rows], hidden[text_positions], rtol=1e-4, atol=1e-4)
        assert cache.attrs["n_positions"] == cache["activations"].shape[0]
    assert not list((finished_run / "results/activations/llama").glob("shards")), "shard folders are temporary"


def test_alignment_summary_matches_the_caches(finished_run):
    summary = pd.read_csv(finished_run / "results/alignment/neox--llama.tsv", sep="\t").iloc[0]
    with h5py.File(finished_run / "results/activations/neox/layer0.h5", "r") as a, \
            h5py.File(finished_run / "results/activations/llama/layer1.h5", "r") as b:
        ends_a = set(zip(a["window_index"][:].tolist(), a["char_end"][:].tolist()))
        ends_b = set(zip(b["window_index"][:].tolist(), b["char_end"][:].tolist()))
        assert summary["n_positions_a"] == a["activations"].shape[0]
    assert summary["n_aligned"] == len(ends_a & ends_b)
    assert summary["fraction_aligned_b"] == pytest.approx(len(ends_a & ends_b) / len(ends_b))


def test_rerun_does_nothing_and_one_target_regenerates_alone(finished_run):
    assert "Nothing to be done" in snakemake(finished_run, "-n").stdout
    target = finished_run / "results/activations/neox/layer2.h5"
    with h5py.File(target, "r") as cache:
        before = cache["activations"][:]
    target.unlink()
    dry = snakemake(finished_run, "-n", "results/activations/neox/layer2.h5").stdout
    assert "cache_activations" in dry and "align_positions" not in dry and "prepare_model" not in dry
    snakemake(finished_run, "results/activations/neox/layer2.h5")
    with h5py.File(target, "r") as cache:
        np.testing.assert_array_equal(cache["activations"][:], before)  # same config, same results


def test_sae_quality_table_is_complete_and_plausible(finished_run):
    quality = pd.read_csv(finished_run / "results/saes/quality.tsv", sep="\t")
    models = (("neox", (0, 2)), ("llama", (1,)), ("llama-rerandomized", (1,)))  # the last: the floor control
    expected = {(m, l, s) for m, layers in models for l in layers for s in ("seed0", "seed1")}
    assert set(zip(quality["model"], quality["layer"], quality["sae"])) == expected
    assert (quality["fvu"] > 0).all() and (quality["fvu"] < 1).all(), "trained SAEs explain some variance"
    assert (quality["mean_l0"] <= 4 + 1e-9).all(), "TopK with k=4 keeps at most 4 latents"
    assert quality["ce_zero"].notna().all() and quality["ce_clean"].notna().all()
    # Two loss windows per model: the same predicted tokens for every SAE of a model, a count of real tokens.
    assert (quality["loss_tokens"] > 20).all()
    assert quality.groupby("model")["loss_tokens"].nunique().eq(1).all()
    # The seeds of one layer share its clean and zero-ablation passes, and differ in their own.
    for _, layer in quality.groupby(["model", "layer"]):
        assert layer["ce_clean"].nunique() == 1 and layer["ce_zero"].nunique() == 1
        assert layer["ce_sae"].nunique() == len(layer) == 2
    expected_recovered = (quality["ce_zero"] - quality["ce_sae"]) / (quality["ce_zero"] - quality["ce_clean"])
    # Six significant digits of nearly equal losses (tiny random models): compare loosely.
    np.testing.assert_allclose(quality["fraction_recovered"], expected_recovered, rtol=5e-3)
    assert (finished_run / "results/saes/training_curves.png").stat().st_size > 10_000
    # Seed stability: NaN for the first seed, the second's against it, recomputed from the saved decoders.
    from safetensors.numpy import load_file

    from sae_universality.saes.evaluation import seed_stability

    assert quality.loc[quality["sae"] == "seed0", "fraction_shared"].isna().all()
    row = quality[(quality["model"] == "neox") & (quality["layer"] == 2) & (quality["sae"] == "seed1")].iloc[0]
    decoders = [load_file(str(finished_run / f"results/saes/neox/layer2/{seed}/sae_weights.safetensors"))["W_dec"]
                for seed in ("seed0", "seed1")]
    expected = seed_stability(*decoders)
    assert row["decoder_cosine_mean"] == pytest.approx(expected["decoder_cosine_mean"], rel=1e-5)
    assert row["fraction_shared"] == pytest.approx(expected["fraction_shared"], rel=1e-5)


def test_matched_correlations_equal_a_float64_recomputation(finished_run):
    import scipy.sparse

    from sae_universality.saes.codes import iter_code_chunks

    def dense_codes(path):
        return scipy.sparse.vstack(list(iter_code_chunks(path))).toarray().astype(np.float64)

    table = pd.read_csv(finished_run / "results/matching/neox--llama/layer2--layer1.tsv", sep="\t")
    with h5py.File(finished_run / "results/alignment/neox--llama.h5", "r") as alignment:
        rows_a, rows_b = alignment["rows_a"][:], alignment["rows_b"][:]
    codes_a = dense_codes(finished_run / "results/codes/neox/layer2/seed0.h5")[rows_a]
    codes_b = dense_codes(finished_run / "results/codes/llama/layer1/seed0.h5")[rows_b]
    alive_a = codes_a.std(axis=0) > 0
    alive_b = codes_b.std(axis=0) > 0
    correlation = np.corrcoef(codes_a[:, alive_a], codes_b[:, alive_b], rowvar=False)[: alive_a.sum(), alive_a.sum():]
    index_a, index_b = np.flatnonzero(alive_a), np.flatnonzero(alive_b)
    assert sorted(table["feature_b"]) == sorted(index_b.tolist())
    best = {int(index_b[j]): float(correlation[:, j].max()) for j in range(len(index_b))}
    np.testing.assert_allclose(table["correlation"], [best[b] for b in table["feature_b"]], atol=1e-5)
    partner = {int(index_b[j]): int(index_a[np.argmax(correlation[:, j])]) for j in range(len(index_b))}
    assert table["feature_a"].tolist() == [partner[b] for b in table["feature_b"]]
    kept = table[table["kept"]]
    assert kept["final_a"].is_unique and (kept["final_correlation"] >= 0.1).all()
    summary = pd.read_csv(finished_run / "results/matching/neox--llama/summary.tsv", sep="\t")
    row = summary[(summary["layer_a"] == 2) & (summary["layer_b"] == 1)].iloc[0]
    assert row["n_after_threshold"] == len(kept) and row["n_alive_b"] == alive_b.sum()
    assert len(summary) == 2  # every (layer_a, layer_b)
    page = (finished_run / "results/matching/neox--llama/pairs.html").read_text()
    assert "<mark>" in page and "neox layer 2" in page


def test_context_only_correlations_equal_a_float64_recomputation(finished_run):
    """The controls' token-removed correlation of the kept pairs, recomputed with pandas from the files."""
    import scipy.sparse

    from sae_universality.saes.codes import iter_code_chunks

    def dense_codes(path):
        return scipy.sparse.vstack(list(iter_code_chunks(path))).toarray().astype(np.float64)

    def cross_fitted(values, key, fold):
        # Each position minus the mean of its key over the other fold (that fold's mean where the key is absent).
        frame = pd.DataFrame({"value": values, "key": key, "fold": fold})
        means = frame.groupby(["fold", "key"])["value"].mean()
        overall = frame.groupby("fold")["value"].mean()
        removed = [means.get((1 - f, k), overall[1 - f]) for k, f in zip(key, fold)]
        return values - np.array(removed)

    table = pd.read_csv(finished_run / "results/matching/neox--llama/layer2--layer1.tsv", sep="\t")
    kept = table[table["kept"]]
    with h5py.File(finished_run / "results/alignment/neox--llama.h5", "r") as alignment:
        rows_a, rows_b = alignment["rows_a"][:], alignment["rows_b"][:]
    with h5py.File(finished_run / "results/activations/neox/layer2.h5", "r") as cache:
        token_a, fold = cache["token_ids"][:][rows_a], cache["window_index"][:][rows_a] % 2
    with h5py.File(finished_run / "results/activations/llama/layer1.h5", "r") as cache:
        token_b = cache["token_ids"][:][rows_b]
    codes_a = dense_codes(finished_run / "results/codes/neox/layer2/seed0.h5")[rows_a]
    codes_b = dense_codes(finished_run / "results/codes/llama/layer1/seed0.h5")[rows_b]
    correlations = [np.corrcoef(cross_fitted(codes_a[:, a], token_a, fold), cross_fitted(codes_b[:, b], token_b, fold))[0, 1]
                    for a, b in zip(kept["final_a"], kept["feature_b"])]
    controls = pd.read_csv(finished_run / "results/similarity/neox--llama/controls.tsv", sep="\t")
    here = controls[(controls["layer_a"] == 2) & (controls["layer_b"] == 1)].set_index("control")
    assert list(here.index) == ["full", "context_only", "context_only_bigram", "document_demeaned", "document_shifted",
                                "untrained_dictionary", "lexical_floor"]
    # The table holds 6 significant digits.
    assert here.loc["context_only", "kept_full_mean_correlation"] == pytest.approx(np.nanmean(correlations), rel=1e-5)
    assert here.loc["full", "kept_full_mean_correlation"] == pytest.approx(kept["final_correlation"].mean(), abs=1e-5)
    assert here.loc["full", "n_kept_rematched"] == len(kept)
    assert (here.loc[list(here.index[:5]), "n_kept_full"] == len(kept)).all()
    # Only the real pair has controls; its context-only scores sit beside the full ones.
    assert not (finished_run / "results/similarity/neox--llama-rerandomized/controls.tsv").exists()
    scores = pd.read_csv(finished_run / "results/similarity/neox--llama/context_only_scores.tsv", sep="\t")
    full = pd.read_csv(finished_run / "results/similarity/neox--llama/scores.tsv", sep="\t")
    merged = scores.merge(full, on=["layer_a", "layer_b", "metric"], suffixes=("", "_of_full"))
    assert len(merged) == len(full)
    np.testing.assert_allclose(merged["full_excess"], merged["excess_of_full"], rtol=1e-5)
    context_only_table = pd.read_csv(
        finished_run / "results/matching/neox--llama/layer2--layer1.context_only.tsv", sep="\t")
    n_pairs = int(scores[(scores["layer_a"] == 2) & (scores["layer_b"] == 1)]["n_pairs"].iloc[0])
    assert n_pairs == int(context_only_table["kept"].sum()) == here.loc["context_only", "n_kept_rematched"]
    assert "**Shared features or shared tokens?**" in (finished_run / "results/verdict.md").read_text()
    verdict = pd.read_csv(finished_run / "results/verdict.tsv", sep="\t")
    assert verdict["kept_correlation_full"].notna().all()


def test_context_only_scores_are_set_against_the_context_only_codes_own_ceiling(finished_run):
    """Two seeds' context-only codes matched and scored like the pair's: the context-only ceiling, and the
    context-only scores' fraction of it, computed again here from the tables."""
    ceiling_a = pd.read_csv(finished_run / "results/similarity/ceiling/neox/layer2.context_only.tsv", sep="\t")
    ceiling_b = pd.read_csv(finished_run / "results/similarity/ceiling/llama/layer1.context_only.tsv", sep="\t")
    pair = pd.read_csv(finished_run / "results/similarity/ceiling/neox/layer2/seed0--seed1.context_only.tsv", sep="\t")
    assert ceiling_a["seed_pairs"].eq(1).all()
    np.testing.assert_allclose(ceiling_a["observed"], pair["observed"], rtol=1e-6)
    summary = pd.read_csv(finished_run / "results/similarity/ceiling/neox/layer2/seed0--seed1.controls.tsv", sep="\t")
    assert summary["control"].tolist() == ["full", "context_only"]  # the ceiling needs no other control
    matches = pd.read_csv(finished_run / "results/similarity/ceiling/neox/layer2/seed0--seed1.context_only.matches.tsv",
                          sep="\t")
    assert int(matches["kept"].sum()) == summary.set_index("control").loc["context_only", "n_kept_rematched"]
    scores = pd.read_csv(finished_run / "results/similarity/neox--llama/context_only_scores.tsv", sep="\t")
    cell = scores[(scores["layer_a"] == 2) & (scores["layer_b"] == 1)].set_index("metric")
    for metric, row in cell.iterrows():
        both = [ceiling_a.set_index("metric").loc[metric], ceiling_b.set_index("metric").loc[metric]]
        span = np.mean([c["observed"] for c in both]) - np.mean([c["null_mean"] for c in both])
        valid = all(c["p"] < 0.05 for c in both) and span > 0
        assert bool(row["ceiling_valid"]) == valid, metric
        if valid and np.isfinite(row["observed"]):
            assert row["normalized"] == pytest.approx((row["observed"] - row["null_mean"]) / span, rel=1e-4, abs=1e-5)


def test_untrained_dictionaries_are_random_unit_directions_centred_on_the_training_mean(finished_run):
    from safetensors.numpy import load_file

    from sae_universality.saes.stage import split_rows

    folder = finished_run / "results/saes/neox/layer2/untrained"
    weights = load_file(str(folder / "sae_weights.safetensors"))
    np.testing.assert_allclose(np.linalg.norm(weights["W_dec"], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(weights["W_enc"], weights["W_dec"].T)
    assert not weights["b_enc"].any()
    train_rows, _ = split_rows(finished_run / "results/activations/neox/layer2.h5", 3)
    with h5py.File(finished_run / "results/activations/neox/layer2.h5", "r") as cache:
        mean = cache["activations"][:][train_rows].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(weights["b_dec"], mean, rtol=1e-5, atol=1e-6)
    trained = load_file(str(finished_run / "results/saes/neox/layer2/seed0/sae_weights.safetensors"))
    assert weights["W_dec"].shape == trained["W_dec"].shape  # the same width
    # Matched and scored like the SAEs: its counts are a control row, its scores sit beside the full ones.
    controls = pd.read_csv(finished_run / "results/similarity/neox--llama/controls.tsv", sep="\t")
    baseline = controls[controls["control"] == "untrained_dictionary"].set_index(["layer_a", "layer_b"])
    summary = pd.read_csv(finished_run / "results/matching/neox--llama/untrained/layer2--layer1.summary.tsv", sep="\t")
    assert baseline.loc[(2, 1), "n_kept_rematched"] == summary["n_after_threshold"].iloc[0]
    scores = pd.read_csv(finished_run / "results/similarity/neox--llama/untrained_scores.tsv", sep="\t")
    assert len(scores) == len(pd.read_csv(finished_run / "results/similarity/neox--llama/scores.tsv", sep="\t"))
    assert {"full_excess", "excess_surviving", "p_adjusted"} <= set(scores.columns)


def test_the_lexical_floor_encodes_per_token_means_with_the_same_sae_and_is_scored_beside_the_full(finished_run):
    """The lexical codes are the seed-0 SAE's codes of each position's token mean over the other fold of windows,
    recomputed here in float64 from the cache and the SAE; the cache copy itself was temporary."""
    import scipy.sparse

    from sae_universality.saes.codes import iter_code_chunks
    from sae_universality.saes.formats import load_sae

    with h5py.File(finished_run / "results/activations/neox/layer2.h5", "r") as cache:
        activations = cache["activations"][:].astype(np.float64)
        tokens, fold = cache["token_ids"][:], cache["window_index"][:] % 2
    frame = pd.DataFrame(activations).assign(token=tokens, fold=fold)
    means = frame.groupby(["fold", "token"]).mean()
    overall = frame.drop(columns="token").groupby("fold").mean()
    lexical = np.stack([means.loc[(1 - f, t)].to_numpy() if (1 - f, t) in means.index else overall.loc[1 - f].to_numpy()
                        for t, f in zip(tokens, fold)])
    sae = load_sae("saelens", path=finished_run / "results/saes/neox/layer2/seed0")
    expected = sae.encode(torch.as_tensor(lexical, dtype=torch.float32)).detach().numpy()
    codes = scipy.sparse.vstack(list(iter_code_chunks(finished_run / "results/codes/neox/layer2/lexical.h5"))).toarray()
    agree = np.isclose(codes, expected, rtol=1e-3, atol=1e-4).all(axis=1)
    assert agree.mean() > 0.99  # a TopK tie at float32 precision may swap a latent at a rare position
    assert not (finished_run / "results/activations/neox/layer2.lexical.h5").exists()
    # Matched afresh and scored with the full comparison's decoders, beside the full scores.
    controls = pd.read_csv(finished_run / "results/similarity/neox--llama/controls.tsv", sep="\t")
    floor = controls[controls["control"] == "lexical_floor"].set_index(["layer_a", "layer_b"])
    summary = pd.read_csv(finished_run / "results/matching/neox--llama/lexical/layer2--layer1.summary.tsv", sep="\t")
    assert floor.loc[(2, 1), "n_kept_rematched"] == summary["n_after_threshold"].iloc[0]
    scores = pd.read_csv(finished_run / "results/similarity/neox--llama/lexical_scores.tsv", sep="\t")
    full = pd.read_csv(finished_run / "results/similarity/neox--llama/scores.tsv", sep="\t")
    assert len(scores) == len(full) and {"full_excess", "excess_surviving", "p_adjusted"} <= set(scores.columns)
    # Scored on as many pairs as the full result keeps (where the floor keeps more).
    full_kept = int(pd.read_csv(finished_run / "results/matching/neox--llama/layer2--layer1.tsv", sep="\t")["kept"].sum())
    scored = scores[(scores["layer_a"] == 2) & (scores["layer_b"] == 1)]["n_pairs"].iloc[0]
    assert scored == min(full_kept, int(summary["n_after_threshold"].iloc[0]))
    verdict = pd.read_csv(finished_run / "results/verdict.tsv", sep="\t")
    assert "lexical_excess" in verdict.columns


def test_the_raw_residual_streams_are_compared_at_every_layer_pair_with_a_float64_check(finished_run):
    from sae_universality.similarity.cka import debiased_cka

    table = pd.read_csv(finished_run / "results/similarity/neox--llama/residual_streams.tsv", sep="\t")
    assert sorted(set(zip(table["layer_a"], table["layer_b"]))) == [(0, 1), (2, 1)]
    assert set(table["comparison"]) == {"aligned", "token_means", "document_shifted"}
    # The tiny corpus is smaller than the sample: every aligned position, and debiased CKA on them by Grams.
    with h5py.File(finished_run / "results/alignment/neox--llama.h5", "r") as alignment:
        rows_a, rows_b = alignment["rows_a"][:], alignment["rows_b"][:]
    with h5py.File(finished_run / "results/activations/neox/layer2.h5", "r") as cache:
        X = cache["activations"][:][rows_a].astype(np.float64)
    with h5py.File(finished_run / "results/activations/llama/layer1.h5", "r") as cache:
        Y = cache["activations"][:][rows_b].astype(np.float64)
    row = table[(table["layer_a"] == 2) & (table["metric"] == "debiased_cka") & (table["comparison"] == "aligned")]
    assert int(row["n_positions"].iloc[0]) == len(rows_a)
    assert row["observed"].iloc[0] == pytest.approx(debiased_cka(X, Y), rel=1e-4, abs=1e-6)
    assert "**Before any SAE.**" in (finished_run / "results/verdict.md").read_text()


def assert_png_shows(path, figure):
    """The PNG at `path` is `figure` drawn at the report's resolution: same size and, pixel for pixel, the same
    picture up to a sliver (the figure here is drawn from the table's 6 significant digits, the PNG was drawn
    from full precision: a colour may move by one step of the colour map, a rounded label by one digit)."""
    from io import BytesIO

    from matplotlib.image import imread

    from sae_universality.report.figures import DPI

    buffer = BytesIO()
    figure.savefig(buffer, dpi=DPI, format="png")
    buffer.seek(0)
    written, expected = imread(path), imread(buffer, format="png")
    assert written.shape == expected.shape, path.name
    differing = (np.abs(written - expected) > 0.03).any(axis=-1).mean()
    assert differing < 1e-3, f"{path.name}: {differing:.2%} of pixels differ from the table's figure"


def test_similarity_scores_are_the_metrics_of_the_kept_pairs(finished_run):
    from safetensors.numpy import load_file

    from sae_universality.similarity import compute_metric

    matches = pd.read_csv(finished_run / "results/matching/neox--llama/layer2--layer1.tsv", sep="\t")
    kept = matches[matches["kept"]]
    W_a = load_file(str(finished_run / "results/saes/neox/layer2/seed0/sae_weights.safetensors"))["W_dec"].astype(np.float64)
    W_b = load_file(str(finished_run / "results/saes/llama/layer1/seed0/sae_weights.safetensors"))["W_dec"].astype(np.float64)
    X, Y = W_a[kept["final_a"].to_numpy()], W_b[kept["feature_b"].to_numpy()]
    scores = pd.read_csv(finished_run / "results/similarity/neox--llama/scores.tsv", sep="\t")
    cell = scores[(scores["layer_a"] == 2) & (scores["layer_b"] == 1)].set_index("metric")
    assert set(cell.index) == {"heldout_svcca", "rsa", "debiased_cka", "mutual_knn", "procrustes"}
    assert len(kept) >= 5, "the tiny experiment must keep pairs enough to score"
    # Tables carry 6 significant digits.
    assert cell.loc["rsa", "observed"] == pytest.approx(compute_metric("rsa", X, Y), rel=1e-5, abs=1e-8)
    assert cell.loc["debiased_cka", "observed"] == pytest.approx(compute_metric("debiased_cka", X, Y), rel=1e-5, abs=1e-8)
    assert cell.loc["heldout_svcca", "observed"] == pytest.approx(
        compute_metric("heldout_svcca", X, Y, folds=5, fold_seed=0), rel=1e-5, abs=1e-8)
    assert (cell["p"] >= 1 / 201).all() and (cell["p"] <= 1).all()  # 200 permutations: p is never 0
    np.testing.assert_allclose(cell["excess"], cell["observed"] - cell["null_mean"], rtol=0, atol=1e-6)  # 6 digits each
    assert (cell["ci_low"] <= cell["observed"] + 1e-9).all() and (cell["ci_high"] >= cell["observed"] - 1e-9).all()
    # Holm across the table's two layer pairs, per metric.
    for metric, group in scores.groupby("metric"):
        low, high = group.sort_values("p")["p"].to_numpy()
        expected = [min(1, 2 * low), min(1, max(2 * low, high))]
        np.testing.assert_allclose(group.sort_values("p")["p_adjusted"], expected, rtol=1e-5)
    # The ceiling control (two seeds) exists for every (model, layer) and feeds the normalized score:
    # the cell's excess over its null as a fraction of the ceiling's excess over the ceiling's own null.
    ceilings = {}
    for model, layer in (("neox", 0), ("neox", 2), ("llama", 1)):
        ceiling = pd.read_csv(finished_run / f"results/similarity/ceiling/{model}/layer{layer}.tsv", sep="\t")
        assert set(ceiling["metric"]) == set(cell.index)
        ceilings[model, layer] = ceiling.set_index("metric")
    expected_valid, expected_normalized = [], []
    for metric, row in cell.iterrows():
        both = [ceilings["neox", 2].loc[metric], ceilings["llama", 1].loc[metric]]
        span = np.mean([c["observed"] for c in both]) - np.mean([c["null_mean"] for c in both])
        valid = all(c["p"] < 0.05 for c in both) and span > 0
        expected_valid.append(valid)
        # Never a normalized score on a ceiling at chance: NaN there.
        expected_normalized.append((row["observed"] - row["null_mean"]) / span if valid else np.nan)
    assert cell["ceiling_valid"].tolist() == expected_valid
    np.testing.assert_allclose(cell["normalized"], expected_normalized, rtol=1e-4, atol=1e-4)  # NaN matches NaN only
    # A note exactly where there is no normalized score (an empty note reads back as NaN), saying why.
    notes = cell["normalized_note"]
    assert notes.isna().tolist() == expected_valid
    assert all("ceiling" in note for note in notes[~np.array(expected_valid)]), notes.to_dict()
    table = pd.read_csv(finished_run / "results/similarity/neox--llama/table.tsv", sep="\t")
    assert len(table) == 2
    for value in ("observed", "ci_low", "ci_high", "null_mean", "excess", "z", "p", "p_adjusted", "normalized",
                  "normalized_ci_low", "normalized_ci_high", "normalized_note"):
        assert f"heldout_svcca_{value}" in table.columns
    semantic = pd.read_csv(finished_run / "results/similarity/neox--llama/semantic.tsv", sep="\t")
    assert {"time", "calendar", "nature", "emotions", "month_names", "countries", "biology"} <= set(semantic["category"])
    assert semantic.loc[semantic["n_pairs"] < 5, "skipped"].all()  # min_pairs: 5
    tidy = pd.read_csv(finished_run / "results/similarity/all_scores.tsv", sep="\t")
    floor_rows = sum(len(pd.read_csv(finished_run / f"results/similarity/neox--llama-rerandomized/{name}", sep="\t"))
                     for name in ("scores.tsv", "semantic.tsv"))
    assert {"all", "time"} <= set(tidy["category"]) and len(tidy) == len(scores) + len(semantic) + floor_rows
    # The figures are the tables': each PNG is the figure drawn from the table written next to it.
    from sae_universality.report.figures import heatmap_figure, semantic_figure

    folder = finished_run / "results/similarity/neox--llama"
    assert_png_shows(folder / "heatmaps.png", heatmap_figure(scores, "neox vs llama", color_by="z"))
    assert_png_shows(folder / "heatmaps_raw.png", heatmap_figure(scores, "neox vs llama", color_by="observed"))
    assert_png_shows(folder / "semantic.png", semantic_figure(semantic, "neox vs llama"))


def test_floor_control_and_verdict(finished_run):
    # The floor pair ran through every rule like a real pair, on the re-randomized copy of llama.
    manifest = (finished_run / "resources/models/llama-rerandomized/manifest.json").read_text()
    assert '"rerandomized_from": "llama"' in manifest
    floor = pd.read_csv(finished_run / "results/similarity/neox--llama-rerandomized/scores.tsv", sep="\t")
    real = pd.read_csv(finished_run / "results/similarity/neox--llama/scores.tsv", sep="\t")
    assert len(floor) == len(real) and floor["observed"].notna().all()
    assert not np.allclose(floor.sort_values(["layer_a", "metric"])["observed"],
                           real.sort_values(["layer_a", "metric"])["observed"])
    # The verdict: one row per metric of the real pair, its best cell being the largest z of the table.
    verdict = pd.read_csv(finished_run / "results/verdict.tsv", sep="\t")
    assert set(verdict["metric"]) == set(real["metric"]) and (verdict["model_b"] == "llama").all()
    for row in verdict.itertuples():
        cells = real[real["metric"] == row.metric]
        best = cells.loc[cells["z"].idxmax()]
        assert (row.best_layer_a, row.best_layer_b) == (best["layer_a"], best["layer_b"])
        assert row.n_significant == int((cells["p_adjusted"] < 0.05).sum())
        same = floor[(floor["metric"] == row.metric) & (floor["layer_a"] == best["layer_a"])].iloc[0]
        assert row.floor_excess == pytest.approx(same["excess"], rel=1e-5)
    text = (finished_run / "results/verdict.md").read_text()
    assert text.startswith("**neox vs llama**")
    assert ("**Nothing is significant.**" in text) == (verdict["n_significant"] == 0).all()
    assert "re-randomized floor (llama-rerandomized)" in text and "The SAEs these scores rest on" in text


def test_report_opens_with_the_verdict(finished_run):
    snakemake(finished_run, "--report", "report.html")
    page = (finished_run / "report.html").read_text()
    # The front page is embedded as JSON-escaped HTML: the verdict comes before the description.
    opening = page.index("neox vs llama")
    assert opening < page.index("learn the same features?")
    assert "The SAEs these scores rest on" in page


def test_scaling_study_collects_a_finished_run(finished_run, tmp_path):
    """The scaling study's table and figure, from a finished run standing in for one variant."""
    from sae_universality.studies.scaling import collect, excess_series, markdown_table, plot_study, summary_table

    (tmp_path / "tokensall-latents8").symlink_to(finished_run, target_is_directory=True)
    tables = collect(tmp_path)
    table = summary_table(tables)
    quality = pd.read_csv(finished_run / "results/saes/quality.tsv", sep="\t")
    row = table.iloc[0]
    assert row["variant"] == "tokensall-latents8" and row["d_sae"] == quality["d_sae"].iloc[0]
    assert row["loss_recovered_min"] == pytest.approx(quality["fraction_recovered"].min())
    assert row["dead_fraction_max"] == pytest.approx(quality["dead_fraction"].max())
    # Training tokens: positions per epoch (2 epochs), the median over the run's SAEs.
    per_epoch = [pd.read_csv(curve, sep="\t")["tokens"].iloc[-1] / 2
                 for curve in (finished_run / "results/saes").glob("*/layer*/seed*.curve.tsv")]
    assert len(per_epoch) == 8 and row["training_tokens"] == pytest.approx(np.median(per_epoch))
    scores = pd.read_csv(finished_run / "results/similarity/neox--llama/scores.tsv", sep="\t")
    cells = scores[scores["metric"] == "rsa"]
    assert row["cross_rsa_significant"] == f"{int((cells['p_adjusted'] < 0.05).sum())}/{len(cells)}"
    # The floor pair is not a cross-model result of the study.
    assert not tables["cross"]["model_b"].str.endswith("-rerandomized").all()
    markdown = markdown_table(table)
    assert "| tokensall-latents8 |" in markdown and "heldout_svcca: ceiling above chance" in markdown
    assert f"/ {row['cross_rsa_significant']} /" in markdown
    # What the figure draws: the excess over chance with its interval, per layer pair, in float64 from the run's own table.
    drawn = tables["cross"][(tables["cross"]["model_b"] == "llama") & (tables["cross"]["metric"] == "rsa")]
    series = excess_series(drawn, ["layer_a", "layer_b"])
    expected = cells.sort_values(["layer_a", "layer_b"]).astype({"observed": "float64"})
    np.testing.assert_allclose(series["excess"], expected["observed"] - expected["null_mean"], rtol=1e-12)
    np.testing.assert_allclose(series["excess_low"], expected["ci_low"] - expected["null_mean"], rtol=1e-12)
    np.testing.assert_allclose(series["excess_high"], expected["ci_high"] - expected["null_mean"], rtol=1e-12)
    assert series["significant"].tolist() == (expected["p_adjusted"] < 0.05).tolist()
    assert (series["excess_low"] <= series["excess_high"]).all()
    # The collection computes each fraction of the ceiling again from the ceilings table: the run's own values.
    drawn = drawn.sort_values(["layer_a", "layer_b"])
    for column in ("normalized", "normalized_ci_low", "normalized_ci_high"):
        np.testing.assert_allclose(drawn[column].astype(float), expected[column].astype(float), rtol=1e-4, atol=1e-5)
    assert "Largest fraction of the seed-to-seed ceiling of any layer pair" in markdown
    plot_study(tables, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 20_000


def test_a_collection_keeps_the_variants_whose_folders_are_gone(finished_run, tmp_path):
    """The per-layer tables written beside the summary stand in for a deleted variant folder."""
    from sae_universality.errors import UserError
    from sae_universality.studies.scaling import collect, read_collection, summary_table, write_collection

    study = tmp_path / "study"
    study.mkdir()
    (study / "tokensall-latents8").symlink_to(finished_run, target_is_directory=True)
    tables = collect(study)
    write_collection(tables, tmp_path / "scaling")
    kept = read_collection(tmp_path / "scaling")
    assert sorted(kept) == ["ceiling_matching", "ceilings", "cross", "quality"]
    # The folder gone: the same summary, value for value, from the kept tables alone.
    (study / "tokensall-latents8").unlink()
    pd.testing.assert_frame_equal(summary_table(collect(study, kept)), summary_table(tables))
    # The folder back: its own rows count once, not twice.
    (study / "tokensall-latents8").symlink_to(finished_run, target_is_directory=True)
    again = collect(study, kept)
    assert {name: len(table) for name, table in again.items()} == {name: len(table) for name, table in tables.items()}
    with pytest.raises(UserError, match="--keep .*nothing.quality.tsv there"):
        read_collection(tmp_path / "nothing")


def test_a_damaged_file_ends_its_job_in_one_line_naming_it_and_the_rule_that_remakes_it(finished_run, tmp_path):
    """A truncated codes file (a disk that filled up): the matching job says which file and how to get it back."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    codes = run / "results/codes/neox/layer0/seed0.h5"
    with open(codes, "r+b") as handle:
        handle.truncate(2000)
    target = "results/matching/neox--llama/layer0--layer1.tsv"
    # The target first: --forcerun takes every word after it as a rule, and the run would become `all`.
    result = snakemake(run, target, "--forcerun", "match_features", check=False)
    assert result.returncode != 0
    # The job's line, also shown by Snakemake from the job's log.
    lines = {line for line in result.stderr.splitlines() if line.startswith("sae-universality:")}
    assert len(lines) == 1, result.stderr[-3000:]
    assert re.fullmatch(r"sae-universality: results/codes/neox/layer0/seed0\.h5 is damaged or incomplete "
                        r"\(Unable to synchronously open file \(truncated file: eof = 2000, .*\)\); delete it and "
                        r"rerun: Snakemake remakes it \(rule encode_features\)", lines.pop())
    assert "Traceback" not in (run / "logs/match_features/neox--llama/layer0--layer1.log").read_text()
    # The remedy works: delete it, rerun, and the same codes come back.
    codes.unlink()
    snakemake(run, target)
    with h5py.File(codes, "r") as remade, h5py.File(finished_run / "results/codes/neox/layer0/seed0.h5", "r") as original:
        for name in original:
            np.testing.assert_array_equal(remade[name][:], original[name][:])


def test_the_rule_study_rematches_a_layer_pair_under_every_rule(finished_run):
    """studies/rules.py on a finished run: the run's own rule gives back the run's kept pairs and scores, and every
    other rule's pairs are counted against them."""
    from sae_universality.studies.rules import VARIANTS, compare_rules

    table = compare_rules(finished_run, "neox--llama", 2, 1)
    assert len(table) == len(VARIANTS) * table["metric"].nunique()
    own = table[(table["rule"] == "highest")]
    run_matches = pd.read_csv(finished_run / "results/matching/neox--llama/layer2--layer1.tsv", sep="\t")
    assert (own["kept"] == int(run_matches["kept"].sum())).all()
    assert (own["same_partner_as_run_rule"] == own["kept"]).all()
    run_scores = pd.read_csv(finished_run / "results/similarity/neox--llama/layer2--layer1.tsv", sep="\t")
    merged = own.merge(run_scores, on="metric", suffixes=("", "_run"))
    np.testing.assert_allclose(merged["observed"], merged["observed_run"], rtol=1e-5)  # the TSV keeps 6 digits
    np.testing.assert_allclose(merged["null_mean"], merged["null_mean_run"], rtol=1e-5)
    assert (table["same_partner_as_run_rule"] <= table["kept"]).all()
    assert set(table["n_candidates"]) == {"", "5", "all"}
    np.testing.assert_allclose(table["excess"], table["observed"] - table["null_mean"])


def test_every_layer_pair_gets_self_contained_feature_cards(finished_run):
    """Cards for the real pair's layer pairs (not the floor's): the best card is the best kept pair, every page
    opens from disk with nothing to fetch, and the output tokens are the SAE's decoder through the model's head."""
    import json
    import re

    from sae_universality.cards.output_tokens import output_token_effects
    from sae_universality.models.sources import load_model
    from sae_universality.similarity.stage import decoder_rows

    for layer_a, layer_b in ((0, 1), (2, 1)):
        folder = finished_run / f"results/cards/neox--llama/layer{layer_a}--layer{layer_b}"
        listing = json.loads((folder / "cards.json").read_text())
        table = pd.read_csv(finished_run / f"results/matching/neox--llama/layer{layer_a}--layer{layer_b}.tsv", sep="\t")
        kept = table[table["kept"]].sort_values("final_correlation", ascending=False, kind="stable")
        best = [card for card in listing["cards"] if card["kind"] == "best"]
        assert best and (best[0]["feature_a"], best[0]["feature_b"]) == (int(kept.iloc[0]["final_a"]),
                                                                         int(kept.iloc[0]["feature_b"]))
        index = (folder / "index.html").read_text()
        for card in listing["cards"]:
            assert f'href="{card["file"]}"' in index
            page = (folder / card["file"]).read_text()
            assert not re.search(r"https?://|src=|@import|url\(", page)
            assert f"feature {card['feature_a']}</h2>" in page and f"feature {card['feature_b']}</h2>" in page
        combined = (folder.parent / f"layer{layer_a}--layer{layer_b}.html").read_text()  # the report's page
        assert combined.count('<section id="card') == len(listing["cards"])
        assert not re.search(r"https?://|src=|@import|url\(", combined)
    assert not (finished_run / "results/cards/neox--llama-rerandomized").exists()
    model, _, _ = load_model(finished_run / "resources/models/llama/manifest.json")
    expected = output_token_effects(model, decoder_rows(finished_run / "results/saes/llama/layer1/seed0"))
    with np.load(finished_run / "results/saes/llama/layer1/seed0.output_tokens.npz") as saved:
        np.testing.assert_array_equal(saved["promoted_ids"], expected.promoted_ids)
        np.testing.assert_allclose(saved["suppressed_effects"], expected.suppressed_effects, rtol=1e-5)


def test_every_layer_pair_gets_a_linked_map_and_cards_that_say_rank_and_context_only_correlation(finished_run):
    """The map places each SAE's features by its layout (the tiny config's: PCA of the unit decoder rows, by
    hand here in float64) and links exactly the kept pairs; each card's rank among the B feature's candidates is
    the float64 correlation of the codes' columns, and its context-only correlation the controls' per-pair
    table's, whose full column is the match table's."""
    import json

    from sae_universality.saes.codes import feature_columns
    from sae_universality.matching.stage import aligned_rows
    from sae_universality.similarity.stage import decoder_rows

    rows_a, rows_b = aligned_rows(finished_run / "results/alignment/neox--llama.h5")
    for layer_a, layer_b in ((0, 1), (2, 1)):
        unit = decoder_rows(finished_run / f"results/saes/neox/layer{layer_a}/seed0")
        unit /= np.linalg.norm(unit, axis=1, keepdims=True)
        centred = unit - unit.mean(axis=0)
        axes = np.linalg.svd(centred, full_matrices=False)[2][:2]
        layout = pd.read_csv(finished_run / f"results/saes/neox/layer{layer_a}/seed0.layout.tsv", sep="\t")
        for axis in range(2):  # equal up to the axis's sign
            expected = centred @ axes[axis]
            np.testing.assert_allclose(np.abs(layout[["x", "y"]].to_numpy()[:, axis]), np.abs(expected), atol=1e-5)

        pair = f"neox--llama/layer{layer_a}--layer{layer_b}"
        folder = finished_run / f"results/cards/{pair}"
        table = pd.read_csv(finished_run / f"results/matching/{pair}.tsv", sep="\t")
        kept = table[table["kept"]]
        page = (folder / "map.html").read_text()
        data = json.loads(page.split('id="map-data">')[1].split("</script>")[0])
        assert sorted((a, b) for a, b, *_ in data["pairs"]) == sorted(zip(kept["final_a"], kept["feature_b"]))
        assert len(data["a"]["xy"]) == len(layout) and len(data["b"]["xy"]) == int(table["feature_b"].max()) + 1
        assert all((folder / pair[4]).exists() for pair in data["pairs"] if pair[4])
        report_page = (finished_run / f"results/cards/{pair}.html").read_text()
        assert 'id="map-data"' in report_page and 'href="map.html"' in (folder / "index.html").read_text()

        controls = pd.read_csv(finished_run / f"results/matching/{pair}.controls_pairs.tsv", sep="\t")
        np.testing.assert_allclose(controls.sort_values("feature_b")["full"],
                                   kept.sort_values("feature_b")["final_correlation"], rtol=1e-5)
        context_only = {(row.feature_a, row.feature_b): row.context_only for row in controls.itertuples()}
        listing = json.loads((folder / "cards.json").read_text())["cards"]
        n_a = len(layout)
        codes_a = feature_columns(finished_run / f"results/codes/neox/layer{layer_a}/seed0.h5", rows_a,
                                  list(range(n_a))).astype(np.float64)
        for card in listing:
            column_b = feature_columns(finished_run / "results/codes/llama/layer1/seed0.h5", rows_b,
                                       [card["feature_b"]])[:, 0].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                correlation = np.array([np.corrcoef(codes_a[:, a], column_b)[0, 1] for a in range(n_a)])
            own = correlation[card["feature_a"]]
            expected = 1 + int(np.sum(correlation[np.isfinite(correlation)] > own)) if np.isfinite(own) else None
            assert card["rank_among_candidates"] == expected
            key = (card["feature_a"], card["feature_b"])
            if key in context_only:
                assert card["context_only_correlation"] == pytest.approx(context_only[key], rel=1e-5)
        assert any(card["context_only_correlation"] is not None for card in listing)


def test_the_linked_map_and_cards_work_in_a_real_browser_with_the_network_off(finished_run):
    """Headless Chromium, offline, on the report's page and on the folder's map: hovering a kept point shows its
    tokens and partner and lights the partner; a rectangle over a whole panel lists every kept pair (strongest
    first) and lights every partner; a click selects one point; a pair's card link leads to its card; and no
    request left the pages (every URL the browser asked for is a file of the run)."""
    import json

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from browser import offline_browser, requested_urls
    from sae_universality.cards.linked_map import MAX_LISTED

    pair = "neox--llama/layer0--layer1"
    with offline_browser() as driver:
        driver.get((finished_run / f"results/cards/{pair}.html").as_uri())
        data = json.loads(driver.find_element(By.ID, "map-data").get_attribute("textContent"))
        pairs = data["pairs"]
        assert pairs
        feature_a, feature_b = pairs[0][:2]
        ActionChains(driver).move_to_element(driver.find_element(By.ID, f"a-{feature_a}")).perform()
        tooltip = driver.find_element(By.ID, "map-tooltip")
        assert tooltip.is_displayed()
        assert f"A {feature_a} (neox layer 0)" in tooltip.text and f"partner B {feature_b}, correlation" in tooltip.text
        assert "hover-partner" in driver.find_element(By.ID, f"b-{feature_b}").get_attribute("class")

        panel = driver.find_element(By.ID, "panel-a")
        width, height = panel.size["width"], panel.size["height"]
        (ActionChains(driver).move_to_element_with_offset(panel, -width // 2 + 2, -height // 2 + 2).click_and_hold()
         .move_by_offset(width - 4, height - 4).release().perform())
        assert int(driver.find_element(By.ID, "pair-count").text) == len(pairs)
        lit = {int(point.get_attribute("data-feature"))
               for point in driver.find_elements(By.CSS_SELECTOR, "#panel-b circle.partner")}
        assert lit == {pair_b for _, pair_b, *_ in pairs}
        items = driver.find_elements(By.CSS_SELECTOR, "#pair-list li[data-a]")
        assert len(items) == min(len(pairs), MAX_LISTED)
        listed = [(int(item.get_attribute("data-a")), int(item.get_attribute("data-b"))) for item in items]
        assert listed == [(a, b) for a, b, *_ in sorted(pairs, key=lambda pair: -pair[2])][:len(items)]

        ActionChains(driver).click(driver.find_element(By.ID, f"b-{feature_b}")).perform()
        assert [int(point.get_attribute("data-feature"))
                for point in driver.find_elements(By.CSS_SELECTOR, "#panel-b circle.selected")] == [feature_b]
        assert [point.get_attribute("id") for point in driver.find_elements(By.CSS_SELECTOR, "#panel-a .partner")] \
            == [f"a-{feature_a}"]
        carded = [pair for pair in pairs if pair[4]]
        assert carded  # the best pair at least has a card
        ActionChains(driver).move_to_element_with_offset(panel, -width // 2 + 2, -height // 2 + 2).click_and_hold() \
            .move_by_offset(width - 4, height - 4).release().perform()
        link = driver.find_element(By.CSS_SELECTOR, f'#pair-list a[href="{carded[0][4]}"]')
        link.click()
        assert driver.current_url.endswith(carded[0][4])
        card = driver.find_element(By.ID, carded[0][4].lstrip("#"))
        assert card.is_displayed() and f"feature {carded[0][0]}" in card.text

        driver.get((finished_run / f"results/cards/{pair}/map.html").as_uri())
        folder_pairs = json.loads(driver.find_element(By.ID, "map-data").get_attribute("textContent"))["pairs"]
        first = next(pair for pair in folder_pairs if pair[4])
        ActionChains(driver).click(driver.find_element(By.ID, f"a-{first[0]}")).perform()
        driver.find_element(By.CSS_SELECTOR, f'#pair-list a[href="{first[4]}"]').click()
        assert driver.current_url.endswith(f"/{pair}/{first[4]}")
        assert f"feature {first[0]}</h2>" in driver.page_source

        # As the Snakemake report shows it: the page as a base64 data URL in an iframe.
        import base64

        page = (finished_run / f"results/cards/{pair}.html").read_bytes()
        frame = finished_run / "report_frame.html"
        frame.write_text(f'<!DOCTYPE html><html><body><iframe id="result" width="1100" height="1200" src="data:text/html;'
                         f'charset=utf8;base64,{base64.b64encode(page).decode()}"></iframe></body></html>')
        driver.get(frame.as_uri())
        driver.switch_to.frame(driver.find_element(By.ID, "result"))
        ActionChains(driver).click(driver.find_element(By.ID, f"a-{feature_a}")).perform()
        assert [point.get_attribute("id") for point in driver.find_elements(By.CSS_SELECTOR, "#panel-b .partner")] \
            == [f"b-{feature_b}"]
        driver.switch_to.default_content()
        urls = requested_urls(driver)
    assert urls and all(url.startswith(((finished_run / "results/cards").as_uri(), frame.as_uri(), "data:"))
                        for url in urls), urls


def test_the_causal_check_measures_effects_and_their_agreement_as_computed_here_independently(finished_run):
    """The effects file against a float64 recomputation from the tiny model (the gradient by autograd on a
    perturbation added in a plain forward of the window prefix, times the codes and the decoder); a layer pair's
    effect correlation against np.corrcoef of those profiles; the function table, the verdict and the cards carry
    it."""
    import json

    from sae_universality.causal.stage import read_effects, sample_windows
    from sae_universality.matching.stage import aligned_rows
    from sae_universality.models.sources import load_model
    from sae_universality.saes.codes import iter_code_chunks
    from sae_universality.similarity.stage import decoder_rows
    from sae_universality.text.corpus import read_windows

    model, tokenizer, _ = load_model(finished_run / "resources/models/llama/manifest.json")
    model = model.double()
    rows, windows, effects = read_effects(finished_run / "results/causal/llama/effects.h5", 1, "seed0")
    with h5py.File(finished_run / "results/activations/llama/layer1.h5") as cache:
        positions = cache["position"][:][rows]
    codes = next(iter_code_chunks(finished_run / "results/codes/llama/layer1/seed0.h5", rows, len(rows) + 1)).toarray()
    decoder = decoder_rows(finished_run / "results/saes/llama/layer1/seed0")
    assert effects.nnz == np.count_nonzero(codes)  # no effect where a feature is silent
    corpus = {window.window_index: window for window in read_windows(finished_run / "resources/corpus/windows.jsonl")}
    assert sorted(set(windows)) == [w.window_index for w in sample_windows(list(corpus.values()), 48, 0)]
    for sample in np.random.default_rng(0).choice(len(rows), 4, replace=False):
        window = corpus[int(windows[sample])]
        ids = tokenizer(window.text, return_tensors="pt")["input_ids"]
        same_window = positions[windows == windows[sample]]
        ids = ids[:, :int(same_window.max()) + 1]  # the prefix: the window is shorter than causal.prefix_chars
        gradient = perturbation_gradient(model, ids, 1, int(positions[sample]))
        expected = -codes[sample] * (decoder @ gradient)
        np.testing.assert_allclose(effects[sample].toarray()[0], expected, rtol=1e-3, atol=1e-6)

    summary = pd.read_csv(finished_run / "results/causal/neox--llama/layer2--layer1.tsv", sep="\t")
    pairs = pd.read_csv(finished_run / "results/causal/neox--llama/layer2--layer1.pairs.tsv", sep="\t")
    kept = pd.read_csv(finished_run / "results/matching/neox--llama/layer2--layer1.tsv", sep="\t")
    kept = kept[kept["kept"]].sort_values("feature_b")
    assert pairs["feature_b"].tolist() == kept["feature_b"].tolist()
    rows_a, _, effects_a = read_effects(finished_run / "results/causal/neox/effects.h5", 2, "seed0")
    rows_b, _, effects_b = read_effects(finished_run / "results/causal/llama/effects.h5", 1, "seed0")
    aligned_a, aligned_b = aligned_rows(finished_run / "results/alignment/neox--llama.h5")
    inside = np.isin(aligned_a, rows_a) & np.isin(aligned_b, rows_b)
    x = effects_a[np.searchsorted(rows_a, aligned_a[inside])].toarray()
    y = effects_b[np.searchsorted(rows_b, aligned_b[inside])].toarray()
    expected = [np.corrcoef(x[:, a], y[:, b])[0, 1] if x[:, a].std() > 0 and y[:, b].std() > 0 else np.nan
                for a, b in zip(pairs["feature_a"], pairs["feature_b"])]
    np.testing.assert_allclose(pairs["effect_correlation"], expected, rtol=1e-5, atol=1e-6)  # 6 digits in the TSV
    assert summary["effect_mean"].iloc[0] == pytest.approx(np.nanmean(expected), rel=1e-5)
    assert summary["n_positions"].iloc[0] == inside.sum()
    table = pd.read_csv(finished_run / "results/causal/neox--llama/function.tsv", sep="\t")
    assert len(table) == 2 and {"p_adjusted", "above_chance", "ceiling", "context_only_mean"} <= set(table.columns)
    agreement = pd.read_csv(finished_run / "results/causal/llama/agreement.tsv", sep="\t")
    assert set(agreement["kind"]) == {"all", "random", "largest"} and (agreement["cache_relative_error"] < 1e-4).all()
    assert "**Functional agreement (the causal check).**" in (finished_run / "results/verdict.md").read_text()
    assert not (finished_run / "results/causal/neox--llama-rerandomized").exists()  # not for the floor
    listing = json.loads((finished_run / "results/cards/neox--llama/layer2--layer1/cards.json").read_text())["cards"]
    by_pair = dict(zip(zip(pairs["feature_a"], pairs["feature_b"]), pairs["effect_correlation"]))
    for card in listing:
        if (card["feature_a"], card["feature_b"]) in by_pair and np.isfinite(by_pair[(card["feature_a"], card["feature_b"])]):
            assert card["effect_correlation"] == pytest.approx(by_pair[(card["feature_a"], card["feature_b"])])


def test_a_named_pair_gets_its_card_matched_or_not(finished_run):
    """cards.pairs: a pair the user names gets a card of kind "named" with its correlation over the aligned
    positions, computed here in float64 from the codes (runs last: it changes the run's config)."""
    import json

    import yaml

    from sae_universality.saes.codes import feature_columns
    from sae_universality.matching.stage import aligned_rows

    config_path = finished_run / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["cards"] = {"pairs": [{"a": "neox", "b": "llama", "layer_a": 2, "layer_b": 1, "feature_a": 3,
                                  "feature_b": 5}]}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(finished_run, "results/cards/neox--llama/layer2--layer1")
    listing = json.loads((finished_run / "results/cards/neox--llama/layer2--layer1/cards.json").read_text())
    named = [card for card in listing["cards"] if card["kind"] == "named"]
    assert [(card["feature_a"], card["feature_b"]) for card in named] == [(3, 5)]
    rows_a, rows_b = aligned_rows(finished_run / "results/alignment/neox--llama.h5")
    x = feature_columns(finished_run / "results/codes/neox/layer2/seed0.h5", rows_a, [3])[:, 0].astype(np.float64)
    y = feature_columns(finished_run / "results/codes/llama/layer1/seed0.h5", rows_b, [5])[:, 0].astype(np.float64)
    expected = np.corrcoef(x, y)[0, 1] if x.std() > 0 and y.std() > 0 else None
    if expected is None:
        assert named[0]["correlation"] is None
    else:
        assert named[0]["correlation"] == pytest.approx(expected, abs=1e-9)
    page = (finished_run / "results/cards/neox--llama/layer2--layer1" / named[0]["file"]).read_text()
    assert "named pair: neox 2/3 and llama 1/5" in page
    # The other layer pair's cards were not redone.
    assert not [card for card in json.loads((finished_run / "results/cards/neox--llama/layer0--layer1/cards.json")
                                            .read_text())["cards"] if card["kind"] == "named"]
