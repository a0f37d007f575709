rule cache_activations:
    input:
        manifest="resources/models/{model}/manifest.json",
        windows="resources/corpus/windows.jsonl",
    output:
        shard_dir=temp(directory("results/activations/{model}/shards/{shard}")),
    log:
        "logs/cache_activations/{model}/shard{shard}.log",
    benchmark:
        "results/benchmarks/cache_activations/{model}/shard{shard}.tsv"
    params:
        layers=model_layers,
        n_shards=N_SHARDS,
        dtype=config["activations"]["dtype"],
        batch_size=model_batch_size,
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/cache_activations.py"


rule merge_activations:
    input:
        shard_dirs=shard_dirs,
    output:
        cache="results/activations/{model}/layer{layer}.h5",
    log:
        "logs/merge_activations/{model}/layer{layer}.log",
    benchmark:
        "results/benchmarks/merge_activations/{model}/layer{layer}.tsv"
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/merge_activations.py"


rule lexical_activations:
    input:
        cache="results/activations/{model}/layer{layer}.h5",
    output:
        cache=temp("results/activations/{model}/layer{layer}.lexical.h5"),
    log:
        "logs/lexical_activations/{model}/layer{layer}.log",
    benchmark:
        "results/benchmarks/lexical_activations/{model}/layer{layer}.tsv"
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/lexical_activations.py"
