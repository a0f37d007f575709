"""Snakemake script: documents -> context windows (resources/corpus/windows.jsonl)."""
import sys

from sae_universality.text.corpus import build_windows, corpus_statistics, write_windows
from sae_universality.entry import run_script


def main(snakemake):
    windows = build_windows(snakemake.params.corpus)
    write_windows(windows, snakemake.output.windows)
    print(corpus_statistics(windows), file=sys.stderr)


run_script(snakemake, main)
