"""Snakemake script: train one SAE on the training windows of an activation cache (resumes after a kill)."""
from sae_universality.entry import run_script
from sae_universality.saes.stage import train_on_cache
from sae_universality.settings import TrainSettings, from_section


def main(snakemake):
    train_on_cache(
        snakemake.input.cache, snakemake.output.sae, snakemake.output.curve, snakemake.params.checkpoint_dir,
        settings=from_section(TrainSettings, snakemake.params.settings),
        seed=int(snakemake.wildcards.sae.removeprefix("seed")),
        held_out_every=snakemake.params.held_out_every,
        model_name=snakemake.wildcards.model,
        layer=int(snakemake.wildcards.layer),
    )


run_script(snakemake, main)
