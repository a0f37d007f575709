"""Snakemake script: one summary table and one browsable page of matched pairs per model pair."""
from sae_universality.entry import run_script
from sae_universality.matching.stage import write_pairs_page
from sae_universality.saes.stage import collect_tables


def main(snakemake):
    collect_tables(snakemake.input.summaries, snakemake.output.summary)
    a, b = snakemake.wildcards.model_a, snakemake.wildcards.model_b
    write_pairs_page(snakemake.input.examples, snakemake.output.page, f"Matched features: {a} vs {b}")


run_script(snakemake, main)
