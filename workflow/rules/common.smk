# Configuration check, wildcard constraints, and every target list and input function.
import functools
import sys

from sae_universality.config import check_config, floor_controls, pair_layers, sae_names
from sae_universality.errors import UserError
from sae_universality.models.sources import check_model_entries, source_entry
from sae_universality.saes.stage import sae_settings

try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"), check_models=check_model_entries)
except UserError as error:
    # One line naming the key and the fix, before any job runs; no traceback.
    sys.exit(f"sae-universality: {error}")

MODELS = config["models"]
# Real pairs and their floor controls alike (a pair with `floor: true` adds one: see config.py).
PAIRS = [(pair["a"], pair["b"]) for pair in config["pairs"]]
FLOORS = floor_controls(config)
# The layers each pair compares: all of each model's, unless the pair names a subset (layers_a, layers_b).
PAIR_LAYERS = pair_layers(config)
N_SHARDS = config["activations"]["shards"]


wildcard_constraints:
    model="|".join(MODELS),
    model_a="|".join(MODELS),
    model_b="|".join(MODELS),
    layer=r"\d+",
    shard=r"\d+",
    sae=r"seed\d+|pretrained|untrained",
    sae_a=r"seed\d+|pretrained",
    sae_b=r"seed\d+|pretrained",
    layer_a=r"\d+",
    layer_b=r"\d+",


# Corpus keys added after experiments were first run, with the value that means "unset".
LATER_CORPUS_KEYS = {"hf_dataset": {"revision": None, "data_files": []}}


def corpus_settings(wildcards):
    # Snakemake reruns a job whose params changed. Keys added in a later version are left out while unset,
    # so that upgrading does not rebuild the text (and everything after it) of experiments that do not use them.
    corpus = dict(config["corpus"])
    for section, unset in LATER_CORPUS_KEYS.items():
        corpus[section] = {key: value for key, value in corpus[section].items()
                           if not (key in unset and value == unset[key])}
    return corpus


def model_source_entry(wildcards):
    # Only where the model comes from (the source keys of models.sources.SOURCES): other settings must not
    # re-trigger the (slow) preparation.
    return source_entry(MODELS[wildcards.model])


def source_model_manifest(wildcards):
    # A re-randomized model (the floor control) is made from its source's prepared folder.
    source = MODELS[wildcards.model].get("rerandomized")
    return {"source_manifest": f"resources/models/{source['from']}/manifest.json"} if source else {}


def model_layers(wildcards):
    return sorted(MODELS[wildcards.model]["layers"])


def model_batch_size(wildcards):
    return MODELS[wildcards.model]["batch_size"]


def shard_dirs(wildcards):
    return expand("results/activations/{model}/shards/{shard}", model=wildcards.model, shard=range(N_SHARDS))


def first_layer_cache(model):
    # Every layer of a model has the same positions; the shallowest is ready first.
    return f"results/activations/{model}/layer{min(MODELS[model]['layers'])}.h5"


def pair_caches(wildcards):
    return {"cache_a": first_layer_cache(wildcards.model_a), "cache_b": first_layer_cache(wildcards.model_b)}


def activation_targets():
    return [f"results/activations/{model}/layer{layer}.h5" for model, entry in MODELS.items() for layer in entry["layers"]]


def alignment_targets():
    return [f"results/alignment/{a}--{b}.tsv" for a, b in PAIRS]


def final_targets():
    return (activation_targets() + alignment_targets() + ["results/saes/quality.tsv"] + code_targets()
            + matching_targets() + card_targets() + similarity_targets() + causal_targets() + ["results/verdict.md"])


# ---------------------------------------------------------------- causal check


def causal_pairs():
    """The real model pairs (floor controls excepted) whose kept pairs get the causal check."""
    if not config["causal"]["enabled"]:
        return []
    floors = set(FLOORS.values())
    return [pair for pair in PAIRS if pair not in floors]


def causal_settings(wildcards):
    return config["causal"]


def causal_targets():
    return [f"results/causal/{a}--{b}/function.tsv" for a, b in causal_pairs()]


def effect_inputs(wildcards):
    # Every layer of the model: its cache (the sampled rows and the live pass checked against it), and every
    # SAE's folder (decoder) and codes.
    model = wildcards.model
    inputs = {"manifest": f"resources/models/{model}/manifest.json", "windows": "resources/corpus/windows.jsonl"}
    for layer in model_layers(wildcards):
        inputs[f"cache{layer}"] = f"results/activations/{model}/layer{layer}.h5"
        for sae in saes_of(model):
            inputs[f"sae{layer}_{sae}"] = f"results/saes/{model}/layer{layer}/{sae}"
            inputs[f"codes{layer}_{sae}"] = f"results/codes/{model}/layer{layer}/{sae}.h5"
    return inputs


