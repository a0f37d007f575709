"""The SAE stage of the workflow, per (model, layer, SAE): train or load, evaluate, encode.

Every SAE lands in the same place and format whatever its origin:
`results/saes/{model}/layer{layer}/{sae}/` in SAELens layout, where `sae` is
`seed<N>` (trained here) or `pretrained` (a published release, converted), so
the later stages never ask where an SAE came from.

Positions are split by context window: every `held_out_every`-th window is
held out from training and used for the quality table, so no text a model
was evaluated on was seen by its SAE.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..io import atomic_path, open_hdf5
from ..settings import TrainSettings


def held_out_mask(window_index: np.ndarray, held_out_every: int) -> np.ndarray:
    """True for positions of held-out windows (every `held_out_every`-th window, counting from 0)."""
    return (np.asarray(window_index) % held_out_every) == held_out_every - 1


def split_rows(cache_path: str | Path, held_out_every: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of an activation cache."""
    with open_hdf5(cache_path) as cache:
        held_out = held_out_mask(cache["window_index"][:], held_out_every)
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def sae_settings(defaults: dict, model_entry: dict) -> dict:
    """The `saes.train` settings with a model's own `sae.train` overrides applied."""
    return {**defaults, **model_entry.get("sae", {}).get("train", {})}


def train_on_cache(
    cache_path: str | Path,
    out_dir: str | Path,
    curve_path: str | Path,
    checkpoint_dir: str | Path,
    *,
    settings: TrainSettings,
    seed: int,
    held_out_every: int,
    model_name: str,
    layer: int,
) -> dict:
    """Train one SAE on the training windows of a cache; save it (SAELens layout) and its curve.

    A rerun after a kill resumes from `checkpoint_dir` and ends with the same weights.
    Returns a summary (d_in, d_sae, steps, tokens). The model name and layer label the saved SAE.
    """
    from .formats import save_sae
    from .architectures import SaeConfig
    from ..activations.batches import iter_hdf5_batches
    from .training import train_sae

    train_rows, _ = split_rows(cache_path, held_out_every)
    with open_hdf5(cache_path) as cache:
        d_in = cache["activations"].shape[1]
    batch_size = settings.batch_size
    if len(train_rows) < batch_size:
        raise UserError(
            f"{model_name} layer {layer}: {len(train_rows)} training positions, fewer than saes.train.batch_size={batch_size}; "
            "raise corpus.token_budget or lower the batch size"
        )
    d_sae = settings.d_sae_for(d_in)
    sae_cfg = SaeConfig(
        d_in=d_in, d_sae=d_sae, architecture=settings.architecture, k=settings.k,
        l1_coefficient=settings.l1_coefficient, model_name=model_name,
        hook_name=f"blocks.{layer}.hook_resid_post",
    )
    train_cfg = settings.trainer_config(len(train_rows), seed)
    make_batches = functools.partial(iter_hdf5_batches, cache_path, batch_size, seed, train_rows,
                                     epochs=settings.epochs)
    result = train_sae(lambda start: make_batches(start_batch=start), sae_cfg, train_cfg, checkpoint_dir)
    save_sae(result.sae, out_dir)
    curve = result.curve.assign(model=model_name, layer=layer, sae=f"seed{seed}")
    with atomic_path(curve_path, suffix=".tsv") as temporary:
        curve.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    return {"d_in": d_in, "d_sae": d_sae, "n_steps": train_cfg.n_steps, "tokens": train_cfg.n_steps * batch_size}


def load_pretrained(spec: dict, layer: int, out_dir: str | Path, expected_d_in: int | None) -> None:
    """Load a published SAE (`{format, path or repo, id}`, `{layer}` filled in) and save it in SAELens layout."""
    from .formats import load_sae, save_sae

    sae_id = spec.get("id")
    sae_id = sae_id.format(layer=layer) if sae_id else None
    sae = load_sae(spec["format"], path=spec.get("path"), repo=spec.get("repo"), id=sae_id, expected_d_in=expected_d_in)
    save_sae(sae, out_dir)


def cache_width(cache_path: str | Path) -> int:
    with open_hdf5(cache_path) as cache:
        return int(cache["activations"].shape[1])


