"""Activation cache: the residual stream of one model at its requested layers, in HDF5.

One forward pass per (model, shard of windows) captures the output of every
requested block with forward hooks and stops right after the deepest one, so
the layers above it never run. Each (model, layer) gets its own HDF5 file (see
docs/formats.md). Only text-bearing positions are stored: padding and special
tokens (BOS, EOS, ...) carry no text and would only add spurious correlations.

Hook point: the output of block L, i.e. `hidden_states[L + 1]` of transformers
(the residual stream after block L, TransformerLens' `blocks.L.hook_resid_post`).
For the last block transformers' `hidden_states[-1]` has the final norm applied;
the hook on the block output does not, matching resid_post.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..text.corpus import Window
from ..errors import UserError
from ..io import atomic_path, open_hdf5
from ..settings import ActivationSettings, as_settings

POSITION_FIELDS = ("token_ids", "window_index", "doc_index", "position", "char_end")
ROWS_PER_CHUNK = 1024  # HDF5 chunk height: later stages stream the cache in blocks of rows
FLOAT16_MAX = float(np.finfo(np.float16).max)


class _StopForward(Exception):
    """Raised by the hook on the deepest requested block: nothing above it is needed."""


@dataclass
class TokenizedBatch:
    input_ids: "torch.Tensor"  # (batch, seq)
    attention_mask: "torch.Tensor"  # (batch, seq)
    keep: np.ndarray  # (batch, seq) bool: text-bearing positions
    char_end: np.ndarray  # (batch, seq) int64: end offset in the document


def tokenize_windows(tokenizer, windows: list[Window]) -> TokenizedBatch:
    """Tokenize windows with offsets; mark positions that carry text.

    A position is kept when it is not padding, not a special token, and its
    token covers at least one character of the window.
    """
    import torch

    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"tokenizer {tokenizer.name_or_path} has no fast version: character offsets are needed to align models")
    encoded = tokenizer(
        [window.text for window in windows],
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        padding=True,
        return_tensors="np",
    )
    offsets = encoded["offset_mapping"]  # (batch, seq, 2) in window characters
    attention = encoded["attention_mask"].astype(bool)
    special = encoded["special_tokens_mask"].astype(bool)
    keep = attention & ~special & (offsets[..., 1] > offsets[..., 0])
    starts = np.array([window.char_start for window in windows], dtype=np.int64)[:, None]
    return TokenizedBatch(
        input_ids=torch.from_numpy(encoded["input_ids"].astype(np.int64)),
        attention_mask=torch.from_numpy(encoded["attention_mask"].astype(np.int64)),
        keep=keep,
        char_end=offsets[..., 1].astype(np.int64) + starts,
    )


def prepare_tokenizer(tokenizer) -> None:
    """Right padding with some pad token: padded positions are masked and never stored."""
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token


def residual_stream(model, batch: TokenizedBatch, layers: list[int]) -> dict[int, "torch.Tensor"]:
    """Output of each block in `layers` for one batch: {layer: (batch, seq, d_model)}.

    The forward pass stops after the deepest requested block.
    """
    import torch

    from ..models.loading import decoder_layers

    blocks = decoder_layers(model)
    captured: dict[int, torch.Tensor] = {}
    deepest = max(layers)

    def capture(layer):
        def hook(module, inputs, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest:
                raise _StopForward

        return hook

    device = next(model.parameters()).device
    with ExitStack() as hooks, torch.inference_mode():
        for layer in layers:
            hooks.callback(blocks[layer].register_forward_hook(capture(layer)).remove)
        try:
            model.base_model(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                use_cache=False,
            )
        except _StopForward:
            pass
    return captured


class _CacheWriter:
    """Appends kept positions of one layer to an HDF5 file, growing its datasets."""

    def __init__(self, path: Path, d_model: int, dtype: str, attributes: dict):
        self.file = h5py.File(path, "w")
        self.dtype = np.dtype(dtype)
        self.file.create_dataset(
            "activations", shape=(0, d_model), maxshape=(None, d_model), dtype=self.dtype,
            chunks=(ROWS_PER_CHUNK, d_model),
        )
        for field in POSITION_FIELDS:
            self.file.create_dataset(field, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(ROWS_PER_CHUNK * 16,))
        self.file.attrs.update(attributes)
        self.n_rows = 0

    def append(self, activations: np.ndarray, fields: dict[str, np.ndarray]) -> None:
        start, stop = self.n_rows, self.n_rows + len(activations)
        self.file["activations"].resize(stop, axis=0)
        self.file["activations"][start:stop] = activations.astype(self.dtype, copy=False)
        for field in POSITION_FIELDS:
            self.file[field].resize(stop, axis=0)
            self.file[field][start:stop] = fields[field]
        self.n_rows = stop

    def close(self) -> None:
        self.file.attrs["n_positions"] = self.n_rows
        self.file.close()


def check_finite(values: np.ndarray, model_name: str, layer: int, windows, fields, dtype: str) -> None:
    """Stop with the first position whose activation is NaN, Inf, or too large for the storage dtype."""
    finite = np.isfinite(values).all(axis=1)
    too_large = np.zeros_like(finite)
    if np.dtype(dtype) == np.float16:
        too_large = np.abs(values).max(axis=1, initial=0.0) > FLOAT16_MAX
    bad = np.flatnonzero(~finite | too_large)
    if bad.size:
        row = bad[0]
        where = (f"model {model_name}, layer {layer}, window {fields['window_index'][row]}, "
                 f"document {fields['doc_index'][row]}, position {fields['position'][row]}")
        if finite[row]:
            raise UserError(f"activations exceed the float16 range at {where}: set activations.dtype: float32")
        raise UserError(f"NaN or Inf activation at {where}: the model or its weights are broken; check the model source")


@dataclass(frozen=True)
class CacheFiles:
    """The files one forward pass writes: one per layer, and what labels them."""

    paths: Mapping[int, str | Path]
    """{layer: HDF5 file to write}; its keys are the layers cached."""
    model_name: str
    """The model's id, in error messages."""
    attributes: Mapping[str, object] = field(default_factory=dict)
    """Provenance written into every file's attributes (model source, corpus fingerprint, shard, ...)."""


