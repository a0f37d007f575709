# sae-universality: do two language models learn the same features?
# Read top to bottom: configuration, the stages in the order data flows, the targets.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/alignment.smk"
include: "workflow/rules/saes.smk"
include: "workflow/rules/matching.smk"
include: "workflow/rules/similarity.smk"
include: "workflow/rules/causal.smk"
include: "workflow/rules/cards.smk"


rule all:
    input:
        final_targets(),
    default_target: True
