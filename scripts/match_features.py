"""Snakemake script: pair the features of one (model pair, layer_a, layer_b) by activation correlation."""
from sae_universality.entry import run_script
from sae_universality.match_stage import match_layer_pair


def main(snakemake):
    match_layer_pair(
        snakemake.input.codes_a, snakemake.input.codes_b, snakemake.input.alignment,
        snakemake.input.cache_a, snakemake.input.cache_b, snakemake.input.manifest_a, snakemake.input.manifest_b,
        snakemake.output.table, snakemake.output.summary, snakemake.output.examples,
        settings=snakemake.params.settings, labels=snakemake.params.labels,
        categories=snakemake.params.categories, out_semantic=snakemake.output.semantic,
    )


run_script(snakemake, main)
