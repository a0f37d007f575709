"""Studies that drive whole workflows (Snakemake in subprocesses) and collect their tables."""
