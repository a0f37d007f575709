"""Snakemake script: every metric on the kept pairs' decoder rows (whole match and per semantic category)."""
from sae_universality.entry import run_script
from sae_universality.similarity.semantic import score_semantic
from sae_universality.settings import SimilaritySettings, from_section
from sae_universality.similarity.stage import score_layer_pair


def main(snakemake):
    inputs, labels = snakemake.input, snakemake.params.labels
    settings = from_section(SimilaritySettings, snakemake.params.settings)
    score_layer_pair(inputs.matches, inputs.sae_a, inputs.sae_b, snakemake.output.scores, settings=settings, labels=labels)
    score_semantic(inputs.semantic, inputs.sae_a, inputs.sae_b, snakemake.output.semantic, settings=settings, labels=labels)


run_script(snakemake, main)
