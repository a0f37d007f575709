"""Snakemake script: a published SAE (local folder or hub) -> SAELens layout in results/saes."""
from sae_universality.entry import run_script
from sae_universality.saes.stage import cache_width, load_pretrained


def main(snakemake):
    load_pretrained(snakemake.params.spec, int(snakemake.wildcards.layer), snakemake.output.sae,
                    expected_d_in=cache_width(snakemake.input.cache))


run_script(snakemake, main)
