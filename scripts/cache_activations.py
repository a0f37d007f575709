"""Snakemake script: one forward pass over a shard of windows, one HDF5 file per layer."""
from sae_universality.activations.cache import cache_shard
from sae_universality.entry import run_script
from sae_universality.settings import ActivationSettings


def main(snakemake):
    settings = ActivationSettings(dtype=snakemake.params.dtype, shards=snakemake.params.n_shards)
    cache_shard(snakemake.input.manifest, snakemake.input.windows, snakemake.params.layers,
                snakemake.output.shard_dir, settings, shard=int(snakemake.wildcards.shard),
                batch_size=snakemake.params.batch_size)


run_script(snakemake, main)
