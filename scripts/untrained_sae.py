"""Snakemake script: an untrained dictionary of the SAEs' width and k, the baseline of what SAE training adds."""
from sae_universality.entry import run_script
from sae_universality.saes.stage import ModelLayer, untrained_on_cache
from sae_universality.settings import SaeSettings, TrainSettings, from_section


def main(snakemake):
    settings = SaeSettings(held_out_every=snakemake.params.held_out_every,
                           train=from_section(TrainSettings, snakemake.params.settings))
    untrained_on_cache(snakemake.input.cache, snakemake.output.sae,
                       ModelLayer(snakemake.wildcards.model, int(snakemake.wildcards.layer)), 0, settings)


run_script(snakemake, main)
