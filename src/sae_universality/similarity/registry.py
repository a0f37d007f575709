"""`METRICS`: every measure with its permutation null and declared properties; `compute_metric` dispatches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .base import Metric
from .cca import _null_heldout_svcca, _null_svcca, heldout_svcca, svcca
from .cka import _null_debiased_cka, _null_linear_cka, debiased_cka, linear_cka
from .knn import _null_mutual_knn, mutual_knn
from .orthogonal_procrustes import _null_procrustes, procrustes
from .representational_similarity import _null_rsa, rsa

_ALWAYS: Mapping[str, object] = {}
# Rotations, reflections, scale, translation and column order of one side: what the
# centred, rotation-invariant metrics ignore.
_RIGID_MOTIONS = {"orthogonal_transform": _ALWAYS, "isotropic_scaling": _ALWAYS, "translation": _ALWAYS,
                  "column_permutation": _ALWAYS}

METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            "svcca", svcca, _null_svcca,
            invariances={**_RIGID_MOTIONS, "invertible_linear_transform": {"variance": 1.0}},
            symmetric=True,
            description="mean canonical correlation after SVD reduction (components=1: the paper's numbers)",
        ),
        Metric(
            "heldout_svcca", heldout_svcca, _null_heldout_svcca,
            invariances=_RIGID_MOTIONS,
            symmetric=True,
            description="mean canonical correlation on held-out pairs (components chosen on the fit folds)",
        ),
        Metric(
            "rsa", rsa, _null_rsa,
            invariances={"isotropic_scaling": _ALWAYS, "column_permutation": _ALWAYS},
            symmetric=True,
            description="Spearman correlation of the row-correlation matrices",
        ),
        Metric(
            "linear_cka", linear_cka, _null_linear_cka,
            invariances=_RIGID_MOTIONS,
            symmetric=True,
            description="linear centered kernel alignment",
        ),
        Metric(
            "debiased_cka", debiased_cka, _null_debiased_cka,
            invariances=_RIGID_MOTIONS,
            symmetric=True,
            description="linear CKA with the unbiased HSIC estimator (Song et al. 2012)",
        ),
        Metric(
            "mutual_knn", mutual_knn, _null_mutual_knn,
            invariances={"orthogonal_transform": _ALWAYS, "isotropic_scaling": _ALWAYS,
                         "column_permutation": _ALWAYS},
            symmetric=True,
            description="mean shared fraction of k cosine nearest neighbours",
        ),
        Metric(
            "procrustes", procrustes, _null_procrustes,
            invariances=_RIGID_MOTIONS,
            symmetric=True,
            description="nuclear norm of X^T Y after centering and unit Frobenius norm (1 - d^2/2)",
        ),
    )
}


def _metric(name: str) -> Metric:
    if name not in METRICS:
        raise ValueError(f"unknown similarity metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[name]


def _options_for(metric: Metric, options: Mapping[str, object]) -> dict[str, object]:
    return {key: value for key, value in options.items() if key in metric.options}


def _route_options(names: Sequence[str], options: Mapping[str, object]) -> None:
    """Fail on an option no requested metric accepts (a typo would otherwise be ignored silently)."""
    accepted = {option for name in names for option in _metric(name).options}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"option {unknown[0]!r} is not accepted by metrics {', '.join(names)}; "
            f"accepted: {', '.join(sorted(accepted)) or 'none'}"
        )


def compute_metric(name: str, X, Y, **options) -> float:
    """`METRICS[name](X, Y, **options)`: one similarity score of two (n, d) matched matrices."""
    return _metric(name)(X, Y, **options)

