rule feature_effects:
    input:
        unpack(effect_inputs),
    output:
        effects="results/causal/{model}/effects.h5",
        exact="results/causal/{model}/exact.tsv",
        agreement=report(
            "results/causal/{model}/agreement.tsv",
            caption="../report/causal_agreement.rst",
            category="Causal check",
        ),
    log:
        "logs/feature_effects/{model}.log",
    benchmark:
        "results/benchmarks/feature_effects/{model}.tsv"
    params:
        settings=causal_settings,
        layers=model_layers,
        saes=lambda wildcards: saes_of(wildcards.model),
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/feature_effects.py"


rule functional_agreement:
    input:
        unpack(function_inputs),
    output:
        pairs="results/causal/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.pairs.tsv",
        summary="results/causal/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv",
    log:
        "logs/functional_agreement/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/functional_agreement/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        settings=causal_settings,
        saes=function_saes,
        labels=matching_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/functional_agreement.py"


rule function_table:
    input:
        summaries=pair_function_summaries,
    output:
        table=report(
            "results/causal/{model_a}--{model_b}/function.tsv",
            caption="../report/function_table.rst",
            category="Causal check",
        ),
    log:
        "logs/function_table/{model_a}--{model_b}.log",
    benchmark:
        "results/benchmarks/function_table/{model_a}--{model_b}.tsv"
    params:
        settings=similarity_settings,
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/function_table.py"
