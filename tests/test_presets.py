"""The paper's experiments as presets (presets/*.yaml).

Each preset dry-runs on the real hub ids with an empty, offline hub cache, and
runs through the real Snakemake CLI on a stand-in hub (tests/hub_standins.py):
tiny random models and SAE releases under the real ids and in the real
layouts, and OpenWebText's Parquet file as a dataset repository of the cache, read
by the real `datasets` library. Only sizes
(documents, permutations, SAE width) are overridden, by a second --configfile;
the variants of one family share a working directory, so Snakemake reruns only
what their settings change, and each run's targets are one layer pair: every
layer pair is what the dry runs show.
"""

import http.server
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import product
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.numpy import load_file

from conftest import REPO
from hub_standins import (SPARSIFY_K, GEMMA_RES_JB_FOLDERS, GEMMA_RES_JB_NORMALIZED, GEMMA_SCOPE_CANONICAL,
                          GEMMA_SCOPE_L0S, OPENWEBTEXT, PARQUET_COMMIT, PARQUET_FILE, PARQUET_REVISION,
                          build_hub_cache, standin_documents, write_dataset_repo, write_parquet)

PRESETS = REPO / "presets"
NAMES = ["gemma-corrected", "gemma-paper", "pythia-corrected", "pythia-own-saes", "pythia-paper"]
# The published settings, each a path into the config and its value; corrected presets keep the defaults.
PAPER_SETTINGS = {
    "pythia": {("saes", "pre_activations"): True, ("matching", "junk_filter"): False,
               ("matching", "one_to_one"): "first", ("similarity", "svcca_components"): 1,
               ("similarity", "metrics"): ["svcca", "rsa"]},
    "gemma": {("matching", "junk_filter"): False, ("matching", "one_to_one"): "first",
              ("similarity", "svcca_components"): 1, ("similarity", "metrics"): ["svcca", "rsa"]},
}
SIZES = {"similarity": {"n_permutations": 20, "random_subset_draws": 2, "min_pairs": 5, "knn_k": 3}}


def load_preset(name: str) -> dict:
    return yaml.safe_load((PRESETS / f"{name}.yaml").read_text())


def snakemake(workdir: Path, configfiles: list, env: dict, *arguments) -> subprocess.CompletedProcess:
    """Snakemake as the README runs a preset: from the repository, configs replacing config.yaml."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
         "--replace-workflow-config", "--configfile", *map(str, configfiles), "--cores", "2", *arguments],
        capture_output=True, text=True, timeout=900, env=env, cwd=REPO,
    )
    if result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(arguments)} failed:\n{result.stderr[-4000:]}")
    return result


def fresh_workdir(path: Path) -> Path:
    """A working directory holding config.yaml, as the repository does: presets must replace it, not extend it."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config.yaml", path / "config.yaml")
    return path


# ---------------------------------------------------------------- the preset files


def test_presets_folder_holds_both_variants_of_both_experiments_and_own_saes():
    # Besides the paper's experiments: the scaling study's base config and the reference experiment (issue 12).
    assert sorted(path.stem for path in PRESETS.glob("*.yaml")) == sorted([*NAMES, "scaling", "reference", "atlas"])


def test_scaling_preset_and_every_study_variant_are_valid_configs():
    from sae_universality.config import check_config
    from sae_universality.models.sources import check_model_entries
    from sae_universality.studies.scaling import study_variants

    variants = study_variants(load_preset("scaling"))
    assert list(variants) == ["tokens16000-latents2048", "tokens50000-latents2048", "tokens150000-latents2048",
                              "tokensall-latents2048", "tokens150000-latents8192"]
    for name, config in variants.items():
        checked = check_config(config, check_models=check_model_entries)
        assert checked["saes"]["seeds"] == [0, 1] and checked["saes"]["loss_windows"] >= 8, name
    assert variants["tokensall-latents2048"]["corpus"]["token_budget"] is None
    # Every budget draws from the Wikipedia articles; the largest reads all of them.
    assert {config["corpus"]["source"] for config in variants.values()} == {"wikipedia-sample"}


def test_study_variants_and_the_reference_share_activations_exactly_where_their_text_and_layers_agree(tmp_path):
    from sae_universality.studies.scaling import activation_identity, share_activations, study_variants, write_variant

    variants = study_variants(load_preset("scaling"))
    reference = load_preset("reference")
    identity = {name: activation_identity(config) for name, config in variants.items()}
    # The width axis reads the same activations; different budgets do not.
    assert identity["tokens150000-latents8192"] == identity["tokens150000-latents2048"]
    assert len({identity[name] for name in variants if "latents8192" not in name}) == 4
    # The reference experiment (its own shards, SAEs and similarity settings) shares the largest variant's.
    assert reference["activations"]["shards"] != variants["tokensall-latents2048"]["activations"].get("shards", 1)
    assert activation_identity(reference) == identity["tokensall-latents2048"]

    source = write_variant(tmp_path, "tokens150000-latents2048", variants["tokens150000-latents2048"])
    for model, entry in variants["tokens150000-latents2048"]["models"].items():
        for layer in entry["layers"]:
            path = source / "results" / "activations" / model / f"layer{layer}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{model}{layer}".encode())
    (source / "resources" / "corpus").mkdir(parents=True)
    (source / "resources" / "corpus" / "windows.jsonl").write_text("{}\n")
    other_budget = write_variant(tmp_path, "tokens50000-latents2048", variants["tokens50000-latents2048"])
    assert share_activations(other_budget, variants["tokens50000-latents2048"], [source]) is None
    assert not (other_budget / "results").exists()
    wider = write_variant(tmp_path, "tokens150000-latents8192", variants["tokens150000-latents8192"])
    assert share_activations(wider, variants["tokens150000-latents8192"], [other_budget, source]) == source
    shared = wider / "results" / "activations" / "gemma3" / "layer14.h5"
    original = source / "results" / "activations" / "gemma3" / "layer14.h5"
    assert shared.read_bytes() == b"gemma314" and shared.stat().st_ino == original.stat().st_ino
    assert (wider / "resources" / "corpus" / "windows.jsonl").stat().st_mtime == \
        (source / "resources" / "corpus" / "windows.jsonl").stat().st_mtime
    # A variant that has activations of its own keeps them.
    assert share_activations(wider, variants["tokens150000-latents8192"], [source]) is None


