"""Snakemake script: how alike the two features of each kept pair of one layer pair act on their models'
predictions (functional agreement), against random pairings, the seed-to-seed ceiling and token identity."""
from sae_universality.causal.stage import EffectSide, functional_agreement
from sae_universality.entry import run_script
from sae_universality.io import write_tsv
from sae_universality.settings import CausalSettings, from_section


def main(snakemake):
    inputs, params = snakemake.input, snakemake.params

    def side(key, layer):
        return EffectSide(inputs[f"effects_{key}"], int(layer), params.saes[key][0],
                          params.saes[key][1] if len(params.saes[key]) > 1 else None,
                          inputs.get(f"ceiling_{key}"), inputs[f"codes_{key}"], inputs[f"cache_{key}"],
                          inputs[f"tokens_{key}"], inputs[f"manifest_{key}"], inputs[f"agreement_{key}"])

    pairs, summary = functional_agreement(inputs.matches, inputs.alignment,
                                          side("a", snakemake.wildcards.layer_a), side("b", snakemake.wildcards.layer_b),
                                          params.labels, from_section(CausalSettings, params.settings))
    write_tsv(pairs, snakemake.output.pairs)
    write_tsv(summary, snakemake.output.summary)


run_script(snakemake, main)
