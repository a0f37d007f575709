"""The SAE stage of the workflow, per (model, layer, SAE): train or load, evaluate, encode.

Every SAE lands in the same place and format whatever its origin:
`results/saes/{model}/layer{layer}/{sae}/` in SAELens layout, where `sae` is
`seed<N>` (trained here) or `pretrained` (a published release, converted), so
the later stages never ask where an SAE came from.

Positions are split by context window: every `held_out_every`-th window is
held out from training and used for the quality table, so no text a model
was evaluated on was seen by its SAE.

A job reads its settings from `SaeSettings` (config: saes); `ModelLayer` says
which (model, layer) it works on and labels what it writes.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..io import atomic_path, open_hdf5, write_tsv
from ..settings import SaeSettings


@dataclass(frozen=True)
class ModelLayer:
    """The (model, layer) a job works on; it labels the SAEs, curves and table rows the job writes."""

    model_name: str
    """Model id (config: models)."""
    layer: int
    """Block whose residual-stream output the SAEs read."""

    @property
    def hook_name(self) -> str:
        """The hook point in SAELens's naming, stored with a saved SAE."""
        return f"blocks.{self.layer}.hook_resid_post"


@dataclass(frozen=True)
class TrainOutputs:
    """Where the training of one SAE writes."""

    sae_dir: str | Path
    """The trained SAE, in SAELens layout."""
    curve_path: str | Path
    """Its training curve (TSV)."""
    checkpoint_dir: str | Path
    """Its checkpoints; a rerun after a kill resumes from them."""


@dataclass(frozen=True)
class EvaluationInputs:
    """What judging the SAEs of one (model, layer) reads."""

    sae_dirs: Mapping[str, str | Path]
    """SAE name (seed0, pretrained, ...) -> saved SAE."""
    cache_path: str | Path
    """The layer's activation cache."""
    downstream_path: str | Path
    """The model's downstream-loss table (`downstream_of_model`), whose rows for this layer are joined."""


@dataclass(frozen=True)
class DownstreamInputs:
    """What the downstream loss of every SAE of one model reads."""

    sae_dirs: Mapping[int, Mapping[str, str | Path]]
    """Layer -> SAE name -> saved SAE."""
    manifest_path: str | Path
    """The model's manifest (to load it)."""
    windows_path: str | Path
    """The corpus windows (the held-out text of the loss)."""


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


def train_on_cache(cache_path: str | Path, outputs: TrainOutputs, model_layer: ModelLayer, seed: int,
                   settings: SaeSettings) -> dict:
    """Train one SAE on the training windows of a cache; save it (SAELens layout) and its curve.

    Reads settings.train (how to train) and settings.held_out_every (which windows
    are not training's). A rerun after a kill resumes from `outputs.checkpoint_dir`
    and ends with the same weights. Returns a summary (d_in, d_sae, n_steps, tokens).
    """
    from .formats import save_sae
    from .architectures import SaeConfig
    from ..activations.batches import BatchOrder, iter_hdf5_batches
    from .training import TrainConfig, train_sae

    train = settings.train
    train_rows, _ = split_rows(cache_path, settings.held_out_every)
    with open_hdf5(cache_path) as cache:
        d_in = cache["activations"].shape[1]
    batch_size = train.batch_size
    if len(train_rows) < batch_size:
        raise UserError(
            f"{model_layer.model_name} layer {model_layer.layer}: {len(train_rows)} training positions, "
            f"fewer than saes.train.batch_size={batch_size}; raise corpus.token_budget or lower the batch size"
        )
    sae_cfg = SaeConfig.from_settings(train, d_in, model_name=model_layer.model_name, hook_name=model_layer.hook_name)
    train_cfg = TrainConfig.for_rows(train, len(train_rows), seed)
    make_batches = functools.partial(iter_hdf5_batches, cache_path, BatchOrder(batch_size, seed, epochs=train.epochs), train_rows)
    result = train_sae(lambda start: make_batches(start_batch=start), sae_cfg, train_cfg, outputs.checkpoint_dir)
    save_sae(result.sae, outputs.sae_dir)
    curve = result.curve.assign(model=model_layer.model_name, layer=model_layer.layer, sae=f"seed{seed}")
    write_tsv(curve, outputs.curve_path)
    return {"d_in": d_in, "d_sae": sae_cfg.d_sae, "n_steps": train_cfg.n_steps, "tokens": train_cfg.n_steps * batch_size}


