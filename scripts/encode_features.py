"""Snakemake script: SAE codes of every cached position, stored sparsely (results/codes)."""
from sae_universality.entry import run_script
from sae_universality.saes.stage import encode_to_codes


def main(snakemake):
    encode_to_codes(snakemake.input.sae, snakemake.input.cache, snakemake.output.codes, snakemake.params.pre_activations)


run_script(snakemake, main)