@pytest.mark.parametrize("family", ["pythia", "gemma"])
def test_paper_and_corrected_differ_exactly_in_the_published_settings(family):
    paper, corrected = load_preset(f"{family}-paper"), load_preset(f"{family}-corrected")
    shared = ("corpus", "activations")
    assert {key: paper[key] for key in shared} == {key: corrected[key] for key in shared}
    assert paper["models"] == corrected["models"]
    # The corrected variant adds the floor control: a re-randomized copy of B, whose SAEs are the only
    # ones it trains (saes.train sizes them like the published ones).
    assert [{**pair, "floor": True} for pair in paper["pairs"]] == corrected["pairs"]
    assert set(corrected["saes"]) == {"train"} and set(corrected["saes"]["train"]) == {"d_sae", "k"}
    published = {(section, key): value for section in ("saes", "matching", "similarity")
                 for key, value in paper.get(section, {}).items()}
    assert published == PAPER_SETTINGS[family]
    assert not {"matching", "similarity"} & set(corrected), "corrected = this project's defaults"


@pytest.mark.parametrize("name", ["pythia-paper", "gemma-paper", "pythia-own-saes"])
def test_presets_read_the_papers_text_and_models(name):
    preset = load_preset(name)
    corpus = preset["corpus"]
    assert corpus["source"] == "hf-dataset" and corpus["hf_dataset"]["name"] == "Skylion007/openwebtext"
    assert corpus["hf_dataset"]["text_field"] == "text" and corpus["order"] == "first"
    if name.startswith("gemma"):
        assert (corpus["n_documents"], corpus["window_chars"], corpus["windows_per_document"]) == (150, 600, 1)
        assert {m: e["hf"] for m, e in preset["models"].items()} == {"gemma1": "google/gemma-2b", "gemma2": "google/gemma-2-2b"}
        assert preset["models"]["gemma1"]["layers"] == [6, 10, 12, 17]
        assert preset["models"]["gemma2"]["layers"] == [2, 6, 10, 14, 18, 22]
    else:
        assert {m: e["hf"] for m, e in preset["models"].items()} == {
            "pythia70m": "EleutherAI/pythia-70m", "pythia160m": "EleutherAI/pythia-160m"}
        assert [e["layers"] for e in preset["models"].values()] == [list(range(6)), list(range(12))]
    if name == "pythia-paper":
        assert (corpus["n_documents"], corpus["window_chars"], corpus["windows_per_document"]) == (100, 1200, 1)
    if name == "pythia-own-saes":
        assert all("sae" not in entry for entry in preset["models"].values()), "own SAEs are trained"
        assert preset["saes"]["train"]["d_sae"] == 32768 and len(preset["saes"]["seeds"]) == 2


# ---------------------------------------------------------------- running the presets


def dry_run(name: str, root: Path) -> str:
    """`snakemake -n` of a preset on the real ids: offline, with an empty hub cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root / "empty_hub_cache")}
    result = snakemake(fresh_workdir(root / name), [PRESETS / f"{name}.yaml"], env, "-n")
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(environment for Snakemake, what the stand-in hub holds)."""
    root = tmp_path_factory.mktemp("hub")
    written = build_hub_cache(root / "cache")
    # OpenWebText's Parquet file as a login node leaves it in the cache; 160 documents: more than either
    # preset reads, so n_documents must cut the stream.
    write_dataset_repo(root / "cache", OPENWEBTEXT, {PARQUET_FILE: {"text": standin_documents(160)}})
    python_path = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root / "cache"), "PYTHONPATH": python_path,
           "HF_DATASETS_CACHE": str(root / "datasets-cache")}
    return env, written


def run_variants(workdir: Path, env: dict, variants: list, snapshots: Path) -> dict:
    """Run (preset, overrides, targets) in turn in one working directory; copy results/ after each run."""
    runs = {}
    for name, overrides, targets in variants:
        sizes = workdir.parent / f"{name}.sizes.yaml"
        sizes.write_text(yaml.safe_dump(overrides))
        result = snakemake(workdir, [PRESETS / f"{name}.yaml", sizes], env, *targets)
        output = result.stdout + result.stderr
        shutil.copytree(workdir / "results", snapshots / name)
        runs[name] = (snapshots / name, output)
    return runs


LOGIN_TARGET = "resources/corpus/windows.jsonl"


