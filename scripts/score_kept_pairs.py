"""Snakemake script: every metric on a match table's kept pairs (the seed-to-seed ceiling's, the context-only codes')."""
from sae_universality.entry import run_script
from sae_universality.settings import SimilaritySettings, from_section
from sae_universality.similarity.stage import score_layer_pair


def main(snakemake):
    score_layer_pair(snakemake.input.matches, snakemake.input.sae_a, snakemake.input.sae_b, snakemake.output.scores,
                     settings=from_section(SimilaritySettings, snakemake.params.settings), labels=snakemake.params.labels)


run_script(snakemake, main)