def function_saes(wildcards):
    # Per side: the primary SAE, then the second seed's (the ceiling) where the model has one.
    return {side: saes_of(model)[:2] for side, model in (("a", wildcards.model_a), ("b", wildcards.model_b))}


def function_inputs(wildcards):
    # What matching read, the match table, both models' effects and exact checks, output tokens, and each
    # side's seed-to-seed match table (its ceiling) where it has two seeds.
    a, b = wildcards.model_a, wildcards.model_b
    inputs = {**matching_inputs(wildcards),
              "matches": f"results/matching/{a}--{b}/layer{wildcards.layer_a}--layer{wildcards.layer_b}.tsv"}
    for side, model, layer in (("a", a, wildcards.layer_a), ("b", b, wildcards.layer_b)):
        inputs[f"effects_{side}"] = f"results/causal/{model}/effects.h5"
        inputs[f"agreement_{side}"] = f"results/causal/{model}/agreement.tsv"
        inputs[f"tokens_{side}"] = f"results/saes/{model}/layer{layer}/{primary_sae(model)}.output_tokens.npz"
        if has_ceiling(model):
            first, second = saes_of(model)[:2]
            inputs[f"ceiling_{side}"] = f"results/similarity/ceiling/{model}/layer{layer}/{first}--{second}.matches.tsv"
    return inputs


def pair_function_summaries(wildcards):
    return [f"results/causal/{wildcards.model_a}--{wildcards.model_b}/layer{la}--layer{lb}.tsv"
            for la, lb in layer_pairs(wildcards.model_a, wildcards.model_b)]


# ---------------------------------------------------------------- cards


def card_pairs():
    """The real model pairs (floor controls excepted): their layer pairs get feature cards."""
    floors = set(FLOORS.values())
    return [pair for pair in PAIRS if pair not in floors]


def card_targets():
    return [f"results/cards/{a}--{b}/layer{la}--layer{lb}{suffix}" for a, b in card_pairs()
            for la, lb in layer_pairs(a, b) for suffix in ("", ".html")]


def named_cards(wildcards):
    # The (feature_a, feature_b) pairs a user named for this layer pair (config: cards.pairs).
    return [[named["feature_a"], named["feature_b"]] for named in config["cards"]["pairs"]
            if (named["a"], named["b"], str(named["layer_a"]), str(named["layer_b"]))
            == (wildcards.model_a, wildcards.model_b, wildcards.layer_a, wildcards.layer_b)]


def map_settings(wildcards):
    # Only the map's own keys: naming a card does not redraw every layout.
    return {key: value for key, value in config["cards"].items() if key.startswith("map_")}


def card_inputs(wildcards):
    # What the matching read, the match table, each side's output tokens and map layout (its primary SAE's), and
    # the kept pairs' context-only correlations where the controls run.
    a, b = wildcards.model_a, wildcards.model_b
    pair = f"{a}--{b}/layer{wildcards.layer_a}--layer{wildcards.layer_b}"
    inputs = {**matching_inputs(wildcards), "matches": f"results/matching/{pair}.tsv"}
    for side, model, layer in (("a", a, wildcards.layer_a), ("b", b, wildcards.layer_b)):
        inputs[f"tokens_{side}"] = f"results/saes/{model}/layer{layer}/{primary_sae(model)}.output_tokens.npz"
        inputs[f"layout_{side}"] = f"results/saes/{model}/layer{layer}/{primary_sae(model)}.layout.tsv"
    if (a, b) in control_pairs():
        inputs["control_pairs"] = f"results/matching/{pair}.controls_pairs.tsv"
    if (a, b) in causal_pairs():
        inputs["function_pairs"] = f"results/causal/{pair}.pairs.tsv"
    return inputs


# ---------------------------------------------------------------- SAEs


def saes_of(model):
    return sae_names(config, model)


def primary_sae(model):
    # The SAE every comparison uses; the others are ceiling controls.
    return saes_of(model)[0]


def train_settings(wildcards):
    return sae_settings(config["saes"]["train"], MODELS[wildcards.model])


def pretrained_spec(wildcards):
    return MODELS[wildcards.model]["sae"]["pretrained"]


