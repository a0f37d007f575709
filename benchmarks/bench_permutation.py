"""Fast permutation null vs recomputing each metric from scratch for every permutation.

The fast path (`similarity.permutation_null`) computes once what a row
permutation of Y leaves unchanged (SVD bases, rank-transformed correlation
matrices, Gram matrices, neighbour lists) and then does a gather plus a small
product per permutation. The baseline calls the metric on (X, Y[p]) for each
permutation p. Both use the same permutations; the script checks that their
values agree and prints the time of each and the speedup.

The baseline is timed on the first `--naive-permutations` permutations only and
extrapolated linearly to all of them (its cost per permutation is constant);
the fast path is timed on all permutations, one-time set-up included.

Usage:
    python benchmarks/bench_permutation.py                 # n=5000, d=768, 1000 permutations, svcca + rsa
    python benchmarks/bench_permutation.py --quick         # n=1500, d=256, 200 permutations
    python benchmarks/bench_permutation.py --metrics all
    python benchmarks/bench_permutation.py --threads 1    # one BLAS/OpenMP thread (steadier on a busy machine)
    # the default experiment's regime: hundreds of pairs, more dimensions than pairs
    python benchmarks/bench_permutation.py --n 600 --d 576 --d-b 640 --metrics all --naive-permutations 20
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def synthetic_decoders(n: int, d_a: int, d_b: int, seed: int):
    """Matched unit-norm rows: Y is a random linear image of X plus noise (like two SAEs' decoders)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d_a))
    Y = X @ rng.standard_normal((d_a, d_b)) / np.sqrt(d_a) + 0.7 * rng.standard_normal((n, d_b))
    return X / np.linalg.norm(X, axis=1, keepdims=True), Y / np.linalg.norm(Y, axis=1, keepdims=True)


def kept_components(matrix, variance: float) -> int:
    import numpy as np

    singular_values = np.linalg.svd(matrix - matrix.mean(axis=0), compute_uv=False)
    cumulative = np.cumsum(singular_values**2) / np.sum(singular_values**2)
    return int(np.searchsorted(cumulative, variance - 1e-12)) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n=1500, d=256, 200 permutations, 10 naive")
    parser.add_argument("--n", type=int, default=5000, help="matched pairs")
    parser.add_argument("--d", type=int, default=768, help="width of X (and of Y unless --d-b)")
    parser.add_argument("--d-b", type=int, default=None, help="width of Y (default: --d)")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--naive-permutations", type=int, default=5,
                        help="permutations the baseline is timed on (then extrapolated)")
    parser.add_argument("--metrics", default="svcca,rsa", help="comma-separated, or 'all'")
    parser.add_argument("--variance", type=float, default=0.99, help="svcca variance kept")
    parser.add_argument("--components", type=int, default=None, help="svcca components (1 = the paper's)")
    parser.add_argument("--threads", type=int, default=None, help="BLAS and OpenMP threads (default: library's)")
    args = parser.parse_args()
    if args.threads:
        # Thread pools read these when numpy and torch load, so set them before importing either.
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(args.threads)
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(SRC))
    from sae_universality import similarity

    if args.quick:
        args.n, args.d, args.permutations, args.naive_permutations = 1500, 256, 200, 10
    names = list(similarity.METRICS) if args.metrics == "all" else args.metrics.split(",")
    naive_count = min(args.naive_permutations, args.permutations)

    d_b = args.d_b or args.d
    X, Y = synthetic_decoders(args.n, args.d, d_b, seed=0)
    options = {"svcca": {"variance": args.variance, "components": args.components}}
    permutations = similarity.draw_permutations(args.n, args.permutations, seed=0)
    print(f"threads: torch {torch.get_num_threads()}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print(f"n={args.n} pairs, d={args.d} vs {d_b}, {args.permutations} permutations; baseline timed on "
          f"{naive_count} permutations and extrapolated x{args.permutations / naive_count:g}")
    if "svcca" in names:
        kept = args.components or f"{kept_components(X, args.variance)} / {kept_components(Y, args.variance)}"
        print(f"svcca keeps {kept} components of X / Y (variance={args.variance}, components={args.components})")
    header = f"{'metric':<13}{'fast s':>9}{'naive s/perm':>14}{'naive s (extrap.)':>19}{'speedup':>9}{'max |diff|':>12}"
    print(header)
    print("-" * len(header))
    for name in names:
        metric_options = options.get(name, {})
        start = time.perf_counter()
        fast = similarity.permutation_null(name, X, Y, permutations=permutations, **metric_options)
        fast_seconds = time.perf_counter() - start

        shuffles = permutations[:naive_count]
        if name == "heldout_svcca":  # its null shuffles pairs within its (default) folds
            labels = similarity.heldout_folds(args.n, 5)
            shuffles = [similarity.within_fold_permutation(p, labels) for p in shuffles]
        start = time.perf_counter()
        naive = np.array([similarity.compute_metric(name, X, Y[p], **metric_options) for p in shuffles])
        naive_per_permutation = (time.perf_counter() - start) / naive_count
        naive_seconds = naive_per_permutation * args.permutations

        difference = float(np.max(np.abs(fast[:naive_count] - naive)))
        print(f"{name:<13}{fast_seconds:>9.2f}{naive_per_permutation:>14.3f}{naive_seconds:>19.1f}"
              f"{naive_seconds / fast_seconds:>8.1f}x{difference:>12.1e}", flush=True)
    print("naive s (extrap.) = naive s/perm x permutations; fast s includes the one-time decompositions.")


if __name__ == "__main__":
    main()
