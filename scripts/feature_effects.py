"""Snakemake script: every SAE feature's first-order effect on the next-token loss over the causal sample of one
model, and the exact ablation check."""
from pathlib import Path

from sae_universality.causal.stage import EffectOutputs, LayerFiles, measure_effects
from sae_universality.entry import run_script
from sae_universality.settings import CausalSettings, from_section


def main(snakemake):
    inputs, output, params = snakemake.input, snakemake.output, snakemake.params
    layers = {layer: LayerFiles(Path(inputs[f"cache{layer}"]),
                                {sae: (Path(inputs[f"sae{layer}_{sae}"]), Path(inputs[f"codes{layer}_{sae}"]))
                                 for sae in params.saes})
              for layer in params.layers}
    measure_effects(snakemake.wildcards.model, inputs.manifest, inputs.windows, layers,
                    EffectOutputs(output.effects, output.exact, output.agreement),
                    from_section(CausalSettings, params.settings))


run_script(snakemake, main)
