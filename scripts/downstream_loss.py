"""Snakemake script: downstream loss of every SAE of one model, its clean pass shared -> a row per (layer, SAE)."""
from sae_universality.entry import run_script
from sae_universality.saes.stage import DownstreamInputs, downstream_of_model, sae_dirs_by_layer
from sae_universality.settings import SaeSettings


def main(snakemake):
    downstream_of_model(
        DownstreamInputs(sae_dirs_by_layer(snakemake.input.saes), snakemake.input.manifest, snakemake.input.windows),
        snakemake.output.table,
        snakemake.wildcards.model,
        SaeSettings(held_out_every=snakemake.params.held_out_every, loss_windows=snakemake.params.loss_windows),
    )


run_script(snakemake, main)
