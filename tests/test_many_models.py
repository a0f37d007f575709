"""`pairs: all` (issue 22): three real (tiny) models, every pair compared, each model's stages run once."""

import itertools
import json
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import write_tiny_experiment
from test_workflow import snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_model_run(tiny_models, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("three")
    config_path = write_tiny_experiment(workdir, tiny_models)
    config = yaml.safe_load(config_path.read_text())
    config["models"]["gemma"] = {"path": str(tiny_models["gemma"]), "layers": [1]}
    config["pairs"] = "all"
    # Families for the atlas: neox and gemma one family (they share a tokenizer here), llama another.
    for model, family in (("neox", "fam-x"), ("gemma", "fam-x"), ("llama", "fam-y")):
        config["models"][model]["family"] = family
    # Only what the sharing needs: one seed (no ceiling), no controls, no semantic rematch.
    config["saes"]["seeds"] = [0]
    config["controls"] = {"enabled": False}
    config["semantic"] = {"enabled": False}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))  # the models in their order: neox, llama, gemma
    snakemake(workdir)
    return workdir, list(config["models"])


def jobs_run(workdir) -> Counter:
    """{rule: jobs run} from the run's Snakemake log."""
    log = max((workdir / ".snakemake" / "log").glob("*.snakemake.log")).read_text()
    return Counter(re.findall(r"^(?:local)?rule (\w+):$", log, re.M))


def test_every_pair_of_three_models_is_compared_and_each_model_runs_once(three_model_run):
    workdir, models = three_model_run
    pairs = list(itertools.combinations(models, 2))  # every unordered pair, in the order the models are listed
    assert len(pairs) == 3
    jobs = jobs_run(workdir)
    # One preparation per model, one SAE per (model, layer): neox 0 and 2, llama 1, gemma 1.
    assert jobs["prepare_model"] == 3 and jobs["train_sae"] == 4 and jobs["merge_activations"] == 4
    assert jobs["encode_features"] == 4 and jobs["evaluate_saes"] == 4
    assert jobs["downstream_loss"] == 3, "one downstream-loss job per model: its clean pass serves all its layers"
    # One alignment per pair (three tokenizer pairings), one table per pair.
    assert jobs["align_positions"] == 3 and jobs["similarity_tables"] == 3
    for a, b in pairs:
        table = pd.read_csv(workdir / f"results/similarity/{a}--{b}/table.tsv", sep="\t")
        layers = {"neox": [0, 2], "llama": [1], "gemma": [1]}
        assert sorted(zip(table["layer_a"], table["layer_b"])) == list(itertools.product(layers[a], layers[b]))
        assert set(table["model_a"]) == {a} and set(table["model_b"]) == {b}
        assert table["n_pairs"].ge(0).all()
    tidy = pd.read_csv(workdir / "results/similarity/all_scores.tsv", sep="\t")
    assert set(zip(tidy["model_a"], tidy["model_b"])) == set(pairs)
    verdict = (workdir / "results/verdict.md").read_text()
    assert all(f"**{a} vs {b}**" in verdict for a, b in pairs)


def test_the_atlas_sets_every_pair_side_by_side_and_marks_the_same_family(three_model_run):
    workdir, models = three_model_run
    atlas = pd.read_csv(workdir / "results/atlas/atlas.tsv", sep="\t")
    pairs = list(itertools.combinations(models, 2))
    scores = pd.concat([pd.read_csv(workdir / f"results/similarity/{a}--{b}/scores.tsv", sep="\t") for a, b in pairs])
    assert len(atlas) == len(scores)
    merged = atlas.merge(scores, on=["model_a", "model_b", "layer_a", "layer_b", "metric"], suffixes=("", "_scores"))
    assert len(merged) == len(scores)
    np.testing.assert_allclose(merged["excess"], merged["observed"] - merged["null_mean"], rtol=2e-5, atol=1e-6)  # 6 digits
    np.testing.assert_allclose(merged["excess_ci_low"], merged["ci_low"] - merged["null_mean"], rtol=2e-5, atol=1e-6)
    same = {tuple(sorted(pair)) for pair in zip(atlas.loc[atlas["same_family"], "model_a"],
                                                 atlas.loc[atlas["same_family"], "model_b"])}
    assert same == {("gemma", "neox")}
    assert atlas["same_family"].iloc[0]  # the same-family pair leads the table
    # Relative depth from each model's manifest: block L of an N-block model at (L + 1) / N.
    for side in ("a", "b"):
        blocks = atlas[f"model_{side}"].map(
            lambda model: json.loads((workdir / f"resources/models/{model}/manifest.json").read_text())["n_layers"])
        np.testing.assert_allclose(atlas[f"relative_depth_{side}"], (atlas[f"layer_{side}"] + 1) / blocks)
    assert atlas["relative_depth_a"].between(0, 1, inclusive="right").all()
    assert atlas["context_only_excess"].isna().all()  # the controls were off in this run
    assert (workdir / "results/atlas/atlas.png").stat().st_size > 20_000


def test_the_atlas_run_is_collected_for_the_docs_with_its_cpu(three_model_run, tmp_path):
    from sae_universality.report.docs import collect_atlas, job_cpu

    workdir, models = three_model_run
    record = collect_atlas(workdir, folder=tmp_path).iloc[0]
    atlas = pd.read_csv(tmp_path / "atlas.tsv", sep="\t")
    assert atlas.equals(pd.read_csv(workdir / "results/atlas/atlas.tsv", sep="\t"))
    for a, b in itertools.combinations(models, 2):
        copied = pd.read_csv(tmp_path / f"{a}--{b}.scores.tsv", sep="\t")
        assert copied.equals(pd.read_csv(workdir / f"results/similarity/{a}--{b}/scores.tsv", sep="\t"))
    total, forward = job_cpu(workdir)
    assert record["job_cpu_seconds"] == pytest.approx(total) and 0 < forward < total
    assert not (tmp_path / "depth.tsv").exists()  # no pair compares three layers of each model here
