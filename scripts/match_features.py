"""Snakemake script: pair the features of one (model pair, layer_a, layer_b) by activation correlation (SAEs or untrained dictionaries)."""
from sae_universality.entry import run_script
from sae_universality.matching.stage import MatchOutputs, Side, aligned_rows, match_layer_pair
from sae_universality.settings import MatchSettings, from_section


def main(snakemake):
    inputs, output = snakemake.input, snakemake.output
    rows_a, rows_b = aligned_rows(inputs.alignment)
    a = Side(codes=inputs.codes_a, cache=inputs.cache_a, manifest=inputs.manifest_a, rows=rows_a)
    b = Side(codes=inputs.codes_b, cache=inputs.cache_b, manifest=inputs.manifest_b, rows=rows_b)
    match_layer_pair(
        a, b, MatchOutputs(output.table, output.summary, output.examples, semantic=getattr(output, "semantic", None)),
        settings=from_section(MatchSettings, snakemake.params.settings), labels=snakemake.params.labels,
        categories=snakemake.params.categories,
    )


run_script(snakemake, main)
