rule train_sae:
    input:
        cache="results/activations/{model}/layer{layer}.h5",
    output:
        sae=directory("results/saes/{model}/layer{layer}/{sae}"),
        curve="results/saes/{model}/layer{layer}/{sae}.curve.tsv",
    log:
        "logs/train_sae/{model}/layer{layer}/{sae}.log",
    benchmark:
        "results/benchmarks/train_sae/{model}/layer{layer}/{sae}.tsv"
    wildcard_constraints:
        sae=r"seed\d+",
    params:
        settings=train_settings,
        held_out_every=config["saes"]["held_out_every"],
        # Outside the output folder: Snakemake removes outputs of a failed job, checkpoints must survive it.
        checkpoint_dir="results/checkpoints/{model}/layer{layer}/{sae}",
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/train_sae.py"


rule load_pretrained_sae:
    input:
        cache="results/activations/{model}/layer{layer}.h5",
    output:
        sae=directory("results/saes/{model}/layer{layer}/{sae}"),
    log:
        "logs/load_pretrained_sae/{model}/layer{layer}/{sae}.log",
    benchmark:
        "results/benchmarks/load_pretrained_sae/{model}/layer{layer}/{sae}.tsv"
    wildcard_constraints:
        sae="pretrained",
    params:
        spec=pretrained_spec,
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/load_pretrained_sae.py"


rule untrained_sae:
    input:
        cache="results/activations/{model}/layer{layer}.h5",
    output:
        sae=directory("results/saes/{model}/layer{layer}/{sae}"),
    log:
        "logs/untrained_sae/{model}/layer{layer}/{sae}.log",
    benchmark:
        "results/benchmarks/untrained_sae/{model}/layer{layer}/{sae}.tsv"
    wildcard_constraints:
        sae="untrained",
    params:
        settings=train_settings,
        held_out_every=config["saes"]["held_out_every"],
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/untrained_sae.py"


rule downstream_loss:
    input:
        saes=saes_of_model,
        manifest="resources/models/{model}/manifest.json",
        windows="resources/corpus/windows.jsonl",
    output:
        table="results/saes/{model}/downstream.tsv",
    log:
        "logs/downstream_loss/{model}.log",
    benchmark:
        "results/benchmarks/downstream_loss/{model}.tsv"
    params:
        held_out_every=config["saes"]["held_out_every"],
        loss_windows=config["saes"]["loss_windows"],
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/downstream_loss.py"


rule evaluate_saes:
    input:
        saes=saes_of_layer,
        cache="results/activations/{model}/layer{layer}.h5",
        downstream="results/saes/{model}/downstream.tsv",
    output:
        quality="results/saes/{model}/layer{layer}/quality.tsv",
    log:
        "logs/evaluate_saes/{model}/layer{layer}.log",
    benchmark:
        "results/benchmarks/evaluate_saes/{model}/layer{layer}.tsv"
    params:
        held_out_every=config["saes"]["held_out_every"],
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/evaluate_saes.py"


rule sae_quality:
    input:
        rows=quality_rows,
        curves=training_curves,
    output:
        table=report(
            "results/saes/quality.tsv",
            caption="../report/sae_quality.rst",
            category="SAEs",
        ),
        curves=report(
            "results/saes/training_curves.png",
            caption="../report/training_curves.rst",
            category="SAEs",
        ),
    log:
        "logs/sae_quality.log",
    benchmark:
        "results/benchmarks/sae_quality.tsv"
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/sae_quality.py"


rule encode_features:
    input:
        sae="results/saes/{model}/layer{layer}/{sae}",
        cache="results/activations/{model}/layer{layer}.h5",
    output:
        codes="results/codes/{model}/layer{layer}/{sae}.h5",
    log:
        "logs/encode_features/{model}/layer{layer}/{sae}.log",
    benchmark:
        "results/benchmarks/encode_features/{model}/layer{layer}/{sae}.tsv"
    params:
        pre_activations=config["saes"]["pre_activations"],
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/encode_features.py"


rule encode_lexical:
    input:
        sae=lambda wildcards: f"results/saes/{wildcards.model}/layer{wildcards.layer}/{primary_sae(wildcards.model)}",
        cache="results/activations/{model}/layer{layer}.lexical.h5",
    output:
        codes="results/codes/{model}/layer{layer}/lexical.h5",
    log:
        "logs/encode_lexical/{model}/layer{layer}.log",
    benchmark:
        "results/benchmarks/encode_lexical/{model}/layer{layer}.tsv"
    params:
        pre_activations=config["saes"]["pre_activations"],
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/encode_features.py"
