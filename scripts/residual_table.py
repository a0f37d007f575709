"""Snakemake script: a pair's residual-stream comparisons of every layer pair in one table."""
import pandas as pd

from sae_universality.entry import run_script
from sae_universality.io import write_tsv


def main(snakemake):
    write_tsv(pd.concat([pd.read_csv(path, sep="\t") for path in snakemake.input.scores], ignore_index=True),
              snakemake.output.table)


run_script(snakemake, main)
