"""Snakemake script: the lexical floor's activation cache, each activation replaced by its token's cross-fitted mean."""
from sae_universality.entry import run_script
from sae_universality.matching.lexical import write_lexical_cache


def main(snakemake):
    write_lexical_cache(snakemake.input.cache, snakemake.output.cache)


run_script(snakemake, main)
