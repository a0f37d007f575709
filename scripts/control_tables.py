"""Snakemake script: a pair's control tables: every layer pair's controls, and the context-only scores beside the full ones."""
from sae_universality.entry import run_script
from sae_universality.settings import SimilaritySettings, from_section
from sae_universality.similarity.controls import control_tables


def main(snakemake):
    inputs, output = snakemake.input, snakemake.output
    control_tables(inputs.controls, inputs.context_only, inputs.full_scores,
                   from_section(SimilaritySettings, snakemake.params.settings), output.controls, output.context_only)


run_script(snakemake, main)
