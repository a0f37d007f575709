"""Snakemake script: one layer pair's controls: the matching with token identity or the document taken out."""
from sae_universality.entry import run_script
from sae_universality.matching.stage import ControlOutputs, Side, aligned_rows, control_layer_pair
from sae_universality.settings import ControlSettings, MatchSettings, from_section


def main(snakemake):
    inputs, output = snakemake.input, snakemake.output
    rows_a, rows_b = aligned_rows(inputs.alignment)
    a = Side(codes=inputs.codes_a, cache=inputs.cache_a, manifest=inputs.manifest_a, rows=rows_a)
    b = Side(codes=inputs.codes_b, cache=inputs.cache_b, manifest=inputs.manifest_b, rows=rows_b)
    controls = from_section(ControlSettings, snakemake.params.controls)
    control_layer_pair(a, b, inputs.matches, ControlOutputs(output.summary, output.context_only, pairs=output.pairs),
                       settings=from_section(MatchSettings, snakemake.params.settings), labels=snakemake.params.labels,
                       min_bigram_count=controls.min_bigram_count)


run_script(snakemake, main)
