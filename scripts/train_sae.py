"""Snakemake script: train one SAE on the training windows of an activation cache (resumes after a kill)."""
from sae_universality.entry import run_script
from sae_universality.saes.stage import ModelLayer, TrainOutputs, train_on_cache
from sae_universality.settings import SaeSettings, TrainSettings, from_section


def main(snakemake):
    train_on_cache(
        snakemake.input.cache,
        TrainOutputs(snakemake.output.sae, snakemake.output.curve, snakemake.params.checkpoint_dir),
        ModelLayer(snakemake.wildcards.model, int(snakemake.wildcards.layer)),
        seed=int(snakemake.wildcards.sae.removeprefix("seed")),
        settings=SaeSettings(held_out_every=snakemake.params.held_out_every,
                             train=from_section(TrainSettings, snakemake.params.settings)),
    )


run_script(snakemake, main)
