"""Snakemake script: the tokens each latent of an SAE promotes and suppresses through its model's output head."""
from sae_universality.cards.stage import write_output_tokens
from sae_universality.entry import run_script


def main(snakemake):
    write_output_tokens(snakemake.input.sae, snakemake.input.manifest, snakemake.output.tokens)


run_script(snakemake, main)
