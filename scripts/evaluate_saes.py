"""Snakemake script: quality of the SAEs of one (model, layer) on held-out positions -> a row per SAE."""
from pathlib import Path

from sae_universality.entry import run_script
from sae_universality.saes.stage import EvaluationInputs, ModelLayer, evaluate_layer
from sae_universality.settings import SaeSettings


def main(snakemake):
    evaluate_layer(
        EvaluationInputs({Path(sae).name: sae for sae in snakemake.input.saes}, snakemake.input.cache,
                         snakemake.input.downstream),
        snakemake.output.quality,
        ModelLayer(snakemake.wildcards.model, int(snakemake.wildcards.layer)),
        SaeSettings(held_out_every=snakemake.params.held_out_every),
    )


run_script(snakemake, main)
