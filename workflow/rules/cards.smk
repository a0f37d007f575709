rule output_tokens:
    input:
        sae="results/saes/{model}/layer{layer}/{sae}",
        manifest="resources/models/{model}/manifest.json",
    output:
        tokens="results/saes/{model}/layer{layer}/{sae}.output_tokens.npz",
    log:
        "logs/output_tokens/{model}/layer{layer}/{sae}.log",
    benchmark:
        "results/benchmarks/output_tokens/{model}/layer{layer}/{sae}.tsv"
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/output_tokens.py"


rule feature_layout:
    input:
        sae="results/saes/{model}/layer{layer}/{sae}",
    output:
        layout="results/saes/{model}/layer{layer}/{sae}.layout.tsv",
    log:
        "logs/feature_layout/{model}/layer{layer}/{sae}.log",
    benchmark:
        "results/benchmarks/feature_layout/{model}/layer{layer}/{sae}.tsv"
    params:
        settings=map_settings,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/feature_layout.py"


rule feature_cards:
    input:
        unpack(card_inputs),
    output:
        cards=directory("results/cards/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}"),
        page=report(
            "results/cards/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.html",
            caption="../report/feature_cards.rst",
            category="Feature cards and linked maps",
        ),
    log:
        "logs/feature_cards/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/feature_cards/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        labels=matching_labels,
        named=named_cards,
        threshold=config["matching"]["threshold"],
        categories=semantic_categories,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/feature_cards.py"
