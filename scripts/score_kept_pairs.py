"""Snakemake script: every metric on a match table's kept pairs (the seed-to-seed ceiling's, the context-only codes',
the untrained dictionaries', the lexical floor's: the last on as many pairs as the full result keeps, `full_matches`)."""
from sae_universality.entry import run_script
from sae_universality.settings import SimilaritySettings, from_section
from sae_universality.similarity.stage import kept_pairs_of, score_layer_pair


def main(snakemake):
    inputs = snakemake.input
    at_most = len(kept_pairs_of(inputs.full_matches)[0]) if "full_matches" in inputs.keys() else None
    score_layer_pair(inputs.matches, inputs.sae_a, inputs.sae_b, snakemake.output.scores,
                     settings=from_section(SimilaritySettings, snakemake.params.settings), labels=snakemake.params.labels,
                     at_most=at_most)


run_script(snakemake, main)
