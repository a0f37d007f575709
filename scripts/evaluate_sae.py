"""Snakemake script: quality of one SAE on held-out positions -> a one-row TSV."""
from sae_universality.entry import run_script
from sae_universality.sae_stage import evaluate


def main(snakemake):
    evaluate(
        snakemake.input.sae, snakemake.input.cache, snakemake.input.manifest, snakemake.input.windows,
        snakemake.output.quality,
        model_name=snakemake.wildcards.model, layer=int(snakemake.wildcards.layer), sae_name=snakemake.wildcards.sae,
        held_out_every=snakemake.params.held_out_every, loss_windows=snakemake.params.loss_windows,
    )


run_script(snakemake, main)
