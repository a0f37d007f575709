"""Snakemake script: the ceiling control's matching: two SAEs (two seeds) of one model and layer."""
from sae_universality.entry import run_script
from sae_universality.matching.stage import MatchOutputs, Side, all_rows, match_layer_pair
from sae_universality.settings import MatchSettings, from_section


def main(snakemake):
    inputs, output = snakemake.input, snakemake.output
    rows = all_rows(inputs.codes_a)  # two SAEs of one model and layer encode the same positions
    first = Side(codes=inputs.codes_a, cache=inputs.cache, manifest=inputs.manifest, rows=rows)
    second = Side(codes=inputs.codes_b, cache=inputs.cache, manifest=inputs.manifest, rows=rows)
    match_layer_pair(
        first, second, MatchOutputs(output.table, output.summary, output.examples),
        settings=from_section(MatchSettings, snakemake.params.settings), labels=snakemake.params.labels,
    )


run_script(snakemake, main)
