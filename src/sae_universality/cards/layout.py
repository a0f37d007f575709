"""Two-dimensional layouts of an SAE's decoder directions, for the linked map of a layer pair.

The map draws each model's features as points placed by their decoder directions, as the paper's
`pythia_feature_mapping_viz.py` does with UMAP. A layout is computed once per (model, layer, SAE) and shared by
every pair that SAE takes part in. Directions are compared by angle (cosine): a decoder row's norm says how
strongly the feature writes, not what it writes.

Layouts (config: cards.map_layout), each name -> function of (unit directions, settings) -> (n, 2):
- "umap": UMAP (umap-learn) on cosine distance, seeded: the same SAE gives the same picture.
- "pca": the first two principal components of the unit directions. Exact and instant, but it shows only the two
  directions of largest variance, so neighbourhoods in it are looser than UMAP's; the fallback where umap-learn
  does not install, and what the tests use where they need a layout in milliseconds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import UserError
from ..io import write_tsv
from ..settings import CardSettings


def _unit_rows(directions: np.ndarray) -> np.ndarray:
    directions = np.asarray(directions, dtype=np.float64)
    norms = np.linalg.norm(directions, axis=1, keepdims=True)
    return directions / np.where(norms > 0, norms, 1.0)


def pca_layout(directions: np.ndarray, settings: CardSettings) -> np.ndarray:
    """The unit directions projected on their first two principal axes, each axis's sign fixed so that its
    largest loading is positive (an SVD's signs are otherwise arbitrary)."""
    centred = _unit_rows(directions)
    centred = centred - centred.mean(axis=0)
    if len(centred) < 2:
        return np.zeros((len(centred), 2))
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    axes = axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    layout = centred @ axes.T
    return np.pad(layout, ((0, 0), (0, 2 - layout.shape[1])))


def umap_layout(directions: np.ndarray, settings: CardSettings) -> np.ndarray:
    """UMAP of the unit directions on cosine distance, seeded by cards.map_seed (one thread: seeded UMAP runs
    serially anyway, and the workflow gives the job one core)."""
    try:
        import umap
    except ImportError as error:
        raise UserError(f"cards.map_layout umap needs umap-learn ({error}); run `make install`, or set "
                        "cards.map_layout: pca") from None
    unit = _unit_rows(directions)
    if len(unit) <= settings.map_neighbors + 1:  # too few points for a neighbour graph: PCA says as much
        return pca_layout(unit, settings)
    reducer = umap.UMAP(n_neighbors=settings.map_neighbors, min_dist=settings.map_min_dist, metric="cosine",
                        random_state=settings.map_seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(unit), dtype=np.float64)


LAYOUTS: dict[str, Callable[[np.ndarray, CardSettings], np.ndarray]] = {"umap": umap_layout, "pca": pca_layout}
"""Layout name (the schema's cards.map_layout enum) -> function."""


def feature_layout(directions: np.ndarray, settings: CardSettings) -> np.ndarray:
    """(n, 2) map coordinates of n decoder directions by the configured layout."""
    if settings.map_layout not in LAYOUTS:
        raise UserError(f"cards.map_layout: unknown layout {settings.map_layout!r}; use one of {', '.join(LAYOUTS)}")
    return LAYOUTS[settings.map_layout](directions, settings)


def write_layout(sae_dir: str | Path, out_path: str | Path, settings: CardSettings) -> pd.DataFrame:
    """The layout of a saved SAE's decoder rows -> TSV (feature, x, y)."""
    from ..similarity.stage import decoder_rows

    layout = feature_layout(decoder_rows(sae_dir), settings)
    table = pd.DataFrame({"feature": np.arange(len(layout)), "x": layout[:, 0], "y": layout[:, 1]})
    write_tsv(table, out_path)
    print(f"{settings.map_layout} layout of {len(table)} features", file=sys.stderr)
    return table
