rule prepare_model:
    input:
        unpack(source_model_manifest),
    output:
        manifest="resources/models/{model}/manifest.json",
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "results/benchmarks/prepare_model/{model}.tsv"
    params:
        entry=model_source_entry,
        out_dir=subpath(output.manifest, parent=True),
    threads: 1
    conda:
        "../../envs/workflow.yaml"
    script:
        "../../scripts/prepare_model.py"
