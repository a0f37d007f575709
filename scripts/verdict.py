"""Snakemake script: the verdict (what the experiment found, in words) and its table."""
import pandas as pd

from sae_universality.entry import run_script
from sae_universality.settings import SimilaritySettings, from_section
from sae_universality.report.verdict import read_tables, write_verdict


def main(snakemake):
    inputs = snakemake.input
    pair_scores = {}
    for path in inputs.scores:
        scores = pd.read_csv(path, sep="\t")
        pair_scores[(scores["model_a"].iloc[0], scores["model_b"].iloc[0])] = scores
    semantic = {}
    for path in inputs.semantic:
        table = pd.read_csv(path, sep="\t")
        if len(table):
            semantic[(table["model_a"].iloc[0], table["model_b"].iloc[0])] = table
    floors = {(a, b): (floor_a, floor_b) for a, b, floor_a, floor_b in snakemake.params.floors}
    write_verdict(pair_scores, floors, pd.read_csv(inputs.quality, sep="\t"), read_tables(inputs.ceilings),
                  read_tables(inputs.ceiling_summaries), from_section(SimilaritySettings, snakemake.params.settings), snakemake.output.verdict,
                  snakemake.output.table, semantic)


run_script(snakemake, main)
