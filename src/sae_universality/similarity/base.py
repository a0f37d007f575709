"""What every similarity measure shares: input checks, centering, and the `Metric` record.

Measure modules import only this (and `kernels`); `registry` gathers them into `METRICS`.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

# Names of the transforms of one side that a metric may be invariant to (see `Metric.invariances`).
INVARIANCES = (
    "orthogonal_transform",  # Y -> Y @ Q, Q orthogonal
    "isotropic_scaling",  # Y -> c * Y, c > 0
    "invertible_linear_transform",  # Y -> Y @ M, M invertible
    "translation",  # Y -> Y + t, the same vector t added to every row
    "column_permutation",  # Y -> Y[:, perm]
)


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _as_matrix(values, name: str) -> np.ndarray:
    """A finite float64 (rows, columns) numpy copy of a numpy array or (any-device) torch tensor."""
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported: never import it here
    if torch is not None and isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    matrix = np.array(values, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix (one row per feature), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} contains NaN or infinite values; drop or repair those features first")
    return matrix


def _check_pair(X, Y, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validate two matched matrices: same number of rows (pairs), at least `min_rows` of them."""
    X = _as_matrix(X, "X")
    Y = _as_matrix(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; row i of each must be pair i")
    if X.shape[0] < min_rows:
        raise ValueError(f"this metric needs at least {min_rows} pairs, got {X.shape[0]}")
    return X, Y


def _center_columns(matrix: np.ndarray) -> np.ndarray:
    return matrix - matrix.mean(axis=0, keepdims=True)


def _check_positive_integer(value, what: str, none_allowed: bool = False) -> None:
    if value is None and none_allowed:
        return
    message = f"{what} must be a positive integer{' or None' if none_allowed else ''}, got {value!r}"
    if isinstance(value, bool) or value is None:
        raise TypeError(message)
    if int(value) != value or value < 1:
        raise ValueError(message)


# ----------------------------------------------------------------------------------------------
# The record of a measure
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A similarity measure and its declared properties (ReSi style); calling it calls `function`."""

    name: str
    """Key in `METRICS`."""
    function: Callable[..., float]
    """`function(X, Y, **options) -> float`."""
    prepare_null: Callable
    """`prepare_null(X, Y, device, **options)` -> evaluator of the metric on (m, n) row permutations of Y."""
    invariances: Mapping[str, Mapping[str, object]]
    """Transforms of one side (names from `INVARIANCES`) that leave the score unchanged, each with the
    options it needs (empty mapping: always)."""
    symmetric: bool
    """f(X, Y) == f(Y, X)."""
    larger_is_more_similar: bool = True
    """Every registered metric grows with similarity."""
    description: str = ""
    """One line for reports."""
    options: tuple[str, ...] = field(init=False)
    """Keyword options `function` accepts besides X and Y."""

    def __post_init__(self) -> None:
        parameters = list(inspect.signature(self.function).parameters)[2:]
        object.__setattr__(self, "options", tuple(parameters))

    def __call__(self, X, Y, **options) -> float:
        return self.function(X, Y, **options)
