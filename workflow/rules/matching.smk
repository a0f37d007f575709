rule match_features:
    input:
        unpack(matching_inputs),
    output:
        table="results/matching/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv",
        summary="results/matching/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.summary.tsv",
        examples="results/matching/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.examples.json",
        semantic="results/matching/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.semantic.tsv",
    log:
        "logs/match_features/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/match_features/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        settings=matching_settings,
        labels=matching_labels,
        categories=semantic_categories,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/match_features.py"


rule matching_summary:
    input:
        summaries=pair_summaries,
        examples=pair_examples,
    output:
        summary=report(
            "results/matching/{model_a}--{model_b}/summary.tsv",
            caption="../report/matching_summary.rst",
            category="Matching",
        ),
        page=report(
            "results/matching/{model_a}--{model_b}/pairs.html",
            caption="../report/matched_pairs.rst",
            category="Matching",
        ),
    log:
        "logs/matching_summary/{model_a}--{model_b}.log",
    benchmark:
        "results/benchmarks/matching_summary/{model_a}--{model_b}.tsv"
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/matching_summary.py"


rule match_controls:
    input:
        unpack(control_inputs),
    output:
        summary="results/matching/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.controls.tsv",
        context_only="results/matching/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.context_only.tsv",
        pairs="results/matching/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.controls_pairs.tsv",
    log:
        "logs/match_controls/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/match_controls/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        settings=matching_settings,
        controls=control_settings,
        labels=matching_labels,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/match_controls.py"


rule match_untrained:
    input:
        unpack(untrained_matching_inputs),
    output:
        table="results/matching/{model_a}--{model_b}/untrained/layer{layer_a}--layer{layer_b}.tsv",
        summary="results/matching/{model_a}--{model_b}/untrained/layer{layer_a}--layer{layer_b}.summary.tsv",
        examples="results/matching/{model_a}--{model_b}/untrained/layer{layer_a}--layer{layer_b}.examples.json",
    log:
        "logs/match_untrained/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/match_untrained/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        settings=matching_settings,
        labels=matching_labels,
        categories=semantic_categories,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/match_features.py"


rule match_lexical:
    input:
        unpack(lexical_matching_inputs),
    output:
        table="results/matching/{model_a}--{model_b}/lexical/layer{layer_a}--layer{layer_b}.tsv",
        summary="results/matching/{model_a}--{model_b}/lexical/layer{layer_a}--layer{layer_b}.summary.tsv",
        examples="results/matching/{model_a}--{model_b}/lexical/layer{layer_a}--layer{layer_b}.examples.json",
    log:
        "logs/match_lexical/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.log",
    benchmark:
        "results/benchmarks/match_lexical/{model_a}--{model_b}/layer{layer_a}--layer{layer_b}.tsv"
    params:
        settings=matching_settings,
        labels=matching_labels,
        categories=semantic_categories,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/match_features.py"
