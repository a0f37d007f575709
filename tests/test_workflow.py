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
