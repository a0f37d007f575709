"""Snakemake script: feature cards for the chosen kept pairs of one layer pair, and their index page."""
from sae_universality.cards.stage import SideFiles, write_cards
from sae_universality.entry import run_script
from sae_universality.matching.stage import aligned_rows


def main(snakemake):
    inputs = snakemake.input
    rows_a, rows_b = aligned_rows(inputs.alignment)
    write_cards(inputs.matches,
                SideFiles(inputs.codes_a, inputs.cache_a, inputs.manifest_a, inputs.tokens_a, rows_a),
                SideFiles(inputs.codes_b, inputs.cache_b, inputs.manifest_b, inputs.tokens_b, rows_b),
                snakemake.output.cards, snakemake.params.labels, snakemake.output.page,
                named=snakemake.params.named)


run_script(snakemake, main)
