"""What a whole run costs beside the work it cannot avoid: job CPU against forward-pass CPU.

Reads the `benchmark:` file every job writes (results/benchmarks/{rule}/...tsv,
Snakemake's `cpu_time` and wall seconds) in one or more finished run folders,
and prints per rule the jobs, wall and CPU seconds and their share, then the
ratio of all job CPU to the CPU of the forward passes (`cache_activations`):
the baseline measured in the same run. Goal (issue 12): at most 2.

    python benchmarks/bench_pipeline_overhead.py                 # the run in this folder
    python benchmarks/bench_pipeline_overhead.py ~/runs/a ~/runs/b
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

FORWARD_RULES = ("cache_activations",)
GOAL = 2.0


def job_costs(run: Path) -> pd.DataFrame:
    """One row per job: rule, wall seconds, CPU seconds."""
    root = run / "results" / "benchmarks"
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rule = path.relative_to(root).parts[0].removesuffix(".tsv")
        rows.append({"rule": rule, "wall": float(table["s"].iloc[0]), "cpu": float(table["cpu_time"].iloc[0])})
    if not rows:
        raise SystemExit(f"{root}: no benchmark files; run the workflow there first")
    return pd.DataFrame(rows)


def summarize(run: Path) -> float:
    jobs = job_costs(run)
    per_rule = jobs.groupby("rule").agg(jobs=("cpu", "size"), wall=("wall", "sum"), cpu=("cpu", "sum"))
    per_rule["share"] = per_rule["cpu"] / per_rule["cpu"].sum()
    per_rule = per_rule.sort_values("cpu", ascending=False)
    forward = per_rule.loc[per_rule.index.isin(FORWARD_RULES), "cpu"].sum()
    total = per_rule["cpu"].sum()
    print(f"## {run}\n")
    print("| rule | jobs | wall s | CPU s | share of CPU |\n|---|---|---|---|---|")
    for rule, row in per_rule.iterrows():
        print(f"| {rule} | {int(row.jobs)} | {row.wall:.0f} | {row.cpu:.0f} | {row.share:.0%} |")
    ratio = total / forward if forward > 0 else float("nan")
    print(f"\nall jobs: {total:.0f} s CPU, {per_rule['wall'].sum():.0f} s wall; forward passes "
          f"({', '.join(FORWARD_RULES)}): {forward:.0f} s CPU")
    print(f"ratio job CPU / forward CPU: {ratio:.2f} (goal <= {GOAL:g}: {'met' if ratio <= GOAL else 'not met'})\n")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, default=[Path(".")], help="finished run folders")
    for run in parser.parse_args().runs:
        summarize(run)


if __name__ == "__main__":
    main()