def login_then_compute(workdir: Path, env: dict, variants: list, snapshots: Path) -> dict:
    """The README's cluster recipe: the login node builds the text (the preset's Parquet file, fetched into the
    hub cache), then offline compute nodes run every job with a cache that holds the models and SAEs only."""
    name, overrides, _ = variants[0]
    sizes = workdir.parent / "login.sizes.yaml"
    sizes.write_text(yaml.safe_dump(overrides))
    login = snakemake(workdir, [PRESETS / f"{name}.yaml", sizes], env, LOGIN_TARGET)
    compute_cache = workdir.parent / "compute-node-cache"
    compute_cache.mkdir()
    for repo in Path(env["HF_HUB_CACHE"]).iterdir():
        if not repo.name.startswith("datasets--"):
            (compute_cache / repo.name).symlink_to(repo, target_is_directory=True)
    runs = run_variants(workdir, {**env, "HF_HUB_CACHE": str(compute_cache)}, variants, snapshots)
    return {**runs, "login": (None, login.stdout + login.stderr)}


# The first layers: every run caches them anyway (they carry the alignment), so no other layer is merged.
PYTHIA_CELL = "results/similarity/pythia70m--pythia160m/layer0--layer0.tsv"
PYTHIA_MATCHES = "results/matching/pythia70m--pythia160m/layer0--layer0.tsv"


def pythia_variants() -> list:
    """(preset, overrides, targets), run in turn in one working directory."""
    sizes = {**SIZES, "corpus": {"n_documents": 8}}
    # The own-SAE preset reads 2M tokens; here it reads the paper's text the same way, so the cached activations are reused.
    own_sizes = {**SIZES, "saes": {"seeds": [0], "train": {"d_sae": 48, "k": 4, "batch_size": 256, "epochs": 1}},
                 "corpus": {**load_preset("pythia-paper")["corpus"], "n_documents": 8},
                 "activations": {"dtype": "float32", "shards": 1},
                 "models": {"pythia70m": {"batch_size": 8}, "pythia160m": {"batch_size": 8}}}
    # Shorter targets after the full chain: corrected changes codes and matching; own SAEs: one trained SAE
    # (scoring with the defaults and matching trained SAEs is what tests/test_workflow.py runs).
    return [("pythia-paper", sizes, [PYTHIA_CELL]), ("pythia-corrected", sizes, [PYTHIA_MATCHES]),
            ("pythia-own-saes", own_sizes, ["results/saes/pythia70m/layer0/seed0"])]


def gemma_variants() -> list:
    sizes = {**SIZES, "corpus": {"n_documents": 12}}
    # Layer 6 (an odd folder name) against layer 2 (canonical L0 141 beside 142), and layer 12's norm-scaled SAE.
    targets = ["results/similarity/gemma1--gemma2/layer6--layer2.tsv", "results/saes/gemma1/layer12/pretrained"]
    return [("gemma-paper", sizes, targets), ("gemma-corrected", sizes, ["results/matching/gemma1--gemma2/layer6--layer2.tsv"])]


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """{preset: `snakemake -n` output}: seconds each, side by side."""
    root = tmp_path_factory.mktemp("dry")
    with ThreadPoolExecutor(max_workers=len(NAMES)) as pool:
        return dict(zip(NAMES, pool.map(lambda name: dry_run(name, root), NAMES)))


@pytest.fixture(scope="module")
def chains(hub, tmp_path_factory):
    """Both stand-in chains side by side: their jobs are short and Snakemake idles between them."""
    env, _ = hub
    root = tmp_path_factory.mktemp("runs")

    def chain(family, variants):
        workdir = fresh_workdir(root / family / "run")
        if family == "pythia":
            return login_then_compute(workdir, env, variants(), root / family / "snapshots")
        return run_variants(workdir, env, variants(), root / family / "snapshots")

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {family: pool.submit(chain, family, variants)
                   for family, variants in (("pythia", pythia_variants), ("gemma", gemma_variants))}
        return {family: future.result() for family, future in futures.items()}


@pytest.fixture(scope="module")
def pythia_runs(chains):
    return chains["pythia"]


@pytest.fixture(scope="module")
def gemma_runs(chains):
    return chains["gemma"]


def saved_sae(results: Path, model: str, layer: int, sae: str = "pretrained") -> dict:
    return {name: value.astype(np.float64) for name, value in
            load_file(str(results / "saes" / model / f"layer{layer}" / sae / "sae_weights.safetensors")).items()}


def cached_activations(results: Path, model: str, layer: int) -> np.ndarray:
    with h5py.File(results / "activations" / model / f"layer{layer}.h5", "r") as cache:
        return cache["activations"][:].astype(np.float64)


def stored_codes(results: Path, model: str, layer: int, sae: str = "pretrained") -> tuple[np.ndarray, str]:
    from sae_universality.saes.codes import read_code_rows

    path = results / "codes" / model / f"layer{layer}" / f"{sae}.h5"
    with h5py.File(path, "r") as handle:
        kind, n_positions = str(handle.attrs["kind"]), int(handle.attrs["n_positions"])
    return read_code_rows(path, 0, n_positions).toarray().astype(np.float64), kind


def first_component_correlation(X: np.ndarray, Y: np.ndarray) -> float:
    """|Pearson correlation| of the first principal-component scores of X and Y: SVCCA with one component."""
    def first_scores(M):
        centered = M - M.mean(axis=0)
        u, s, _ = np.linalg.svd(centered, full_matrices=False)
        return u[:, 0] * s[0]
    return abs(float(np.corrcoef(first_scores(X), first_scores(Y))[0, 1]))


