"""Snakemake script: the ceiling control's matching: two SAEs (two seeds) of one model and layer."""
from sae_universality.entry import run_script
from sae_universality.match_stage import match_layer_pair


def main(snakemake):
    match_layer_pair(
        snakemake.input.codes_a, snakemake.input.codes_b, None,
        snakemake.input.cache, snakemake.input.cache, snakemake.input.manifest, snakemake.input.manifest,
        snakemake.output.table, snakemake.output.summary, snakemake.output.examples,
        settings=snakemake.params.settings, labels=snakemake.params.labels,
    )


run_script(snakemake, main)
