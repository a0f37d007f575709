rule align_positions:
    input:
        unpack(pair_caches),
    output:
        alignment="results/alignment/{model_a}--{model_b}.h5",
        summary="results/alignment/{model_a}--{model_b}.tsv",
    log:
        "logs/align_positions/{model_a}--{model_b}.log",
    benchmark:
        "results/benchmarks/align_positions/{model_a}--{model_b}.tsv"
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/align_positions.py"
