"""Snakemake script: one forward pass over a shard of windows, one HDF5 file per layer."""
from sae_universality.activations.cache import cache_shard
from sae_universality.entry import run_script


def main(snakemake):
    cache_shard(
        snakemake.input.manifest,
        snakemake.input.windows,
        snakemake.params.layers,
        snakemake.output.shard_dir,
        shard=int(snakemake.wildcards.shard),
        n_shards=snakemake.params.n_shards,
        dtype=snakemake.params.dtype,
        batch_size=snakemake.params.batch_size,
    )


run_script(snakemake, main)
