"""Snakemake script: the linked map and feature cards of one layer pair, and their index page."""
from sae_universality.cards.stage import CardOutputs, MapOptions, PairFiles, SideFiles, write_cards
from sae_universality.entry import run_script
from sae_universality.matching.stage import aligned_rows


def main(snakemake):
    inputs, output = snakemake.input, snakemake.output
    rows_a, rows_b = aligned_rows(inputs.alignment)
    write_cards(PairFiles(inputs.matches, inputs.get("control_pairs"), inputs.get("function_pairs")),
                SideFiles(inputs.codes_a, inputs.cache_a, inputs.manifest_a, inputs.tokens_a, rows_a, inputs.layout_a),
                SideFiles(inputs.codes_b, inputs.cache_b, inputs.manifest_b, inputs.tokens_b, rows_b, inputs.layout_b),
                CardOutputs(output.cards, output.page), snakemake.params.labels, named=snakemake.params.named,
                options=MapOptions(snakemake.params.threshold, dict(snakemake.params.categories)))


run_script(snakemake, main)
