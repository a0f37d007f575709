# Configuration check, wildcard constraints, and every target list and input function.
import sys

from sae_universality.config import check_config
from sae_universality.errors import UserError

try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except UserError as error:
    # One line naming the key and the fix, before any job runs; no traceback.
    sys.exit(f"sae-universality: {error}")

MODELS = config["models"]
PAIRS = [(pair["a"], pair["b"]) for pair in config["pairs"]]
N_SHARDS = config["activations"]["shards"]


wildcard_constraints:
    model="|".join(MODELS),
    model_a="|".join(MODELS),
    model_b="|".join(MODELS),
    layer=r"\d+",
    shard=r"\d+",


def model_entry(wildcards):
    return MODELS[wildcards.model]


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
    return activation_targets() + alignment_targets()
