"""Snakemake script: the seed-to-seed ceiling of one model and layer from every pair of its seeds."""
import pandas as pd

from sae_universality.entry import run_script
from sae_universality.io import write_tsv
from sae_universality.similarity.stage import mean_over_seed_pairs


def main(snakemake):
    for paths, keys, out in ((snakemake.input.scores, ["model", "layer", "metric"], snakemake.output.scores),
                             (snakemake.input.summaries, ["model_a", "model_b", "layer_a", "layer_b"],
                              snakemake.output.summary)):
        write_tsv(mean_over_seed_pairs([pd.read_csv(path, sep="\t") for path in paths], keys), out)


run_script(snakemake, main)