def match_outputs(results: Path, pair: str, layer_a: int, layer_b: int):
    """(match table, summary row) of one layer pair."""
    stem = results / "matching" / pair / f"layer{layer_a}--layer{layer_b}"
    return pd.read_csv(f"{stem}.tsv", sep="\t"), pd.read_csv(f"{stem}.summary.tsv", sep="\t").iloc[0]


def cell_outputs(results: Path, pair: str, layer_a: int, layer_b: int):
    """(match table, summary row, scores indexed by metric) of one layer pair."""
    scores = pd.read_csv(results / "similarity" / pair / f"layer{layer_a}--layer{layer_b}.tsv", sep="\t")
    return (*match_outputs(results, pair, layer_a, layer_b), scores.set_index("metric"))


def assert_one_to_one(table: pd.DataFrame, rule: str) -> None:
    """Among the rows that passed the concept filter, each A feature keeps one B: the lowest index or the best correlation."""
    candidates = table[table["passes_non_concept"]]
    assert candidates["feature_a"].duplicated().any(), "the check needs an A feature chosen by several B features"
    for _, group in candidates.groupby("feature_a"):
        expected = group["feature_b"].min() if rule == "first" else group.loc[group["correlation"].idxmax(), "feature_b"]
        assert group.loc[group["passes_one_to_one"], "feature_b"].tolist() == [expected]


# ---------------------------------------------------------------- dry runs on the real ids


def layer_pairs_listed(dry_run_output: str, pair: str) -> set:
    return {(int(a), int(b)) for a, b in re.findall(rf"results/matching/{pair}/layer(\d+)--layer(\d+)\.tsv", dry_run_output)}


def job_counts(dry_run_output: str) -> dict:
    table = dry_run_output[dry_run_output.index("Job stats:"):]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)}


@pytest.mark.parametrize("name", NAMES)
def test_dry_run_lists_every_layer_pair_without_the_hub(dry_runs, name):
    preset, output = load_preset(name), dry_runs[name]
    (a, b, floor), = [(pair["a"], pair["b"], pair.get("floor", False)) for pair in preset["pairs"]]
    assert floor == name.endswith("-corrected"), "the corrected variants run the floor control"
    layers_a, layers_b = preset["models"][a]["layers"], preset["models"][b]["layers"]
    assert layer_pairs_listed(output, f"{a}--{b}") == set(product(layers_a, layers_b))
    # The floor pair: every layer pair of A against the re-randomized copy of B; none without the floor control.
    assert layer_pairs_listed(output, f"{a}--{b}-rerandomized") == (set(product(layers_a, layers_b)) if floor else set())
    counts = job_counts(output)
    n_saes = len(layers_a) + len(layers_b)
    pairs = 2 if floor else 1
    assert counts["match_features"] == counts["score_matches"] == pairs * len(layers_a) * len(layers_b)
    assert counts["prepare_model"] == 2 + floor and counts["build_corpus"] == 1
    if name == "pythia-own-saes":
        assert counts["train_sae"] == 2 * n_saes and "load_pretrained_sae" not in counts
        assert counts["cache_activations"] == 2 * 4  # activations.shards: 4
    else:
        assert counts["load_pretrained_sae"] == n_saes
        # Published SAEs are loaded; only the floor's are trained (one per seed, the schema's default [0]).
        assert counts.get("train_sae", 0) == (len(layers_b) if floor else 0)
    assert "smollm2" not in output and "gemma3" not in output, "the preset replaces config.yaml"


def test_the_atlas_dry_run_lists_every_job_of_four_models_and_six_pairs_without_the_hub(tmp_path):
    """presets/atlas.yaml: each model's work once for all its pairs, the depth grid on the Qwen pair only."""
    preset, output = load_preset("atlas"), dry_run("atlas", tmp_path)
    models = preset["models"]
    assert len(models) == 4 and len(preset["pairs"]) == 6
    assert {frozenset((pair["a"], pair["b"])) for pair in preset["pairs"]} == {
        frozenset(pair) for pair in itertools.combinations(models, 2)}, "every unordered pair of the four"
    counts = job_counts(output)
    layers = {model: entry["layers"] for model, entry in models.items()}
    model_layers = sum(map(len, layers.values()))
    n_layer_pairs = 0
    for pair in preset["pairs"]:
        a, b = pair["a"], pair["b"]
        expected = set(product(pair.get("layers_a", layers[a]), pair.get("layers_b", layers[b])))
        assert layer_pairs_listed(output, f"{a}--{b}") == expected, (a, b)
        n_layer_pairs += len(expected)
    assert len(layers["qwen05"]) >= 6 and len(layers["qwen15"]) >= 6
    assert n_layer_pairs == 36 + 4 + 4
    assert counts["prepare_model"] == 4 and counts["align_positions"] == 6 and counts["build_corpus"] == 1
    assert counts["cache_activations"] == 4 * preset["activations"]["shards"]
    assert counts["train_sae"] == 2 * model_layers and counts["downstream_loss"] == 4
    for rule in ("match_features", "match_controls", "score_matches", "score_context_only"):
        assert counts[rule] == n_layer_pairs, rule
    assert counts["depth_profile"] == 1 and "results/similarity/qwen05--qwen15/depth.png" in output
    assert counts["atlas"] == 1 and counts["similarity_tables"] == 6


# ---------------------------------------------------------------- runs on the stand-in hub


