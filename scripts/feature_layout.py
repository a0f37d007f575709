"""Snakemake script: the map layout of one SAE's decoder directions (cards.map_layout)."""
from sae_universality.cards.layout import write_layout
from sae_universality.entry import run_script
from sae_universality.settings import CardSettings, from_section


def main(snakemake):
    write_layout(snakemake.input.sae, snakemake.output.layout, from_section(CardSettings, snakemake.params.settings))


run_script(snakemake, main)
