"""Snakemake script: one layer pair's raw residual streams compared position by position (before any SAE)."""
from sae_universality.entry import run_script
from sae_universality.settings import ControlSettings, SimilaritySettings, from_section
from sae_universality.similarity.residual import ResidualFiles, residual_layer_pair


def main(snakemake):
    inputs = snakemake.input
    files = ResidualFiles(inputs.alignment, inputs.cache_a, inputs.cache_b, inputs.lexical_a, inputs.lexical_b)
    residual_layer_pair(files, snakemake.output.scores, snakemake.params.labels,
                        from_section(ControlSettings, snakemake.params.controls),
                        from_section(SimilaritySettings, snakemake.params.settings))


run_script(snakemake, main)
