"""Snakemake script: the verdict (what the experiment found, in words) and its table."""
from sae_universality.entry import run_script
from sae_universality.report.verdict import ExperimentTables, write_verdict
from sae_universality.settings import SimilaritySettings, from_section


def main(snakemake):
    floors = {(a, b): (floor_a, floor_b) for a, b, floor_a, floor_b in snakemake.params.floors}
    tables = ExperimentTables.read(dict(snakemake.input.items()), floors)
    write_verdict(tables, from_section(SimilaritySettings, snakemake.params.settings), snakemake.output.verdict,
                  snakemake.output.table)


run_script(snakemake, main)