def untrained_on_cache(cache_path: str | Path, sae_dir: str | Path, model_layer: ModelLayer, seed: int,
                       settings: SaeSettings) -> dict:
    """Save an untrained dictionary (`architectures.untrained_dictionary`) of the trained SAEs' width, k and
    architecture for one (model, layer), centred on the mean of the cache's training positions.

    It goes through encoding, matching and scoring like a trained SAE: what it finds across two models is
    what the method finds without any SAE training. Returns a summary (d_in, d_sae, training positions).
    """
    from ..activations.batches import read_rows
    from .architectures import SaeConfig, untrained_dictionary
    from .formats import save_sae

    train_rows, _ = split_rows(cache_path, settings.held_out_every)
    with open_hdf5(cache_path) as cache:
        data = cache["activations"]
        d_in = data.shape[1]
        total = np.zeros(d_in)
        for start in range(0, len(train_rows), 65_536):
            total += read_rows(data, train_rows[start:start + 65_536]).sum(axis=0, dtype=np.float64)
    if not len(train_rows):
        raise UserError(f"{model_layer.model_name} layer {model_layer.layer}: no training positions to centre "
                        "the untrained dictionary on; raise corpus.token_budget")
    cfg = SaeConfig.from_settings(settings.train, d_in, model_name=model_layer.model_name,
                                  hook_name=model_layer.hook_name)
    save_sae(untrained_dictionary(cfg, total / len(train_rows), seed), sae_dir)
    return {"d_in": d_in, "d_sae": cfg.d_sae, "positions": len(train_rows)}


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


DOWNSTREAM_COLUMNS = ("ce_clean", "ce_sae", "ce_zero", "fraction_recovered", "loss_tokens", "uniform_loss")


def sae_dirs_by_layer(paths) -> dict[int, dict[str, str]]:
    """results/saes/{model}/layer{L}/{sae} paths -> {L: {sae: path}}, in the order given."""
    grouped: dict[int, dict[str, str]] = {}
    for path in map(Path, paths):
        grouped.setdefault(int(path.parent.name.removeprefix("layer")), {})[path.name] = str(path)
    return grouped


def downstream_of_model(inputs: DownstreamInputs, out_path: str | Path, model_name: str,
                        settings: SaeSettings) -> pd.DataFrame:
    """Downstream loss of every SAE of one model -> a TSV with a row per (layer, SAE).

    Over the first `settings.loss_windows` held-out windows: the clean loss, the
    loss with the SAE's reconstruction spliced in at its layer, with the layer
    zero-ablated, the fraction recovered, loss_tokens (how many predicted tokens)
    and uniform_loss (log of the vocabulary: a working model lies far below it).
    The model is loaded once and its clean pass serves every layer and SAE
    (`evaluation.downstream_losses_of_layers`). With loss_windows 0 the rows are
    NaN and the model is not loaded.
    """
    rows = [{"model": model_name, "layer": layer, "sae": name}
            for layer, dirs in inputs.sae_dirs.items() for name in dirs]
    if settings.loss_windows <= 0:
        table = pd.DataFrame([{**row, **dict.fromkeys(DOWNSTREAM_COLUMNS, np.nan), "loss_tokens": 0} for row in rows])
        write_tsv(table, out_path)
        return table
    import torch

    from ..activations.cache import prepare_tokenizer, tokenize_windows
    from ..devices import torch_device
    from ..models.sources import load_model
    from ..text.corpus import read_windows
    from .evaluation import downstream_losses_of_layers
    from .formats import load_sae

    device = torch_device()
    model, tokenizer, _ = load_model(inputs.manifest_path, device=device)
    windows = [w for w in read_windows(inputs.windows_path)
               if held_out_mask(w.window_index, settings.held_out_every)][:settings.loss_windows]
    if not windows:
        raise UserError(f"{model_name}: no held-out windows for the downstream loss; raise corpus.token_budget "
                        "or lower saes.held_out_every")
    prepare_tokenizer(tokenizer)
    batch = tokenize_windows(tokenizer, windows)
    saes = {layer: [load_sae("saelens", path=path).to(device) for path in dirs.values()]
            for layer, dirs in inputs.sae_dirs.items()}
    losses = downstream_losses_of_layers(model, batch.input_ids.to(device), saes,
                                         attention_mask=batch.attention_mask.to(device),
                                         splice_mask=torch.from_numpy(batch.keep).to(device))
    # A working model's clean loss lies far below a uniform guess over its vocabulary; a broken one's not.
    uniform = float(np.log(model.get_output_embeddings().weight.shape[0]))
    table = pd.DataFrame([{"model": model_name, "layer": layer, "sae": name, **loss, "uniform_loss": uniform}
                          for layer, dirs in inputs.sae_dirs.items()
                          for name, loss in zip(dirs, losses[layer])])
    write_tsv(table, out_path)
    print(table.to_string(), file=sys.stderr)
    return table


