"""The whole workflow on a tiny config: real Snakemake, real models (tiny, random), real text."""

import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from sae_universality.data import read_windows

from conftest import REPO, write_tiny_experiment


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
    write_tiny_experiment(workdir, tiny_models)
    snakemake(workdir)
    return workdir


def test_outputs_hold_the_models_activations(finished_run):
    from sae_universality.models import load_model

    windows = read_windows(finished_run / "resources/corpus/windows.jsonl")
    model, tokenizer, manifest = load_model(finished_run / "resources/models/llama/manifest.json")
    assert manifest["n_layers"] == 4 and manifest["source"] == "path"
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
    expected = {(m, l, s) for m, layers in (("neox", (0, 2)), ("llama", (1,))) for l in layers for s in ("seed0", "seed1")}
    assert set(zip(quality["model"], quality["layer"], quality["sae"])) == expected
    assert (quality["fvu"] > 0).all() and (quality["fvu"] < 1).all(), "trained SAEs explain some variance"
    assert (quality["mean_l0"] <= 4 + 1e-9).all(), "TopK with k=4 keeps at most 4 latents"
    assert quality["ce_zero"].notna().all() and quality["ce_clean"].notna().all()
    # The seeds of one layer share its clean and zero-ablation passes, and differ in their own.
    for _, layer in quality.groupby(["model", "layer"]):
        assert layer["ce_clean"].nunique() == 1 and layer["ce_zero"].nunique() == 1
        assert layer["ce_sae"].nunique() == len(layer) == 2
    expected_recovered = (quality["ce_zero"] - quality["ce_sae"]) / (quality["ce_zero"] - quality["ce_clean"])
    # Six significant digits of nearly equal losses (tiny random models): compare loosely.
    np.testing.assert_allclose(quality["fraction_recovered"], expected_recovered, rtol=5e-3)
    assert (finished_run / "results/saes/training_curves.png").stat().st_size > 10_000


def test_matched_correlations_equal_a_float64_recomputation(finished_run):
    import scipy.sparse

    from sae_universality.codes import iter_code_chunks

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
    kept = table[table["kept"]]
    assert kept["final_a"].is_unique and (kept["final_correlation"] >= 0.1).all()
    summary = pd.read_csv(finished_run / "results/matching/neox--llama/summary.tsv", sep="\t")
    row = summary[(summary["layer_a"] == 2) & (summary["layer_b"] == 1)].iloc[0]
    assert row["n_after_threshold"] == len(kept) and row["n_alive_b"] == alive_b.sum()
    assert len(summary) == 2  # every (layer_a, layer_b)
    page = (finished_run / "results/matching/neox--llama/pairs.html").read_text()
    assert "<mark>" in page and "neox layer 2" in page


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
    assert set(cell.index) == {"svcca", "rsa", "linear_cka", "mutual_knn", "procrustes"}
    if len(kept) >= 5:
        # Tables carry 6 significant digits.
        assert cell.loc["rsa", "observed"] == pytest.approx(compute_metric("rsa", X, Y), rel=1e-5, abs=1e-8)
        assert cell.loc["svcca", "observed"] == pytest.approx(compute_metric("svcca", X, Y, variance=0.99), rel=1e-5, abs=1e-8)
        assert (cell["p"] >= 1 / 201).all() and (cell["p"] <= 1).all()  # 200 permutations: p is never 0
    # The ceiling control (two seeds) exists for every (model, layer) and feeds the normalized score:
    # the cell's excess over its null as a fraction of the ceiling's excess over the ceiling's own null.
    ceilings = {}
    for model, layer in (("neox", 0), ("neox", 2), ("llama", 1)):
        ceiling = pd.read_csv(finished_run / f"results/similarity/ceiling/{model}/layer{layer}.tsv", sep="\t")
        assert set(ceiling["metric"]) == set(cell.index)
        ceilings[model, layer] = ceiling.set_index("metric")
    for metric, row in cell.iterrows():
        both = [ceilings["neox", 2].loc[metric], ceilings["llama", 1].loc[metric]]
        span = np.mean([c["observed"] for c in both]) - np.mean([c["null_mean"] for c in both])
        if np.isfinite(row["observed"]) and np.isfinite(span) and abs(span) > 1e-6:
            expected = (row["observed"] - row["null_mean"]) / span
            assert row["normalized"] == pytest.approx(expected, rel=1e-4, abs=1e-4), metric
    table = pd.read_csv(finished_run / "results/similarity/neox--llama/table.tsv", sep="\t")
    assert len(table) == 2 and {"svcca_observed", "svcca_null_mean", "svcca_p", "svcca_normalized"} <= set(table.columns)
    semantic = pd.read_csv(finished_run / "results/similarity/neox--llama/semantic.tsv", sep="\t")
    assert {"time", "calendar", "nature", "emotions", "month_names", "countries", "biology"} <= set(semantic["category"])
    assert semantic.loc[semantic["n_pairs"] < 5, "skipped"].all()  # min_pairs: 5
    tidy = pd.read_csv(finished_run / "results/similarity/all_scores.tsv", sep="\t")
    assert {"all", "time"} <= set(tidy["category"]) and len(tidy) == len(scores) + len(semantic)
    assert (finished_run / "results/similarity/neox--llama/heatmaps.png").stat().st_size > 10_000