@pytest.mark.system
def test_pythia_paper_loads_eleutherais_saes_from_the_hub_cache(pythia_runs, hub):
    results, _ = pythia_runs["pythia-paper"]
    _, written = hub
    for model, repo in (("pythia70m", "EleutherAI/sae-pythia-70m-32k"), ("pythia160m", "EleutherAI/sae-pythia-160m-32k")):
        loaded, published = saved_sae(results, model, 0), written["saes"][repo][0]
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            np.testing.assert_array_equal(loaded[name], published[name])
    run = results.parent.parent / "run"
    manifest = json.loads((run / "resources/models/pythia160m/manifest.json").read_text())
    assert (manifest["location"], manifest["n_layers"], manifest["architecture"]) == ("EleutherAI/pythia-160m", 12, "gpt_neox")
    assert sorted(p.name for p in (run / "resources/models").iterdir()) == ["pythia160m", "pythia70m"], \
        "config.yaml's models are not added to the preset"


@pytest.mark.system
def test_pythia_paper_reads_the_first_documents_at_300_tokens(pythia_runs):
    from sae_universality.text.corpus import read_windows

    windows = read_windows(pythia_runs["pythia-paper"][0].parent.parent / "run/resources/corpus/windows.jsonl")
    assert [w.doc_index for w in windows] == list(range(8)) and all(w.char_start == 0 for w in windows)
    assert all(1100 <= len(w.text) <= 1200 for w in windows)
    assert windows[7].text.startswith("Document 7.")
    documents = standin_documents(160)
    assert all(documents[w.doc_index].startswith(w.text) for w in windows)


@pytest.mark.system
def test_the_login_node_builds_the_text_and_offline_compute_nodes_run_without_it(pythia_runs):
    """The login node's only job is build_corpus, reading the Parquet file through `datasets`; the compute
    nodes' cache has no dataset at all, so none of their jobs reads the text from the hub."""
    _, login = pythia_runs["login"]
    assert job_counts(login) == {"build_corpus": 1, "total": 1}
    assert f"{OPENWEBTEXT}: {PARQUET_FILE} at revision {PARQUET_REVISION} (commit {PARQUET_COMMIT})" in \
        (pythia_runs["pythia-paper"][0].parent.parent / "run/logs/build_corpus.log").read_text()
    for name in ("pythia-paper", "pythia-corrected", "pythia-own-saes"):
        _, output = pythia_runs[name]
        assert "build_corpus" not in job_counts(output), name


@pytest.mark.system
def test_pythia_paper_correlates_pre_activations_and_keeps_the_first_partner(pythia_runs):
    results, _ = pythia_runs["pythia-paper"]
    sae_a, sae_b = saved_sae(results, "pythia70m", 0), saved_sae(results, "pythia160m", 0)
    x = cached_activations(results, "pythia70m", 0)
    codes, kind = stored_codes(results, "pythia70m", 0)
    assert kind == "pre_activations"
    np.testing.assert_allclose(codes, np.maximum((x - sae_a["b_dec"]) @ sae_a["W_enc"] + sae_a["b_enc"], 0), atol=1e-4)
    table, summary, scores = cell_outputs(results, "pythia70m--pythia160m", 0, 0)
    assert (summary["one_to_one"], bool(summary["junk_filter"])) == ("first", False)
    assert table["passes_non_concept"].all()
    assert_one_to_one(table, "first")
    kept = table[table["kept"]]
    X, Y = sae_a["W_dec"][kept["final_a"].to_numpy()], sae_b["W_dec"][kept["feature_b"].to_numpy()]
    assert scores.loc["svcca", "n_pairs"] == len(kept) >= SIZES["similarity"]["min_pairs"]
    assert scores.loc["svcca", "observed"] == pytest.approx(first_component_correlation(X, Y), abs=1e-6)


@pytest.mark.system
def test_pythia_corrected_uses_the_sparse_codes_and_the_best_partner(pythia_runs):
    results, log = pythia_runs["pythia-corrected"]
    assert "prepare_model" not in log and "load_pretrained_sae" not in log, "the paper run's models and SAEs are reused"
    sae_b = saved_sae(results, "pythia160m", 0)
    codes, kind = stored_codes(results, "pythia160m", 0)
    assert kind == "codes"
    pre = np.maximum((cached_activations(results, "pythia160m", 0) - sae_b["b_dec"]) @ sae_b["W_enc"] + sae_b["b_enc"], 0)
    top = np.argsort(-pre, axis=1)[:, :SPARSIFY_K]
    expected = np.zeros_like(pre)
    np.put_along_axis(expected, top, np.take_along_axis(pre, top, axis=1), axis=1)
    np.testing.assert_allclose(codes, expected, atol=1e-4)
    table, summary = match_outputs(results, "pythia70m--pythia160m", 0, 0)
    assert (summary["one_to_one"], bool(summary["junk_filter"])) == ("highest", True)
    assert_one_to_one(table, "highest")


