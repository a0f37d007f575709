"""Chance levels of every metric: its mean and spread on unrelated spaces, by pairs n and widths d.

On independent Gaussian X (n x d_a) and Y (n x d_b), each metric's value is what
random pairings give; a metric whose chance level depends on n and d cannot be read
raw. Prints a Markdown table (docs/METHOD.md "Chance levels" records it).

    python benchmarks/chance_levels.py                  # n 100..3000, d 64 and 576/640, 4 draws
    python benchmarks/chance_levels.py --draws 8 --n 150,450,1500
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sae_universality.similarity import METRICS, compute_metric

OPTIONS = {"mutual_knn": {"k": 10}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100,300,1000,3000", help="comma-separated pair counts")
    parser.add_argument("--widths", default="64x64,576x640", help="comma-separated d_a x d_b")
    parser.add_argument("--draws", type=int, default=4, help="independent draws per cell")
    parser.add_argument("--metrics", default=",".join(METRICS), help="comma-separated metric names")
    args = parser.parse_args()
    metrics = args.metrics.split(",")
    widths = [tuple(int(x) for x in w.split("x")) for w in args.widths.split(",")]
    print("| n | d_a x d_b | " + " | ".join(metrics) + " |")
    print("|---|---|" + "---|" * len(metrics))
    started = time.perf_counter()
    for d_a, d_b in widths:
        for n in (int(x) for x in args.n.split(",")):
            rng = np.random.default_rng(n * 7 + d_a)
            values = {name: [] for name in metrics}
            for _ in range(args.draws):
                X, Y = rng.standard_normal((n, d_a)), rng.standard_normal((n, d_b))
                for name in metrics:
                    values[name].append(compute_metric(name, X, Y, **OPTIONS.get(name, {})))
            cells = [f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" for v in values.values()]
            print(f"| {n} | {d_a} x {d_b} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n{args.draws} draws per row (mean ± sd), mutual_knn k=10 (its chance level is k/(n-1)); "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