def cache_activations(
    model,
    tokenizer,
    windows: list[Window],
    files: CacheFiles,
    settings: ActivationSettings | Mapping = ActivationSettings(),
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[int, int]:
    """Run `model` over `windows` and write one HDF5 cache per layer. Returns {layer: rows written}.

    Every file is written under a temporary name and renamed only when all
    layers are complete, so an interrupted job leaves nothing that looks done.

    The core of the forward-pass stage, kept free of files it does not write: the
    model and tokenizer come in loaded (tests and benchmarks pass their own), the
    windows in memory, one output path per layer in `files`, whose model name and
    attributes only label the files (error messages, provenance); `settings.dtype`
    and `batch_size` (the model's own) are the two settings that change what is
    computed or stored. `cache_shard` is the job-level call.
    """
    import torch
    from tqdm import tqdm

    from ..models.loading import decoder_layers

    dtype = as_settings(ActivationSettings, settings).dtype
    layers, model_name = sorted(files.paths), files.model_name
    n_layers = len(decoder_layers(model))
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise UserError(f"layer {layer} does not exist in model {model_name} (blocks 0..{n_layers - 1}); fix models.{model_name}.layers")
    prepare_tokenizer(tokenizer)
    d_model = model.config.get_text_config().hidden_size
    common = {
        **files.attributes, "hook_point": "resid_post", "d_model": d_model, "dtype": dtype,
        "package_version": __version__,
    }
    with ExitStack() as stack:
        temporaries = {layer: stack.enter_context(atomic_path(files.paths[layer], suffix=".h5")) for layer in layers}
        writers = {
            layer: _CacheWriter(temporaries[layer], d_model, dtype,
                                {**common, "layer": layer, "hidden_states_index": layer + 1})
            for layer in layers
        }
        bar = tqdm(total=len(windows), unit="window", disable=not progress, file=sys.stderr, mininterval=5)
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            batch = tokenize_windows(tokenizer, chunk)
            hidden = residual_stream(model, batch, layers)
            rows, columns = np.nonzero(batch.keep)
            fields = {
                "token_ids": batch.input_ids.numpy()[rows, columns],
                "window_index": np.array([w.window_index for w in chunk], dtype=np.int64)[rows],
                "doc_index": np.array([w.doc_index for w in chunk], dtype=np.int64)[rows],
                "position": columns.astype(np.int64),
                "char_end": batch.char_end[rows, columns],
            }
            index = (torch.from_numpy(rows), torch.from_numpy(columns))
            for layer in layers:
                values = hidden[layer][index].float().cpu().numpy()
                check_finite(values, model_name, layer, chunk, fields, dtype)
                writers[layer].append(values, fields)
            bar.update(len(chunk))
        bar.close()
        for writer in writers.values():
            writer.close()
    return {layer: writer.n_rows for layer, writer in writers.items()}


def merge_shards(shard_paths: list[str | Path], out_path: str | Path, rows_per_block: int = 65536) -> int:
    """Concatenate shard caches of one (model, layer), in shard order. Returns the number of rows.

    A single shard is hard-linked (no copy); shards are written to a temporary
    file and renamed.
    """
    shard_paths = [Path(p) for p in shard_paths]
    if len(shard_paths) == 1:
        with atomic_path(out_path, suffix=".h5") as temporary:
            temporary.unlink()
            try:
                os.link(shard_paths[0], temporary)
            except OSError:  # file systems without hard links
                import shutil

                shutil.copyfile(shard_paths[0], temporary)
        with open_hdf5(out_path) as merged:
            return int(merged.attrs["n_positions"])
    with ExitStack() as opened:
        sources = [opened.enter_context(open_hdf5(p)) for p in shard_paths]
        total = sum(s["activations"].shape[0] for s in sources)
        first = sources[0]
        d_model = first["activations"].shape[1]
        with atomic_path(out_path, suffix=".h5") as temporary, h5py.File(temporary, "w") as merged:
            merged.attrs.update(dict(first.attrs))
            # Chunks may not exceed a fixed-size dataset.
            merged.create_dataset("activations", shape=(total, d_model), dtype=first["activations"].dtype,
                                  chunks=(max(1, min(ROWS_PER_CHUNK, total)), d_model))
            for field in POSITION_FIELDS:
                merged.create_dataset(field, shape=(total,), dtype=np.int64,
                                      chunks=(max(1, min(ROWS_PER_CHUNK * 16, total)),))
            offset = 0
            for source in sources:
                n = source["activations"].shape[0]
                for block in range(0, n, rows_per_block):
                    stop = min(block + rows_per_block, n)
                    merged["activations"][offset + block:offset + stop] = source["activations"][block:stop]
                for field in POSITION_FIELDS:
                    merged[field][offset:offset + n] = source[field][:]
                offset += n
            merged.attrs["n_positions"] = total
        return total


def shard_windows(windows: list[Window], n_shards: int, shard: int) -> list[Window]:
    """Contiguous block `shard` of `n_shards`: concatenating shards in order restores window order."""
    bounds = np.linspace(0, len(windows), n_shards + 1).round().astype(int)
    return windows[bounds[shard]:bounds[shard + 1]]


def read_positions(path: str | Path) -> dict[str, np.ndarray]:
    """The per-position fields of a cache (everything but the activations)."""
    with open_hdf5(path) as cache:
        return {field: cache[field][:] for field in POSITION_FIELDS}


def cache_shard(
    manifest_path: str | Path,
    windows_path: str | Path,
    layers: list[int],
    out_dir: str | Path,
    settings: ActivationSettings | Mapping = ActivationSettings(),
    *,
    shard: int = 0,
    batch_size: int = 8,
) -> dict[int, int]:
    """One activation job: shard `shard` of `settings.shards` of the windows through a prepared model.

    Runs on the device `devices.torch_device` picks (CUDA when present, else the
    CPU) and stores `settings.dtype`. Writes `out_dir/layer{L}.h5` for every
    layer; the folder appears only when all files are complete. Returns
    {layer: rows written}.
    """
    from ..text.corpus import fingerprint, read_windows
    from ..io import atomic_directory
    from ..devices import torch_device
    from ..models.sources import load_model

    settings = as_settings(ActivationSettings, settings)
    n_shards = settings.shards
    model, tokenizer, manifest = load_model(manifest_path, device=torch_device())
    windows = shard_windows(read_windows(windows_path), n_shards, shard)
    attributes = {
        "model_id": manifest["name"],
        "model_source": f"{manifest['source']}:{manifest['location']}",
        "model_revision": manifest["revision"],
        "tokenizer": manifest["tokenizer"],
        "corpus_fingerprint": fingerprint(windows_path),
        "shard": shard,
        "n_shards": n_shards,
    }
    with atomic_directory(out_dir) as temporary:
        files = CacheFiles({layer: Path(temporary) / f"layer{layer}.h5" for layer in layers}, manifest["name"],
                           attributes)
        counts = cache_activations(model, tokenizer, windows, files, settings, batch_size=batch_size)
    return counts