@pytest.mark.system
def test_pythia_own_saes_trains_them_instead_of_loading(pythia_runs):
    results, log = pythia_runs["pythia-own-saes"]
    assert "train_sae" in log and "load_pretrained_sae" not in log and "cache_activations" not in log
    folder = results / "saes" / "pythia70m" / "layer0"
    cfg = json.loads((folder / "seed0" / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["d_sae"], cfg["k"], cfg["d_in"]) == ("topk", 48, 4, 32)
    curve = pd.read_csv(folder / "seed0.curve.tsv", sep="\t")
    assert curve["fvu"].iloc[-1] < curve["fvu"].iloc[0], "the SAE learned"


@pytest.mark.system
def test_gemma_paper_loads_gemma_res_jb_by_saelens_id(gemma_runs, hub):
    results, _ = gemma_runs["gemma-paper"]
    _, written = hub
    published = written["saes"]["jbloom/Gemma-2b-Residual-Stream-SAEs"]
    assert GEMMA_RES_JB_FOLDERS[6].endswith("_anthropic_fast_lr")
    loaded = saved_sae(results, "gemma1", 6)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        np.testing.assert_array_equal(loaded[name], published[6][name])
    x = cached_activations(results, "gemma1", 6)
    codes, kind = stored_codes(results, "gemma1", 6)
    assert kind == "codes"  # the paper's Gemma code correlated sae.encode: ReLU codes
    np.testing.assert_allclose(codes, np.maximum((x - loaded["b_dec"]) @ loaded["W_enc"] + loaded["b_enc"], 0), atol=1e-4)


@pytest.mark.system
def test_gemma_paper_folds_layer_12s_norm_scaling_factor(gemma_runs, hub):
    """Layer 12 was trained on inputs scaled by s: the saved SAE reads raw activations x and returns them unscaled."""
    results, _ = gemma_runs["gemma-paper"]
    _, written = hub
    s = GEMMA_RES_JB_NORMALIZED[12]
    raw = {k: v.astype(np.float64) for k, v in written["saes"]["jbloom/Gemma-2b-Residual-Stream-SAEs"][12].items()}
    folded = saved_sae(results, "gemma1", 12)
    x = cached_activations(results, "gemma1", 12)
    codes_of_scaled_input = np.maximum((x * s - raw["b_dec"]) @ raw["W_enc"] + raw["b_enc"], 0)
    codes = np.maximum((x - folded["b_dec"]) @ folded["W_enc"] + folded["b_enc"], 0)
    np.testing.assert_allclose(codes, codes_of_scaled_input, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(codes @ folded["W_dec"] + folded["b_dec"],
                               (codes_of_scaled_input @ raw["W_dec"] + raw["b_dec"]) / s, rtol=1e-4, atol=1e-5)


@pytest.mark.system
def test_gemma_paper_loads_gemma_scopes_canonical_saes(gemma_runs, hub):
    results, _ = gemma_runs["gemma-paper"]
    _, written = hub
    canonical = written["saes"]["google/gemma-scope-2b-pt-res"][(2, GEMMA_SCOPE_CANONICAL[2])]
    loaded = saved_sae(results, "gemma2", 2)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        np.testing.assert_array_equal(loaded[name], canonical[name])
    c = {k: v.astype(np.float64) for k, v in canonical.items()}
    pre = cached_activations(results, "gemma2", 2) @ c["W_enc"] + c["b_enc"]  # Gemma Scope does not subtract b_dec
    codes, kind = stored_codes(results, "gemma2", 2)
    assert kind == "codes"
    np.testing.assert_allclose(codes, np.where(pre > c["threshold"], pre, 0), atol=1e-4)


@pytest.mark.system
def test_gemma_variants_carry_their_settings_to_matching_and_scores(gemma_runs):
    for name, rule in (("gemma-paper", "first"), ("gemma-corrected", "highest")):
        table, summary = match_outputs(gemma_runs[name][0], "gemma1--gemma2", 6, 2)
        assert (summary["one_to_one"], bool(summary["junk_filter"])) == (rule, rule == "highest")
        assert_one_to_one(table, rule)
    results, log = gemma_runs["gemma-paper"]
    table, _, scores = cell_outputs(results, "gemma1--gemma2", 6, 2)
    kept = table[table["kept"]]
    X = saved_sae(results, "gemma1", 6)["W_dec"][kept["final_a"].to_numpy()]
    Y = saved_sae(results, "gemma2", 2)["W_dec"][kept["feature_b"].to_numpy()]
    assert scores.loc["svcca", "n_pairs"] == len(kept) >= SIZES["similarity"]["min_pairs"]
    assert scores.loc["svcca", "observed"] == pytest.approx(first_component_correlation(X, Y), abs=1e-6)
    assert "encode_features" not in gemma_runs["gemma-corrected"][1], "Gemma codes are the same in both variants"
    run = gemma_runs["gemma-paper"][0].parent.parent / "run"
    assert sorted(p.name for p in (run / "resources/models").iterdir()) == ["gemma1", "gemma2"]


# ---------------------------------------------------------------- library pieces the presets rely on


def test_canonical_gemma_scope_pick_is_saelens_canonical_release(tmp_path):
    from sae_universality.saes.formats import pick_canonical_gemma_scope

    for layer, l0s in GEMMA_SCOPE_L0S.items():
        for l0 in l0s:
            (tmp_path / f"layer_{layer}" / "width_16k" / f"average_l0_{l0}").mkdir(parents=True)
        picked = pick_canonical_gemma_scope(f"layer_{layer}/width_16k/canonical", path=tmp_path)
        assert picked == f"layer_{layer}/width_16k/average_l0_{GEMMA_SCOPE_CANONICAL[layer]}"


@pytest.mark.parametrize("normalize", [True, "expected_average_only_in"])
def test_norm_scaled_saelens_sae_is_folded_to_read_raw_activations(tmp_path, normalize):
    import json

    from safetensors.numpy import save_file

    from sae_universality.saes.formats import load_sae

    rng = np.random.default_rng(3)
    d_in, d_sae, s = 6, 10, 0.25
    w = {"W_enc": rng.normal(size=(d_in, d_sae)), "b_enc": rng.normal(size=d_sae) * 0.1,
         "W_dec": rng.normal(size=(d_sae, d_in)), "b_dec": rng.normal(size=d_in)}
    folder = tmp_path / "release" / "my_norm_scaled_sae"
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps({"d_in": d_in, "d_sae": d_sae, "hook_point": "blocks.1.hook_resid_post",
                                                 "normalize_activations": normalize}))
    save_file({k: v.astype(np.float32) for k, v in w.items()}, str(folder / "sae_weights.safetensors"))
    x = rng.normal(size=(5, d_in)) * 4
    sae = load_sae("saelens", path=tmp_path / "release", id=folder.name, norm_scaling_factor=s)
    with torch.no_grad():
        codes = sae.encode(torch.from_numpy(x).float()).double().numpy()
        output = sae.decode(torch.from_numpy(codes).float()).double().numpy()
    expected = np.maximum((x * s - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 0)  # what the SAE computes on scaled inputs
    np.testing.assert_allclose(codes, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(output, (expected @ w["W_dec"] + w["b_dec"]) / s, rtol=1e-4, atol=1e-5)


def test_gemma_res_jb_folders_and_factor_come_from_the_saelens_release(tmp_path):
    import json

    from safetensors.numpy import save_file

    from sae_universality.saes.formats import load_sae, saelens_release_folder

    repo = "jbloom/Gemma-2b-Residual-Stream-SAEs"
    assert {layer: saelens_release_folder(f"blocks.{layer}.hook_resid_post", repo=repo) for layer in GEMMA_RES_JB_FOLDERS} == GEMMA_RES_JB_FOLDERS
    assert saelens_release_folder("layers.3", repo="EleutherAI/sae-pythia-70m-32k") == "layers.3"
    # A local copy of the release: the sae_id finds its folder, and layer 12 gets its factor by folder name.
    folder = tmp_path / GEMMA_RES_JB_FOLDERS[12]
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps({"d_in": 4, "d_sae": 3, "normalize_activations": True}))
    weights = {"W_enc": np.eye(4, 3), "b_enc": np.zeros(3), "W_dec": np.eye(3, 4), "b_dec": np.ones(4)}
    save_file({k: v.astype(np.float32) for k, v in weights.items()}, str(folder / "sae_weights.safetensors"))
    sae = load_sae("saelens", path=tmp_path, id="blocks.12.hook_resid_post")
    np.testing.assert_allclose(sae.W_enc.detach().numpy(), np.eye(4, 3) * GEMMA_RES_JB_NORMALIZED[12], rtol=1e-6)
    np.testing.assert_allclose(sae.b_dec.detach().numpy(), np.ones(4) / GEMMA_RES_JB_NORMALIZED[12], rtol=1e-6)


@pytest.fixture
def openwebtext_cache(tmp_path, monkeypatch):
    """OpenWebText's Parquet conversion as the hub cache holds it after a login node fetched it; offline."""
    import huggingface_hub.constants

    documents = [f" document {i} " for i in range(300)]
    write_dataset_repo(tmp_path / "hub", OPENWEBTEXT, {PARQUET_FILE: {"text": documents, "id": list(range(300))}})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    return documents


def test_the_presets_read_openwebtexts_parquet_from_the_hugging_face_cache(openwebtext_cache, capfd):
    from sae_universality.text.corpus import load_documents

    corpus = load_preset("pythia-paper")["corpus"]
    assert corpus["hf_dataset"]["revision"] == PARQUET_REVISION and corpus["hf_dataset"]["data_files"] == [PARQUET_FILE]
    assert load_documents(corpus) == [f"document {i}" for i in range(100)]
    # The log names the commit the branch pointed at: which 100 documents these were.
    assert f"commit {PARQUET_COMMIT}" in capfd.readouterr().err
    # Every preset that reads OpenWebText reads it the same way.
    for name in NAMES:
        assert load_preset(name)["corpus"]["hf_dataset"] == corpus["hf_dataset"], name


@pytest.mark.parametrize("change, message", [
    ({"text_field": "body"}, r"has no column 'body' \(columns: text, id\); set corpus.hf_dataset.text_field"),
    ({"data_files": ["plain_text/partial-train/0001.parquet"]},
     r"0001.parquet is not in the Hugging Face cache and HF_HUB_OFFLINE=1; fetch the text once"),
    ({"revision": "main"}, r"is not in the Hugging Face cache and HF_HUB_OFFLINE=1"),
    ({"name": "nobody/nothing"}, r"'nobody/nothing' \(revision refs/convert/parquet\): .* not in the Hugging Face cache"),
    ({"data_files": []}, r"streaming needs the hub and HF_HUB_OFFLINE=1; name the dataset's Parquet files"),
])
def test_each_failure_to_read_the_hub_text_is_one_line_naming_the_fix(openwebtext_cache, change, message):
    from sae_universality.text.corpus import load_documents
    from sae_universality.errors import UserError

    corpus = load_preset("pythia-paper")["corpus"]
    corpus = {**corpus, "hf_dataset": {**corpus["hf_dataset"], **change}}
    with pytest.raises(UserError, match=message) as error:
        load_documents(corpus)
    assert "\n" not in str(error.value)


def test_a_dataset_that_ships_only_a_loading_script_gets_the_parquet_advice(tmp_path, monkeypatch):
    """datasets >= 4.0 refuses loading scripts: OpenWebText's main branch as a user of `datasets` 5 meets it."""
    from sae_universality.text.corpus import load_documents
    from sae_universality.errors import UserError

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    repository = tmp_path / "openwebtext"
    repository.mkdir()
    (repository / "openwebtext.py").write_text("import datasets\n\nclass Openwebtext(datasets.GeneratorBasedBuilder):\n    pass\n")
    corpus = {**load_preset("pythia-paper")["corpus"]}
    corpus["hf_dataset"] = {**corpus["hf_dataset"], "name": str(repository), "revision": None, "data_files": []}
    with pytest.raises(UserError, match=r"ships a loading script \(openwebtext.py\), which datasets >= 4.0 no longer "
                                        r"runs; read its Parquet files instead: corpus.hf_dataset.revision: "
                                        r"refs/convert/parquet"):
        load_documents(corpus)


def test_local_parquet_files_are_a_corpus(tmp_path, monkeypatch):
    from sae_universality.text.corpus import load_documents
    from sae_universality.errors import UserError

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    first = write_parquet(tmp_path / "a.parquet", {"text": ["one", " two ", ""], "url": ["u1", "u2", "u3"]})
    second = write_parquet(tmp_path / "b.parquet", {"text": ["three"]})
    text_file = tmp_path / "c.txt"
    text_file.write_text("four")
    corpus = {"source": "files", "paths": [str(first), str(second), str(text_file)], "n_documents": None}
    assert load_documents(corpus) == ["one", "two", "three", "four"]
    wrong = write_parquet(tmp_path / "wrong.parquet", {"body": ["x"]})
    with pytest.raises(UserError, match=r"wrong.parquet has no column 'text' \(columns: body\)"):
        load_documents({**corpus, "paths": [str(wrong)]})


def test_a_reader_stopped_early_lets_the_process_exit_cleanly(tmp_path):
    """A streaming `datasets` reader stopped after a few rows of a many-row-group file left Arrow's scanner
    threads running, and in about two exits of three they aborted the interpreter (SIGABRT, "terminate called
    without an active exception"; datasets#7566): a preset's build_corpus job failed that way in CI. Five exits
    in a row: the old reader passes all five about once in two hundred runs."""
    path = write_parquet(tmp_path / "many.parquet", {"text": [f"document {i}" for i in range(5000)]})
    program = ("from itertools import islice\n"
               "from sae_universality.text.corpus import read_parquet_documents\n"
               f"print(list(islice(read_parquet_documents([{str(path)!r}], 'text', 'here'), 3)))\n")
    for _ in range(5):
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stdout.strip()) == (0, "['document 0', 'document 1', 'document 2']"), \
            result.stderr[-2000:]


class _StandInHub(http.server.BaseHTTPRequestHandler):
    """The hub's answers to a file request, as huggingface_hub reads them (status and X-Error-Code)."""

    ANSWERS = {"gated/corpus": (401, "GatedRepo"), "nobody/nothing": (401, "RepoNotFound")}

    def do_HEAD(self):
        repo = "/".join(self.path.split("/")[2:4])  # /datasets/<owner>/<name>/resolve/<revision>/<file>
        status, code = self.ANSWERS.get(repo, (404, "RevisionNotFound" if "/resolve/nope/" in self.path
                                               else "EntryNotFound"))
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


def test_answers_of_a_reachable_hub_are_one_line_each(tmp_path):
    """Gated, unknown, no such revision, no such file: real huggingface_hub HTTP calls to a local stand-in hub."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StandInHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cases = {"gated": {"name": "gated/corpus"}, "unknown": {"name": "nobody/nothing"},
             "revision": {"name": "some/corpus", "revision": "nope"}, "file": {"name": "some/corpus"}}
    script = f"""
import json
from sae_universality.text.corpus import load_documents
from sae_universality.errors import UserError
messages = {{}}
for case, change in {cases!r}.items():
    spec = {{"name": None, "revision": "refs/convert/parquet", "data_files": ["plain_text/train/0000.parquet"],
             "text_field": "text", **change}}
    try:
        load_documents({{"source": "hf-dataset", "hf_dataset": spec, "n_documents": 5}})
    except UserError as error:
        messages[case] = str(error)
print(json.dumps(messages))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_TOKEN": "", "PYTHONPATH": str(REPO / "src")}
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    finally:
        server.shutdown()
    messages = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(messages) == set(cases), result.stderr[-2000:]
    assert messages["gated"].startswith("corpus.hf_dataset 'gated/corpus' (revision refs/convert/parquet) is gated: "
                                        "accept its terms")
    assert "hf auth login" in messages["gated"]
    assert messages["unknown"].startswith("corpus.hf_dataset 'nobody/nothing': no such dataset on the hub")
    assert messages["revision"] == ("corpus.hf_dataset 'some/corpus' (revision nope): no such revision; set "
                                    "corpus.hf_dataset.revision to a branch, tag or commit of the dataset "
                                    "(refs/convert/parquet: the hub's Parquet conversion)")
    assert messages["file"].startswith("corpus.hf_dataset 'some/corpus' (revision refs/convert/parquet) has no file "
                                       "'plain_text/train/0000.parquet'")
    assert all("\n" not in message for message in messages.values())
