"""Snakemake script: common token boundaries of a model pair -> results/alignment/{pair}.h5 and .tsv."""
from sae_universality.activations.alignment import write_alignment, write_alignment_summary
from sae_universality.entry import run_script


def main(snakemake):
    summary = write_alignment(
        snakemake.input.cache_a, snakemake.input.cache_b, snakemake.output.alignment,
        snakemake.wildcards.model_a, snakemake.wildcards.model_b,
    )
    write_alignment_summary(summary, snakemake.output.summary)


run_script(snakemake, main)