def sae_targets():
    return [
        f"results/saes/{model}/layer{layer}/{sae}"
        for model, entry in MODELS.items()
        for layer in entry["layers"]
        for sae in saes_of(model)
    ]


def saes_of_layer(wildcards):
    # Every SAE of one (model, layer) is evaluated in one job: the held-out positions are read once.
    return [f"results/saes/{wildcards.model}/layer{wildcards.layer}/{sae}" for sae in saes_of(wildcards.model)]


def saes_of_model(wildcards):
    # The downstream loss of every SAE of a model in one job: its clean pass serves every layer.
    model = wildcards.model
    return [f"results/saes/{model}/layer{layer}/{sae}" for layer in sorted(MODELS[model]["layers"]) for sae in saes_of(model)]


def quality_rows(wildcards):
    return [f"results/saes/{model}/layer{layer}/quality.tsv" for model, entry in MODELS.items() for layer in entry["layers"]]


def training_curves(wildcards):
    return [f"{target}.curve.tsv" for target in sae_targets() if not target.endswith("pretrained")]


def code_targets():
    return [f"results/codes/{target.removeprefix('results/saes/')}.h5" for target in sae_targets()]


# ---------------------------------------------------------------- matching


def layer_pairs(model_a, model_b):
    layers_a, layers_b = PAIR_LAYERS[(model_a, model_b)]
    return [(la, lb) for la in layers_a for lb in layers_b]


def matching_inputs(wildcards):
    a, b = wildcards.model_a, wildcards.model_b
    return {
        "codes_a": f"results/codes/{a}/layer{wildcards.layer_a}/{primary_sae(a)}.h5",
        "codes_b": f"results/codes/{b}/layer{wildcards.layer_b}/{primary_sae(b)}.h5",
        "alignment": f"results/alignment/{a}--{b}.h5",
        "cache_a": f"results/activations/{a}/layer{wildcards.layer_a}.h5",
        "cache_b": f"results/activations/{b}/layer{wildcards.layer_b}.h5",
        "manifest_a": f"resources/models/{a}/manifest.json",
        "manifest_b": f"resources/models/{b}/manifest.json",
    }


def matching_settings(wildcards):
    # Plain data, as checked; the job reads it as settings.MatchSettings.
    return config["matching"]


def matching_labels(wildcards):
    return {"model_a": wildcards.model_a, "model_b": wildcards.model_b,
            "layer_a": int(wildcards.layer_a), "layer_b": int(wildcards.layer_b)}


def pair_matching_files(wildcards, suffix, folder=""):
    return [
        f"results/matching/{wildcards.model_a}--{wildcards.model_b}/{folder}layer{la}--layer{lb}{suffix}"
        for la, lb in layer_pairs(wildcards.model_a, wildcards.model_b)
    ]


def pair_summaries(wildcards):
    return pair_matching_files(wildcards, ".summary.tsv")


def pair_examples(wildcards):
    return pair_matching_files(wildcards, ".examples.json")


def matching_targets():
    return [f"results/matching/{a}--{b}/summary.tsv" for a, b in PAIRS] + [
        f"results/matching/{a}--{b}/pairs.html" for a, b in PAIRS
    ]


def control_settings(wildcards):
    return config["controls"]


def control_inputs(wildcards):
    # The controls read what matching read, and the full match table whose kept pairs they follow.
    return {**matching_inputs(wildcards),
            "matches": f"results/matching/{wildcards.model_a}--{wildcards.model_b}/"
                       f"layer{wildcards.layer_a}--layer{wildcards.layer_b}.tsv"}


def control_pairs():
    """The real model pairs (not floor controls) whose layer pairs get the lexical and document controls."""
    if not config["controls"]["enabled"]:
        return []
    floors = set(FLOORS.values())
    return [pair for pair in PAIRS if pair not in floors]


def untrained_matching_inputs(wildcards):
    # The untrained dictionaries' codes at the positions the trained SAEs' are matched on.
    a, b = wildcards.model_a, wildcards.model_b
    return {**matching_inputs(wildcards),
            "codes_a": f"results/codes/{a}/layer{wildcards.layer_a}/untrained.h5",
            "codes_b": f"results/codes/{b}/layer{wildcards.layer_b}/untrained.h5"}


def untrained_score_inputs(wildcards):
    a, b = wildcards.model_a, wildcards.model_b
    return {"matches": f"results/matching/{a}--{b}/untrained/layer{wildcards.layer_a}--layer{wildcards.layer_b}.tsv",
            "sae_a": f"results/saes/{a}/layer{wildcards.layer_a}/untrained",
            "sae_b": f"results/saes/{b}/layer{wildcards.layer_b}/untrained"}


