"""Snakemake script: the shards of one (model, layer) -> results/activations/{model}/layer{layer}.h5."""
from sae_universality.activations.cache import merge_shards
from sae_universality.entry import run_script


def main(snakemake):
    layer_file = f"layer{snakemake.wildcards.layer}.h5"
    merge_shards([f"{shard_dir}/{layer_file}" for shard_dir in snakemake.input.shard_dirs], snakemake.output.cache)


run_script(snakemake, main)