def evaluate_layer(inputs: EvaluationInputs, out_path: str | Path, model_layer: ModelLayer, settings: SaeSettings,
                   batch_size: int = 4096) -> pd.DataFrame:
    """Quality of the SAEs of one (model, layer) on held-out positions -> a TSV with a row per SAE.

    Per SAE of `inputs.sae_dirs`: fvu, explained_variance, mean_l0, dead_fraction
    over every held-out position, then the downstream-loss columns of this layer's
    rows of `inputs.downstream_path` (`downstream_of_model`). Every SAE after the
    first also gets its seed stability against the first
    (`evaluation.seed_stability`: decoder_cosine_mean, fraction_shared; NaN on the
    first row). `settings.held_out_every` must equal training's, or the SAE would be judged on
    text it was trained on. Rows are labelled with `model_layer`; batch_size: held-out
    positions per batch.
    """
    from ..activations.batches import read_rows
    from .evaluation import evaluate_saes, seed_stability
    from .formats import load_sae

    sae_dirs, cache_path = inputs.sae_dirs, inputs.cache_path
    model_name, layer = model_layer.model_name, model_layer.layer
    saes = {name: load_sae("saelens", path=path) for name, path in sae_dirs.items()}
    _, held_out_rows = split_rows(cache_path, settings.held_out_every)
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
    downstream = pd.read_csv(inputs.downstream_path, sep="\t")
    downstream = downstream[downstream["layer"] == layer].set_index("sae")
    missing = [name for name in saes if name not in downstream.index]
    if missing:
        raise UserError(f"{inputs.downstream_path} has no downstream loss for {model_name} layer {layer} "
                        f"SAE(s) {', '.join(missing)}; rerun its downstream_loss job")
    table = pd.DataFrame([{**row, **downstream.loc[row["sae"], list(DOWNSTREAM_COLUMNS)].to_dict()} for row in rows])
    table["loss_tokens"] = table["loss_tokens"].astype(int)
    # Every SAE after the first against the first: the seeds' agreement as the literature reports it.
    first = next(iter(saes.values()))
    stability = [{"decoder_cosine_mean": np.nan, "fraction_shared": np.nan}] + [
        seed_stability(first.W_dec.detach().cpu().numpy(), sae.W_dec.detach().cpu().numpy())
        if sae.cfg.d_sae == first.cfg.d_sae else {"decoder_cosine_mean": np.nan, "fraction_shared": np.nan}
        for sae in list(saes.values())[1:]]
    table = pd.concat([table, pd.DataFrame(stability[:len(table)])], axis=1)
    write_tsv(table, out_path)
    print(table.to_string(), file=sys.stderr)
    return table


def collect_tables(paths: list[str | Path], out_path: str | Path) -> pd.DataFrame:
    """Concatenate one-row (or many-row) TSVs into one table."""
    table = pd.concat([pd.read_csv(path, sep="\t") for path in paths], ignore_index=True)
    write_tsv(table, out_path)
    return table


CURVE_PANELS = {
    "loss": ("training loss", "loss on the training batch (log scale)"),
    "fvu": ("variance unexplained (FVU)", "FVU: on the training batch (lines), held out (dots)"),
    "mean_l0": ("active latents (mean L0)", "latents active per position"),
    "dead_fraction": ("dead latents", "fraction of latents that stopped firing"),
}
"""Each panel of the training curves: its curve column, its title and its y-axis label."""


def training_curves_figure(curves: list[pd.DataFrame], quality: pd.DataFrame | None = None):
    """The training curves of several SAEs, one panel per CURVE_PANELS entry, one colour per SAE; returns the
    Figure. With the quality table, each SAE's held-out FVU stands as a dot at its last step on the FVU panel,
    beside the training batches' FVU the curve shows."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * len(CURVE_PANELS), 3.6))
    axes = figure.subplots(1, len(CURVE_PANELS), squeeze=False)[0]
    for index, curve in enumerate(curves):
        model, layer, sae = curve["model"].iloc[0], int(curve["layer"].iloc[0]), curve["sae"].iloc[0]
        color = f"C{index % 10}"
        for axis, metric in zip(axes, CURVE_PANELS):
            axis.plot(curve["step"], curve[metric], color=color, linewidth=1, label=f"{model} L{layer} {sae}")
        if quality is not None and len(quality):
            held_out = quality[(quality["model"] == model) & (quality["layer"] == layer) & (quality["sae"] == sae)]
            if len(held_out):
                axes[1].plot([curve["step"].iloc[-1]], [float(held_out["fvu"].iloc[0])], "o", color=color,
                             markersize=5, markeredgecolor="black")
    for axis, (title, ylabel) in zip(axes, CURVE_PANELS.values()):
        axis.set_title(title, fontsize=9)
        axis.set_ylabel(ylabel, fontsize=7)
        axis.set_xlabel("optimizer step", fontsize=7)
    axes[0].set_yscale("log")
    axes[-1].legend(fontsize=6, loc="upper right")
    figure.tight_layout()
    return figure


def plot_training_curves(curve_paths: list[str | Path], out_path: str | Path,
                         quality: pd.DataFrame | None = None) -> None:
    """`training_curves_figure` of the curve files, written as one PNG."""
    figure = training_curves_figure([pd.read_csv(path, sep="\t") for path in curve_paths], quality)
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110, format="png")


def encode_to_codes(sae_dir: str | Path, cache_path: str | Path, out_path: str | Path, pre_activations: bool) -> None:
    """Sparse codes (or dense pre-activations) of every cached position (see codes.py)."""
    from .codes import encode_cache_to_codes
    from .formats import load_sae

    encode_cache_to_codes(load_sae("saelens", path=sae_dir), cache_path, out_path, pre_activations=pre_activations)