def pair_untrained_summaries(wildcards):
    return pair_matching_files(wildcards, ".summary.tsv", folder="untrained/")


def pair_untrained_scores(wildcards):
    return pair_similarity_files(wildcards, "", folder="untrained/")


def lexical_matching_inputs(wildcards):
    # The lexical floor's codes (each model's activations replaced by their per-token means, encoded by its SAE)
    # at the positions the real codes are matched on.
    a, b = wildcards.model_a, wildcards.model_b
    return {**matching_inputs(wildcards),
            "codes_a": f"results/codes/{a}/layer{wildcards.layer_a}/lexical.h5",
            "codes_b": f"results/codes/{b}/layer{wildcards.layer_b}/lexical.h5"}


def lexical_score_inputs(wildcards):
    # The same SAEs as the full comparison: only which features are paired differs.
    full = match_outputs_of_pair(wildcards)
    return {"matches": f"results/matching/{wildcards.model_a}--{wildcards.model_b}/lexical/"
                       f"layer{wildcards.layer_a}--layer{wildcards.layer_b}.tsv",
            "sae_a": full["sae_a"], "sae_b": full["sae_b"],
            # Scored on as many pairs as the full result keeps: like for like, at the same cost.
            "full_matches": full["matches"]}


def pair_lexical_summaries(wildcards):
    return pair_matching_files(wildcards, ".summary.tsv", folder="lexical/")


def pair_lexical_scores(wildcards):
    return pair_similarity_files(wildcards, "", folder="lexical/")


def residual_inputs(wildcards):
    # The raw residual streams at the aligned positions, and their per-token means (the lexical floor's caches).
    a, b = wildcards.model_a, wildcards.model_b
    return {"alignment": f"results/alignment/{a}--{b}.h5",
            "cache_a": f"results/activations/{a}/layer{wildcards.layer_a}.h5",
            "cache_b": f"results/activations/{b}/layer{wildcards.layer_b}.h5",
            "lexical_a": f"results/activations/{a}/layer{wildcards.layer_a}.lexical.h5",
            "lexical_b": f"results/activations/{b}/layer{wildcards.layer_b}.lexical.h5"}


def pair_residual_files(wildcards):
    return pair_similarity_files(wildcards, "", folder="residual/")


def residual_pairs():
    """The pairs whose raw residual streams are compared (controls.residual_streams)."""
    return control_pairs() if config["controls"]["residual_streams"] else []


def pair_control_files(wildcards):
    return pair_matching_files(wildcards, ".controls.tsv")


# ---------------------------------------------------------------- similarity


def similarity_settings(wildcards):
    return config["similarity"]


@functools.cache
def configured_categories():
    # Read once per Snakemake process: the file is the same for every matching job.
    from sae_universality.matching.categories import load_categories

    semantic = config["semantic"]
    if not semantic["enabled"]:
        return {}
    return load_categories(semantic["categories_file"], semantic["extra_categories"])


def semantic_categories(wildcards):
    return configured_categories()


def match_outputs_of_pair(wildcards):
    a, b = wildcards.model_a, wildcards.model_b
    return {
        "matches": f"results/matching/{a}--{b}/layer{wildcards.layer_a}--layer{wildcards.layer_b}.tsv",
        "semantic": f"results/matching/{a}--{b}/layer{wildcards.layer_a}--layer{wildcards.layer_b}.semantic.tsv",
        "sae_a": f"results/saes/{a}/layer{wildcards.layer_a}/{primary_sae(a)}",
        "sae_b": f"results/saes/{b}/layer{wildcards.layer_b}/{primary_sae(b)}",
    }


def has_ceiling(model):
    return len(saes_of(model)) > 1


def ceiling_seed_pairs(model):
    # The ceiling is measured on every pair of the model's SAEs (seeds), each pair once.
    names = saes_of(model)
    return [(first, second) for index, first in enumerate(names) for second in names[index + 1:]]


def ceiling_seed_pair_files(wildcards, suffix):
    prefix = f"results/similarity/ceiling/{wildcards.model}/layer{wildcards.layer}"
    return [f"{prefix}/{first}--{second}{suffix}" for first, second in ceiling_seed_pairs(wildcards.model)]


def ceiling_seed_pair_scores(wildcards):
    return ceiling_seed_pair_files(wildcards, ".tsv")


