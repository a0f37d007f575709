"""Snakemake script: make one model loadable offline in seconds (resources/models/{model})."""
from sae_universality.entry import run_script
from sae_universality.models.sources import prepare_model


def main(snakemake):
    prepare_model(snakemake.wildcards.model, snakemake.params.entry, snakemake.params.out_dir,
                  source_manifest=snakemake.input.get("source_manifest"))


run_script(snakemake, main)