def evaluate(
    sae_dirs: dict[str, str | Path],
    cache_path: str | Path,
    manifest_path: str | Path,
    windows_path: str | Path,
    out_path: str | Path,
    *,
    model_name: str,
    layer: int,
    held_out_every: int,
    loss_windows: int,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Quality of the SAEs of one (model, layer) on held-out positions -> a TSV with a row per SAE.

    `sae_dirs` maps SAE names (seed0, pretrained, ...) to saved SAEs. Per SAE:
    fvu, explained_variance, mean_l0, dead_fraction over every held-out
    position; downstream loss (clean, SAE spliced in at the layer, zero
    ablation, fraction recovered, and loss_tokens: how many predicted tokens) over
    the first `loss_windows` held-out windows. The model is loaded once and its clean and zero-ablation passes
    are shared by the SAEs.

    Its parameters are the four inputs the job reads (SAEs, cache, model, windows), its
    one output, the labels of its rows (model_name, layer), and the two settings that
    pick the held-out text (`held_out_every` must equal training's, or the SAE would
    be judged on text it was trained on; `loss_windows`).
    """
    import torch

    from ..text.corpus import read_windows
    from ..devices import torch_device
    from ..models.sources import load_model
    from .formats import load_sae
    from ..activations.batches import read_rows
    from .evaluation import downstream_losses, evaluate_saes

    saes = {name: load_sae("saelens", path=path) for name, path in sae_dirs.items()}
    _, held_out_rows = split_rows(cache_path, held_out_every)
    if len(held_out_rows) == 0:
        raise UserError(f"{model_name} layer {layer}: no held-out positions; raise corpus.token_budget or lower saes.held_out_every")

    def held_out_batches():
        with open_hdf5(cache_path) as cache:
            data = cache["activations"]
            for start in range(0, len(held_out_rows), batch_size):
                yield read_rows(data, held_out_rows[start:start + batch_size])

    rows = [{"model": model_name, "layer": layer, "sae": name, "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae,
             "architecture": sae.cfg.architecture, "k": sae.cfg.k, **reconstruction}
            for (name, sae), reconstruction in zip(saes.items(), evaluate_saes(list(saes.values()), held_out_batches()))]
    no_loss = {"ce_clean": np.nan, "ce_sae": np.nan, "ce_zero": np.nan, "fraction_recovered": np.nan, "loss_tokens": 0}
    losses = [no_loss] * len(rows)
    if loss_windows > 0:
        device = torch_device()
        model, tokenizer, _ = load_model(manifest_path, device=device)
        windows = [w for w in read_windows(windows_path) if held_out_mask(w.window_index, held_out_every)][:loss_windows]
        from ..activations.cache import prepare_tokenizer, tokenize_windows

        prepare_tokenizer(tokenizer)
        batch = tokenize_windows(tokenizer, windows)
        losses = downstream_losses(
            model, batch.input_ids.to(device), layer, [sae.to(device) for sae in saes.values()],
            attention_mask=batch.attention_mask.to(device), splice_mask=torch.from_numpy(batch.keep).to(device),
        )
    table = pd.DataFrame([{**quality, **loss} for quality, loss in zip(rows, losses)])
    with atomic_path(out_path, suffix=".tsv") as temporary:
        table.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    print(table.to_string(), file=sys.stderr)
    return table


def collect_tables(paths: list[str | Path], out_path: str | Path) -> pd.DataFrame:
    """Concatenate one-row (or many-row) TSVs into one table."""
    table = pd.concat([pd.read_csv(path, sep="\t") for path in paths], ignore_index=True)
    with atomic_path(out_path, suffix=".tsv") as temporary:
        table.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    return table


def plot_training_curves(curve_paths: list[str | Path], out_path: str | Path) -> None:
    """One row of panels per SAE: loss, FVU, mean L0 and dead fraction over training steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [pd.read_csv(path, sep="\t") for path in curve_paths]
    metrics = ["loss", "fvu", "mean_l0", "dead_fraction"]
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for curve in curves:
        label = f"{curve['model'].iloc[0]} L{curve['layer'].iloc[0]} {curve['sae'].iloc[0]}"
        for axis, metric in zip(axes[0], metrics):
            axis.plot(curve["step"], curve[metric], label=label, linewidth=1)
    for axis, metric in zip(axes[0], metrics):
        axis.set_title(metric)
        axis.set_xlabel("step")
    axes[0][0].set_yscale("log")
    axes[0][-1].legend(fontsize=6, loc="upper right")
    figure.tight_layout()
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def encode(sae_dir: str | Path, cache_path: str | Path, out_path: str | Path, pre_activations: bool) -> None:
    """Sparse codes (or dense pre-activations) of every cached position (see codes.py)."""
    from .codes import encode_cache_to_codes
    from .formats import load_sae

    encode_cache_to_codes(load_sae("saelens", path=sae_dir), cache_path, out_path, pre_activations=pre_activations)