def ceiling_seed_pair_summaries(wildcards):
    return ceiling_seed_pair_files(wildcards, ".summary.tsv")


def ceiling_match_inputs(wildcards):
    prefix = f"results/codes/{wildcards.model}/layer{wildcards.layer}"
    return {
        "codes_a": f"{prefix}/{wildcards.sae_a}.h5",
        "codes_b": f"{prefix}/{wildcards.sae_b}.h5",
        "cache": f"results/activations/{wildcards.model}/layer{wildcards.layer}.h5",
        "manifest": f"resources/models/{wildcards.model}/manifest.json",
    }


def ceiling_score_inputs(wildcards):
    prefix = f"results/saes/{wildcards.model}/layer{wildcards.layer}"
    return {
        "matches": f"results/similarity/ceiling/{wildcards.model}/layer{wildcards.layer}/"
                   f"{wildcards.sae_a}--{wildcards.sae_b}.matches.tsv",
        "sae_a": f"{prefix}/{wildcards.sae_a}",
        "sae_b": f"{prefix}/{wildcards.sae_b}",
    }


def ceiling_control_inputs(wildcards):
    # The ceiling's context-only codes follow the ceiling's own match table, as a pair's controls follow theirs.
    return {**ceiling_match_inputs(wildcards),
            "matches": f"results/similarity/ceiling/{wildcards.model}/layer{wildcards.layer}/"
                       f"{wildcards.sae_a}--{wildcards.sae_b}.matches.tsv"}


def ceiling_context_only_score_inputs(wildcards):
    return {**ceiling_score_inputs(wildcards),
            "matches": f"results/similarity/ceiling/{wildcards.model}/layer{wildcards.layer}/"
                       f"{wildcards.sae_a}--{wildcards.sae_b}.context_only.matches.tsv"}


def ceiling_seed_pair_context_only_scores(wildcards):
    return ceiling_seed_pair_files(wildcards, ".context_only.tsv")


def pair_context_only_ceiling_files(wildcards):
    # Every layer's context-only ceiling of the pair's two models (where they have two seeds).
    return [path.removesuffix(".tsv") + ".context_only.tsv" for path in pair_ceiling_files(wildcards)]


def ceiling_labels(wildcards):
    return {"model": wildcards.model, "layer": int(wildcards.layer), "sae_a": wildcards.sae_a, "sae_b": wildcards.sae_b}


def ceiling_pair_labels(wildcards):
    # The ceiling's match table is a layer pair's, of one model and layer with itself.
    return {"model_a": wildcards.model, "model_b": wildcards.model,
            "layer_a": int(wildcards.layer), "layer_b": int(wildcards.layer)}


def pair_score_files(wildcards):
    return pair_similarity_files(wildcards, "")


def pair_semantic_files(wildcards):
    return pair_similarity_files(wildcards, ".semantic")


def pair_similarity_files(wildcards, kind, folder=""):
    return [
        f"results/similarity/{wildcards.model_a}--{wildcards.model_b}/{folder}layer{la}--layer{lb}{kind}.tsv"
        for la, lb in layer_pairs(wildcards.model_a, wildcards.model_b)
    ]


def pair_context_only_files(wildcards):
    return pair_similarity_files(wildcards, ".context_only")


def context_only_score_inputs(wildcards):
    full = match_outputs_of_pair(wildcards)
    return {"sae_a": full["sae_a"], "sae_b": full["sae_b"],
            "matches": f"results/matching/{wildcards.model_a}--{wildcards.model_b}/"
                       f"layer{wildcards.layer_a}--layer{wildcards.layer_b}.context_only.tsv"}


def pair_ceiling_files(wildcards):
    files = []
    layers = PAIR_LAYERS[(wildcards.model_a, wildcards.model_b)]
    for model, compared in zip((wildcards.model_a, wildcards.model_b), layers):
        if has_ceiling(model):
            files += [f"results/similarity/ceiling/{model}/layer{layer}.tsv" for layer in compared]
    return sorted(set(files))


