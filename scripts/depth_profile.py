"""Snakemake script: a pair's similarity over depth (profile, trend, figure) from its scores and manifests."""
from sae_universality.entry import run_script
from sae_universality.report.depth import write_depth


def main(snakemake):
    write_depth(snakemake.input.scores, snakemake.input.manifest_a, snakemake.input.manifest_b,
                snakemake.output.profile, snakemake.output.trend, snakemake.output.figure)


run_script(snakemake, main)
