"""Snakemake script: the atlas, every model pair side by side (table and figure)."""
from sae_universality.entry import run_script
from sae_universality.report.atlas import write_atlas


def main(snakemake):
    write_atlas(snakemake.input.scores, snakemake.input.context_only, snakemake.params.families,
                snakemake.output.table, snakemake.output.figure, snakemake.input.manifests)


run_script(snakemake, main)
