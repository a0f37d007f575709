"""Snakemake script: one model pair's functional agreement over its layer pairs, p adjusted across them."""
from sae_universality.causal.stage import function_table
from sae_universality.entry import run_script
from sae_universality.settings import SimilaritySettings, from_section


def main(snakemake):
    settings = from_section(SimilaritySettings, snakemake.params.settings)
    function_table(snakemake.input.summaries, snakemake.output.table, settings.p_adjust, settings.significance)


run_script(snakemake, main)
