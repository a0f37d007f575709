"""Snakemake script: the ceiling's context-only codes: two seeds of one model and layer, each feature minus its token mean."""
from sae_universality.entry import run_script
from sae_universality.matching.stage import ControlOutputs, Side, all_rows, control_layer_pair
from sae_universality.settings import ControlSettings, MatchSettings, from_section


def main(snakemake):
    inputs, output = snakemake.input, snakemake.output
    rows = all_rows(inputs.codes_a)  # two SAEs of one model and layer encode the same positions
    first = Side(codes=inputs.codes_a, cache=inputs.cache, manifest=inputs.manifest, rows=rows)
    second = Side(codes=inputs.codes_b, cache=inputs.cache, manifest=inputs.manifest, rows=rows)
    controls = from_section(ControlSettings, snakemake.params.controls)
    control_layer_pair(first, second, inputs.matches, ControlOutputs(output.summary, output.context_only, ("context_only",)),
                       settings=from_section(MatchSettings, snakemake.params.settings), labels=snakemake.params.labels,
                       min_bigram_count=controls.min_bigram_count)


run_script(snakemake, main)
