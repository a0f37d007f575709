"""Snakemake script: a pair's tables (wide and long), heatmaps (excess and raw), semantic table and bar chart."""
from sae_universality.entry import run_script
from sae_universality.report.figures import plot_heatmaps, plot_semantic_bars
from sae_universality.similarity.semantic import semantic_table
from sae_universality.settings import SimilaritySettings, from_section
from sae_universality.similarity.stage import pair_table


def main(snakemake):
    title = f"{snakemake.wildcards.model_a} vs {snakemake.wildcards.model_b}"
    settings, output = from_section(SimilaritySettings, snakemake.params.settings), snakemake.output
    scores = pair_table(snakemake.input.scores, snakemake.input.ceilings, output.table, output.scores, settings)
    plot_heatmaps(scores, output.heatmaps, title, color_by="z")
    plot_heatmaps(scores, output.heatmaps_raw, title, color_by="observed")
    semantic = semantic_table(snakemake.input.semantic, output.semantic, settings)
    plot_semantic_bars(semantic, output.semantic_plot, title)


run_script(snakemake, main)
