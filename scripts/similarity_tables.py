"""Snakemake script: a pair's tables (wide and long), heatmaps, semantic table and bar chart."""
from sae_universality.entry import run_script
from sae_universality.report import plot_heatmaps, plot_semantic_bars
from sae_universality.sae_stage import collect_tables
from sae_universality.similarity_stage import pair_table


def main(snakemake):
    title = f"{snakemake.wildcards.model_a} vs {snakemake.wildcards.model_b}"
    scores = pair_table(snakemake.input.scores, snakemake.input.ceilings, snakemake.output.table, snakemake.output.scores)
    plot_heatmaps(scores, snakemake.output.heatmaps, title)
    semantic = collect_tables(snakemake.input.semantic, snakemake.output.semantic)
    plot_semantic_bars(semantic, snakemake.output.semantic_plot, title)


run_script(snakemake, main)
