"""Snakemake script: the seed-to-seed ceiling of one model and layer from every pair of its seeds."""
import pandas as pd

from sae_universality.entry import run_script
from sae_universality.io import write_tsv
from sae_universality.similarity.stage import mean_over_seed_pairs

# What the job may combine: its input and output names, and the keys of a row.
TABLES = (("scores", ["model", "layer", "metric"]), ("summaries", ["model_a", "model_b", "layer_a", "layer_b"]))


def main(snakemake):
    for name, keys in TABLES:
        if name in snakemake.input.keys():
            out = snakemake.output.scores if name == "scores" else snakemake.output.summary
            write_tsv(mean_over_seed_pairs([pd.read_csv(path, sep="\t") for path in snakemake.input[name]], keys), out)


run_script(snakemake, main)
