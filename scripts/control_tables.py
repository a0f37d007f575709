"""Snakemake script: a pair's control tables: every layer pair's controls, and the context-only, untrained and lexical scores beside the full ones."""
from sae_universality.entry import run_script
from sae_universality.settings import SimilaritySettings, from_section
from sae_universality.similarity.controls import ControlInputs, control_tables


def main(snakemake):
    inputs, output = snakemake.input, snakemake.output
    collected = ControlInputs(inputs.controls, inputs.context_only, inputs.untrained_summaries, inputs.untrained,
                              inputs.lexical_summaries, inputs.lexical, inputs.full_scores, inputs.context_only_ceilings)
    control_tables(collected, from_section(SimilaritySettings, snakemake.params.settings),
                   {name: output[name] for name in ("controls", "context_only", "untrained", "lexical")})


run_script(snakemake, main)
