"""Snakemake script: every pair's scores (and semantic scores) in one tidy long table."""
from sae_universality.entry import run_script
from sae_universality.similarity.stage import tidy_scores


def main(snakemake):
    tidy_scores(snakemake.input.scores, snakemake.input.semantic, snakemake.output.tidy)


run_script(snakemake, main)
