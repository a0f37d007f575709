"""Benchmark: streamed sparse Pearson correlation against the dense z-score baseline.

Codes are TopK-like (k active latents per position out of F, heavy-tailed
feature frequencies); B's codes are A's with permuted features, noisy values
and some random latents, so there are real correlations to find.

Dense baseline: the straightforward method, z-score every column (means and
standard deviations from one pass), then accumulate Z_A^T Z_B over blocks of
positions in float32 (BLAS matmul). The full 16k x 16k dense problem would
take over 10 minutes here, so the baseline runs on the first `--dense-columns`
columns of each side (all positions) and its time is extrapolated to the full
width: the densify/z-score phase linearly in columns, the matmul phase with
F_A x F_B. The sparse method is timed both on the full problem and on the same
subset, so one ratio is measured like for like and one is extrapolated.

Memory: the sparse method holds a float64 F_B x F_A accumulator (16k x 16k:
2 GiB) plus the float32 result (1 GiB). Its first run also pays for touching
that fresh memory, which is slow inside a VM; a repeat is printed beside it.

Correctness: the sparse result is compared with the float32 dense baseline on
the subset and with an independent float64 dense computation (explicit
z-scoring) on a smaller subset.

Run: PYTHONPATH=src python benchmarks/bench_matching.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from sae_universality.matching import best_matches, pearson_correlation


def topk_codes(n_positions: int, n_features: int, k: int, seed: int) -> tuple[sp.csr_array, sp.csr_array]:
    """(A, B) sparse codes (n_positions, n_features) with about k nonzeros per row."""
    rng = np.random.default_rng(seed)
    # heavy-tailed feature frequencies, as in trained SAEs
    weights = 1.0 / (np.arange(n_features) + 20.0) ** 0.7
    cumulative = np.cumsum(weights) / weights.sum()
    features_a = np.searchsorted(cumulative, rng.random((n_positions, k)))
    features_a = rng.permutation(n_features)[features_a]
    values_a = rng.lognormal(0.0, 0.5, (n_positions, k))
    permutation = rng.permutation(n_features)
    n_shared = (3 * k) // 4  # B repeats 3/4 of A's latents, permuted, plus random ones
    features_b = np.concatenate(
        [permutation[features_a[:, :n_shared]], rng.integers(0, n_features, (n_positions, k - n_shared))], axis=1
    )
    values_b = np.concatenate(
        [
            values_a[:, :n_shared] * rng.lognormal(0.0, 0.3, (n_positions, n_shared)),
            rng.lognormal(0.0, 0.5, (n_positions, k - n_shared)),
        ],
        axis=1,
    )
    indptr = np.arange(0, n_positions * k + 1, k)

    def build(features: np.ndarray, values: np.ndarray) -> sp.csr_array:
        # copies: sum_duplicates rewrites indices and indptr in place, and indptr is shared
        codes = sp.csr_array(
            (values.ravel().astype(np.float32), features.ravel().copy(), indptr.copy()), shape=(n_positions, n_features)
        )
        codes.sum_duplicates()  # a latent drawn twice in a row counts once
        return codes

    return build(features_a, values_a), build(features_b, values_b)


def dense_zscore_correlation(
    codes_a: sp.csr_array, codes_b: sp.csr_array, block_rows: int, dtype
) -> tuple[np.ndarray, float, float]:
    """Baseline: z-score columns, then Z_A^T Z_B / n over position blocks. Returns (corr, t_zscore, t_matmul)."""
    n = codes_a.shape[0]
    t_zscore = t_matmul = 0.0
    start_time = time.perf_counter()
    moments = []
    for codes in (codes_a, codes_b):
        total = np.zeros(codes.shape[1], dtype=np.float64)
        total_sq = np.zeros(codes.shape[1], dtype=np.float64)
        for start in range(0, n, block_rows):
            block = codes[start : start + block_rows].toarray().astype(np.float64)
            total += block.sum(axis=0)
            total_sq += (block**2).sum(axis=0)
        mean = total / n
        std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
        with np.errstate(divide="ignore"):
            moments.append((mean.astype(dtype), np.where(std > 0, 1.0 / std, np.nan).astype(dtype)))
    t_zscore += time.perf_counter() - start_time
    product = np.zeros((codes_a.shape[1], codes_b.shape[1]), dtype=dtype)
    for start in range(0, n, block_rows):
        tick = time.perf_counter()
        z_a = (codes_a[start : start + block_rows].toarray().astype(dtype) - moments[0][0]) * moments[0][1]
        z_b = (codes_b[start : start + block_rows].toarray().astype(dtype) - moments[1][0]) * moments[1][1]
        tock = time.perf_counter()
        product += z_a.T @ z_b
        t_zscore += tock - tick
        t_matmul += time.perf_counter() - tock
    return product / n, t_zscore, t_matmul


def float64_reference(codes_a: sp.csr_array, codes_b: sp.csr_array) -> np.ndarray:
    """Independent check: dense float64, explicit centering and norms."""
    dense_a = codes_a.toarray().astype(np.float64)
    dense_b = codes_b.toarray().astype(np.float64)
    centered_a = dense_a - dense_a.mean(axis=0)
    centered_b = dense_b - dense_b.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        norms = np.outer(np.linalg.norm(centered_a, axis=0), np.linalg.norm(centered_b, axis=0))
        return (centered_a.T @ centered_b) / norms


def max_abs_difference(left: np.ndarray, right: np.ndarray) -> float:
    both = ~np.isnan(left) & ~np.isnan(right)
    assert np.array_equal(np.isnan(left), np.isnan(right)), "NaN patterns differ"
    return float(np.abs(left[both] - right[both]).max()) if both.any() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (20k positions, 4096 latents)")
    parser.add_argument("--positions", type=int)
    parser.add_argument("--features", type=int)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--dense-columns", type=int, help="columns per side for the dense baseline")
    parser.add_argument("--reference-columns", type=int, default=512, help="columns per side for the float64 check")
    args = parser.parse_args()
    n_positions = args.positions or (20_000 if args.quick else 100_000)
    n_features = args.features or (4096 if args.quick else 16_384)
    dense_columns = min(args.dense_columns or (1024 if args.quick else 4096), n_features)
    reference_columns = min(args.reference_columns, dense_columns)

    codes_a, codes_b = topk_codes(n_positions, n_features, args.k, seed=0)
    print(f"codes: {n_positions} positions x {n_features} latents per side, k={args.k}, nnz A={codes_a.nnz}, B={codes_b.nnz}")
    print(f"accumulator: float64 {n_features}x{n_features} = {n_features**2 * 8 / 2**30:.2f} GiB (+ float32 result {n_features**2 * 4 / 2**30:.2f} GiB)")

    tick = time.perf_counter()
    correlation = pearson_correlation(codes_a, codes_b, device="numpy")
    t_sparse_full = time.perf_counter() - tick
    tick = time.perf_counter()
    pearson_correlation(codes_a, codes_b, device="numpy")
    t_sparse_warm = time.perf_counter() - tick
    # the first run pays for first-touching 3 GiB of fresh memory (slow in VMs); the ratio below uses it
    print(f"sparse streamed, full problem: {t_sparse_full:.2f} s (repeat, memory already mapped: {t_sparse_warm:.2f} s)")

    tick = time.perf_counter()
    matches = best_matches(codes_a, codes_b, feature_block=max(n_features // 4, 1), device="numpy")
    t_best = time.perf_counter() - tick
    print(f"best_matches, 4 feature blocks (1/4 of the memory): {t_best:.2f} s, mean max correlation {np.nanmean(matches.best_correlation):.3f}")

    subset_a, subset_b = codes_a[:, :dense_columns], codes_b[:, :dense_columns]
    tick = time.perf_counter()
    correlation_subset_sparse = pearson_correlation(subset_a, subset_b, device="numpy")
    t_sparse_subset = time.perf_counter() - tick

    dense_subset, t_zscore, t_matmul = dense_zscore_correlation(subset_a, subset_b, block_rows=4096, dtype=np.float32)
    t_dense_subset = t_zscore + t_matmul
    width_ratio = n_features / dense_columns
    t_dense_full = t_zscore * width_ratio + t_matmul * width_ratio**2
    print(
        f"subset {dense_columns}x{dense_columns}: sparse {t_sparse_subset:.2f} s, dense float32 {t_dense_subset:.2f} s "
        f"(z-score {t_zscore:.2f} s + matmul {t_matmul:.2f} s) -> measured ratio {t_dense_subset / t_sparse_subset:.1f}x"
    )
    print(
        f"full {n_features}x{n_features}: sparse {t_sparse_full:.2f} s measured, dense {t_dense_full:.0f} s extrapolated "
        f"(z-score x{width_ratio:.0f}, matmul x{width_ratio**2:.0f}) -> ratio {t_dense_full / t_sparse_full:.0f}x"
    )

    reference = float64_reference(codes_a[:, :reference_columns], codes_b[:, :reference_columns])
    difference_dense = max_abs_difference(correlation[:dense_columns, :dense_columns], dense_subset)
    difference_full = max_abs_difference(correlation[:reference_columns, :reference_columns], reference)
    difference_subset = max_abs_difference(
        correlation_subset_sparse[:reference_columns, :reference_columns], reference
    )
    print(f"max |sparse - dense float32| on {dense_columns}x{dense_columns}: {difference_dense:.2e}")
    print(
        f"max |sparse - float64 reference| on {reference_columns}x{reference_columns}: "
        f"{difference_full:.2e} (full run), {difference_subset:.2e} (subset run)"
    )
    agrees = max(difference_dense, difference_full, difference_subset) < 1e-5
    print(f"all differences < 1e-5: {'yes' if agrees else 'NO'}")
    print(
        f"max |float32 dense baseline - float64 reference|: "
        f"{max_abs_difference(dense_subset[:reference_columns, :reference_columns], reference):.2e}"
    )


if __name__ == "__main__":
    main()
