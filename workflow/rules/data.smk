rule build_corpus:
    output:
        windows="resources/corpus/windows.jsonl",
    log:
        "logs/build_corpus.log",
    benchmark:
        "results/benchmarks/build_corpus.tsv"
    params:
        corpus=corpus_settings,
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/build_corpus.py"
