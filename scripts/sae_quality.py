"""Snakemake script: every SAE's quality row -> one table; every training curve -> one figure."""
from sae_universality.entry import run_script
from sae_universality.saes.stage import collect_tables, plot_training_curves


def main(snakemake):
    quality = collect_tables(snakemake.input.rows, snakemake.output.table)
    plot_training_curves(snakemake.input.curves, snakemake.output.curves, quality)


run_script(snakemake, main)
