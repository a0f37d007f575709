"""Similarity of two matched feature spaces, its permutation null, and semantic subspaces.

METHOD.md sections 6-8. Inputs everywhere are two matrices with one row per
matched pair: `X = W_dec_A[idx_A]` (n x d_a) and `Y = W_dec_B[idx_B]`
(n x d_b); row i of X and row i of Y are the two halves of pair i. Every
metric is a pure function `f(X, Y) -> float` where larger means more similar.

Metrics (registered in `METRICS`, dispatched by `compute_metric`):

- `svcca`: SVD-reduce each side, then the mean canonical correlation (CCA), in-sample.
- `heldout_svcca`: the same fit on some pairs and measured on the others (k-fold): about 0 at chance.
- `rsa`: Spearman correlation of the two n x n row-correlation matrices.
- `linear_cka` / `debiased_cka`: linear centered kernel alignment.
- `mutual_knn`: overlap of cosine nearest-neighbour sets (Huh et al. 2024).
- `procrustes`: similarity after the best orthogonal map.

Pairing null (`permutation_test`, `permutation_null`): the rows of Y are
shuffled against X. Everything a row permutation leaves unchanged (SVD bases,
correlation matrices and their ranks, Gram matrices, neighbour lists) is
computed once; each permutation then costs only a gather plus a small product.
The fast null equals a recompute-from-scratch to float tolerance.

Layout: `base` (input checks, `Metric`); one module per measure family with its
null kernel (`cca`, `representational_similarity`, `cka`, `knn`,
`orthogonal_procrustes`); `kernels` (null kernels several measures share);
`registry` (`METRICS`, `compute_metric`); `nulls` (permutations, null, p-value,
test); `baselines` (random subsets, interval, p adjustment, normalized score).
Misuse of these functions (shapes, NaN, option values) raises ValueError or TypeError.
"""

from .base import INVARIANCES, Metric
from .baselines import P_ADJUSTMENTS, above_chance, adjust_p_values, bootstrap_interval, normalized_score, random_subset_baseline
from .cca import HELDOUT_COMPONENT_GRID, heldout_folds, heldout_svcca, heldout_svcca_choices, svcca, within_fold_permutation
from .cka import debiased_cka, linear_cka
from .knn import mutual_knn
from .nulls import draw_permutations, permutation_null, permutation_p_value, permutation_test
from .orthogonal_procrustes import procrustes
from .registry import METRICS, compute_metric
from .representational_similarity import rsa

__all__ = [
    "HELDOUT_COMPONENT_GRID",
    "INVARIANCES",
    "P_ADJUSTMENTS",
    "METRICS",
    "Metric",
    "above_chance",
    "adjust_p_values",
    "bootstrap_interval",
    "compute_metric",
    "debiased_cka",
    "draw_permutations",
    "heldout_folds",
    "heldout_svcca",
    "heldout_svcca_choices",
    "linear_cka",
    "mutual_knn",
    "normalized_score",
    "permutation_null",
    "permutation_p_value",
    "permutation_test",
    "procrustes",
    "random_subset_baseline",
    "rsa",
    "svcca",
    "within_fold_permutation",
]