def similarity_targets():
    targets = []
    for a, b in PAIRS:
        targets += [f"results/similarity/{a}--{b}/{name}" for name in ("table.tsv", "heatmaps.png", "heatmaps_raw.png")]
        if config["semantic"]["enabled"]:
            targets += [f"results/similarity/{a}--{b}/semantic.tsv", f"results/similarity/{a}--{b}/semantic.png"]
    for a, b in control_pairs():
        targets += [f"results/similarity/{a}--{b}/{name}.tsv"
                    for name in ("controls", "context_only_scores", "untrained_scores", "lexical_scores")]
    targets += [f"results/similarity/{a}--{b}/residual_streams.tsv" for a, b in residual_pairs()]
    if atlas_pairs():
        targets += ["results/atlas/atlas.tsv", "results/atlas/atlas.png"]
    targets += [f"results/similarity/{a}--{b}/{name}" for a, b in depth_pairs()
                for name in ("depth.tsv", "depth_trend.tsv", "depth.png")]
    return targets + ["results/similarity/all_scores.tsv"]


def all_pair_score_tables(wildcards):
    return [f"results/similarity/{a}--{b}/scores.tsv" for a, b in PAIRS]


def all_pair_semantic_tables(wildcards):
    if not config["semantic"]["enabled"]:
        return []
    return [f"results/similarity/{a}--{b}/semantic.tsv" for a, b in PAIRS]


# ---------------------------------------------------------------- verdict


def all_ceiling_score_tables(wildcards):
    return [f"results/similarity/ceiling/{model}/layer{layer}.tsv" for model, entry in MODELS.items() if has_ceiling(model)
            for layer in sorted(entry["layers"])]


def all_ceiling_summaries(wildcards):
    return [path.removesuffix(".tsv") + ".summary.tsv" for path in all_ceiling_score_tables(wildcards)]


def floor_table(wildcards):
    # Plain data for the verdict script: which pair is the floor control of which.
    return [[*real, *floor] for real, floor in FLOORS.items()]


def atlas_pairs():
    """The real model pairs (floor controls excepted) when there are several: the atlas sets them side by side."""
    floors = set(FLOORS.values())
    real = [pair for pair in PAIRS if pair not in floors]
    return real if len(real) > 1 else []


def depth_pairs():
    """The pairs that compare enough layers of each model to read similarity over depth."""
    from sae_universality.report.depth import MIN_LAYERS

    return [pair for pair in PAIRS if min(map(len, PAIR_LAYERS[pair])) >= MIN_LAYERS]


def atlas_score_tables(wildcards):
    return [f"results/similarity/{a}--{b}/scores.tsv" for a, b in atlas_pairs()]


def atlas_manifests(wildcards):
    return sorted({f"resources/models/{model}/manifest.json" for pair in atlas_pairs() for model in pair})


def atlas_context_only_tables(wildcards):
    return [f"results/similarity/{a}--{b}/context_only_scores.tsv" for a, b in atlas_pairs()
            if (a, b) in control_pairs()]


def model_families(wildcards):
    # The config's family, else the embedded model's own; "" when unknown.
    from sae_universality.models.embedded import EMBEDDED

    return {model: entry.get("family") or (EMBEDDED[entry["embedded"]].family if entry.get("embedded") in EMBEDDED
                                           else "")
            for model, entry in MODELS.items()}


def verdict_inputs(wildcards):
    return {
        "scores": all_pair_score_tables(wildcards),
        "semantic": all_pair_semantic_tables(wildcards),
        "quality": "results/saes/quality.tsv",
        "ceilings": all_ceiling_score_tables(wildcards),
        "ceiling_summaries": all_ceiling_summaries(wildcards),
        "controls": [f"results/similarity/{a}--{b}/controls.tsv" for a, b in control_pairs()],
        "context_only": [f"results/similarity/{a}--{b}/context_only_scores.tsv" for a, b in control_pairs()],
        "untrained": [f"results/similarity/{a}--{b}/untrained_scores.tsv" for a, b in control_pairs()],
        "lexical": [f"results/similarity/{a}--{b}/lexical_scores.tsv" for a, b in control_pairs()],
        "residual": [f"results/similarity/{a}--{b}/residual_streams.tsv" for a, b in residual_pairs()],
        "function": [f"results/causal/{a}--{b}/function.tsv" for a, b in causal_pairs()],
        # What each model is, for the verdict to say beside its results.
        "manifests": [f"resources/models/{model}/manifest.json" for model in MODELS],
    }


def verdict_text():
    """The verdict of a finished run, for the report's front page (workflow.rst); empty before it exists."""
    from pathlib import Path

    path = Path("results/verdict.md")
    return path.read_text(encoding="utf-8") if path.is_file() else ""


# The report's front page (workflow/report/workflow.rst) opens with the verdict; its Jinja sees only the config.
config["_report_verdict"] = verdict_text()
