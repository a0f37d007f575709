"""The causal stage, per model: every SAE feature's first-order effect on the next-token loss at every position of a
sample of window prefixes, and the exact effect of a sample of items against it (`effects`).

One job per model: one forward and backward pass per batch of prefixes gives the loss gradient at all of the
model's layers, and every SAE of every layer reads it. The effects file holds, per layer and SAE, the effects
in the codes' sparsity (a feature that does not fire at a position has no effect there) at the sampled cache
rows; the per-layer-pair comparison (`agreement`) reads two models' files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, open_hdf5, write_tsv
from ..settings import CausalSettings

EXACT_COLUMNS = ["layer", "sae", "window_index", "position", "row", "feature", "activation", "kind", "first_order",
                 "exact"]
AGREEMENT_COLUMNS = ["model", "layer", "sae", "kind", "n_items", "pearson", "slope", "sign_agreement",
                     "relative_median_error", "cache_relative_error", "n_windows", "n_positions"]


@dataclass(frozen=True)
class LayerFiles:
    """What the causal job reads of one layer."""

    cache: Path
    saes: dict
    """SAE name -> (its folder, its codes file); the first is the primary SAE (the exact items use it)."""


@dataclass(frozen=True)
class EffectOutputs:
    effects: Path
    """HDF5: rows, window_index, position (the sampled cache rows); per layer{L}/{sae}: CSR effects."""
    exact: Path
    """TSV (EXACT_COLUMNS): each checked item's first-order and exact effect."""
    agreement: Path
    """TSV (AGREEMENT_COLUMNS): per layer, how well the first-order effects predict the exact ones."""


def sample_windows(windows: list, n: int, seed: int) -> list:
    """`n` windows drawn at random (seeded; the same for every model: they share the corpus), in corpus order."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(windows), min(n, len(windows)), replace=False))
    return [windows[index] for index in chosen]


def sampled_rows(cache_path: str | Path, window_index: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The cache rows inside the sampled prefixes: rows of a sampled window at a position before its cut."""
    with open_hdf5(cache_path) as cache:
        windows, positions = cache["window_index"][:], cache["position"][:]
    length_of = dict(zip(window_index.tolist(), lengths.tolist()))
    limit = np.array([length_of.get(int(window), -1) for window in windows], dtype=np.int64)
    return np.flatnonzero(positions < limit)


def _exact_items(effects, rng, n_items: int) -> list[tuple[int, int, str]]:
    """(sample row, feature, kind) of the items to ablate exactly: half at random among the firing entries, half
    the largest first-order estimates (by magnitude), none twice."""
    rows = np.repeat(np.arange(effects.shape[0]), np.diff(effects.indptr))
    entries = np.column_stack([rows, effects.indices])
    if not len(entries) or n_items == 0:
        return []
    largest = np.argsort(-np.abs(effects.data), kind="stable")[:n_items - n_items // 2]
    remaining = np.setdiff1d(np.arange(len(entries)), largest)
    drawn = rng.choice(remaining, min(n_items // 2, len(remaining)), replace=False) if len(remaining) else []
    return ([(int(entries[i, 0]), int(entries[i, 1]), "largest") for i in largest]
            + [(int(entries[i, 0]), int(entries[i, 1]), "random") for i in np.sort(drawn)])


@dataclass
class _Sample:
    """The sampled cache rows and where each sits in the batch of prefixes."""

    rows: np.ndarray
    window: np.ndarray
    position: np.ndarray
    slot: np.ndarray
    """Each row's prefix: its row in the `PrefixBatch`."""


@dataclass
class _Pass:
    """What the forward and backward passes give at the sampled rows, per layer."""

    gradients: dict
    """layer -> (rows, d) the loss gradient at each sampled row."""
    hidden: dict
    """layer -> (rows, d) the block output there (checked against the cache)."""
    window_hidden: dict
    """(slot, layer) -> (1, length, d) the whole prefix's block output (the exact items splice into it)."""


def _gradient_passes(model, batch, sample: _Sample, layers: list, windows_per_pass: int) -> _Pass:
    """Loss gradients and block outputs at every sampled row, `windows_per_pass` prefixes per pass."""
    import torch

    from .effects import loss_gradients

    device = next(model.parameters()).device
    found = _Pass({}, {}, {})
    for start in range(0, len(batch.lengths), windows_per_pass):
        slots = np.arange(start, min(start + windows_per_pass, len(batch.lengths)))
        width = int(batch.lengths[slots].max())
        result = loss_gradients(model, batch.input_ids[slots, :width].to(device),
                                batch.attention_mask[slots, :width].to(device), layers)
        in_batch = np.flatnonzero(np.isin(sample.slot, slots))
        where = (torch.as_tensor(sample.slot[in_batch] - start), torch.as_tensor(sample.position[in_batch]))
        for layer in layers:
            width_d = result.gradient[layer].shape[-1]
            for store in (found.gradients, found.hidden):
                store.setdefault(layer, np.zeros((len(sample.rows), width_d), dtype=np.float32))
            found.gradients[layer][in_batch] = result.gradient[layer][where].float().cpu().numpy()
            found.hidden[layer][in_batch] = result.hidden[layer][where].float().cpu().numpy()
            for offset, slot in enumerate(slots):
                found.window_hidden[(int(slot), layer)] = result.hidden[layer][offset:offset + 1,
                                                                               :int(batch.lengths[slot])]
        print(f"gradients of windows {start}..{slots[-1]}", file=sys.stderr)
    return found


@dataclass
class _Dictionary:
    """One SAE of one layer at the sampled rows."""

    layer: int
    codes: object
    """(rows, features) CSR activations."""
    decoder: np.ndarray
    """(features, d) decoder rows."""
    effects: object
    """(rows, features) CSR first-order effects."""


def _exact_check(model, batch, sample: _Sample, passes: _Pass, dictionary: _Dictionary, items) -> list[dict]:
    """Each item (sample row, feature, kind) removed exactly (`effects.exact_effects`, one window's items per
    call) beside its first-order estimate: rows of EXACT_COLUMNS but layer and sae."""
    from .effects import exact_effects

    layer, codes, decoder, effects = dictionary.layer, dictionary.codes, dictionary.decoder, dictionary.effects
    device = next(model.parameters()).device
    measured_rows = []
    for slot in np.unique([sample.slot[row] for row, _, _ in items]).astype(int):
        mine = [item for item in items if sample.slot[item[0]] == slot]
        length = int(batch.lengths[slot])
        measured = exact_effects(model, batch.input_ids[slot:slot + 1, :length].to(device),
                                 batch.attention_mask[slot:slot + 1, :length].to(device), layer,
                                 passes.window_hidden[(slot, layer)],
                                 [(int(sample.position[row]), codes[row, feature] * decoder[feature])
                                  for row, feature, _ in mine])
        for (row, feature, kind), value in zip(mine, measured):
            measured_rows.append({"window_index": int(sample.window[row]), "position": int(sample.position[row]),
                                  "row": int(sample.rows[row]), "feature": feature,
                                  "activation": float(codes[row, feature]), "kind": kind,
                                  "first_order": float(effects[row, feature]), "exact": float(value)})
    return measured_rows


def measure_effects(model_name: str, manifest_path: str | Path, windows_path: str | Path, layers: dict,
                    outputs: EffectOutputs, settings: CausalSettings) -> pd.DataFrame:
    """Effects of every SAE feature of the model's `layers` ({layer: LayerFiles}) on the sampled prefixes, the
    exact check, and its agreement table (returned)."""
    import h5py
    import scipy.sparse

    from ..devices import torch_device
    from ..models.sources import load_model
    from ..saes.codes import iter_code_chunks
    from ..similarity.stage import decoder_rows
    from ..text.corpus import read_windows
    from .effects import agreement, first_order_effects, prefix_batch

    model, tokenizer, _ = load_model(manifest_path, device=torch_device())
    windows = sample_windows(read_windows(windows_path), settings.windows, settings.seed)
    batch = prefix_batch(tokenizer, windows, settings.prefix_chars)
    layer_list = sorted(layers)
    first = layers[layer_list[0]]
    rows = sampled_rows(first.cache, batch.window_index, batch.lengths)
    with open_hdf5(first.cache) as cache:
        window, position = cache["window_index"][:][rows], cache["position"][:][rows]
    slot_of_window = {int(index): slot for slot, index in enumerate(batch.window_index)}
    sample = _Sample(rows, window, position, np.array([slot_of_window[int(index)] for index in window], dtype=np.int64))
    passes = _gradient_passes(model, batch, sample, layer_list, settings.windows_per_pass)

    rng = np.random.default_rng(settings.seed)
    exact_rows, agreement_rows = [], []
    with atomic_path(outputs.effects, suffix=".h5") as temporary:
        with h5py.File(temporary, "w") as handle:
            handle.attrs.update(kind="effects", model=model_name, prefix_chars=settings.prefix_chars,
                                n_windows=len(windows), seed=settings.seed)
            for name, values in (("rows", rows), ("window_index", window), ("position", position)):
                handle.create_dataset(name, data=values)
            for layer in layer_list:
                with open_hdf5(layers[layer].cache) as cache:
                    cached = cache["activations"][rows] if len(rows) else np.zeros((0, 1))
                # The live pass and the cache must agree: the effects are measured on the activations the codes
                # were computed from.
                hidden = passes.hidden.get(layer, np.zeros_like(cached))
                cache_error = float(np.linalg.norm(hidden - cached) / max(np.linalg.norm(cached), 1e-30))
                for index, (sae, (sae_dir, codes_path)) in enumerate(layers[layer].saes.items()):
                    codes = scipy.sparse.vstack(list(iter_code_chunks(codes_path, rows)), format="csr")
                    decoder = decoder_rows(sae_dir)
                    effects = first_order_effects(codes, passes.gradients[layer], decoder)
                    group = handle.create_group(f"layer{layer}/{sae}")
                    for name in ("indptr", "indices", "data"):
                        group.create_dataset(name, data=getattr(effects, name))
                    group.attrs["n_features"] = effects.shape[1]
                    if index:  # the exact check uses the primary SAE
                        continue
                    measured = [{"layer": layer, "sae": sae, **row} for row in _exact_check(
                        model, batch, sample, passes, _Dictionary(layer, codes, decoder, effects),
                        _exact_items(effects, rng, settings.exact_items))]
                    exact_rows += measured
                    # Agreement over every item, and apart for the random ones (typical effects) and the largest
                    # estimates (where a first-order estimate is most likely to miss).
                    for kind in ("all", "random", "largest"):
                        chosen = [row for row in measured if kind in ("all", row["kind"])]
                        agreement_rows.append({
                            "model": model_name, "layer": layer, "sae": sae, "kind": kind,
                            **agreement([row["first_order"] for row in chosen], [row["exact"] for row in chosen]),
                            "cache_relative_error": cache_error, "n_windows": len(windows), "n_positions": len(rows)})
                        print(f"layer {layer}, {kind} items: {agreement_rows[-1]}", file=sys.stderr)
    write_tsv(pd.DataFrame(exact_rows, columns=EXACT_COLUMNS), outputs.exact)
    table = pd.DataFrame(agreement_rows, columns=AGREEMENT_COLUMNS)
    write_tsv(table, outputs.agreement)
    return table


FUNCTION_COLUMNS = ["n_pairs", "n_defined", "n_positions", "n_windows", "effect_mean", "null_mean", "null_sd", "p",
                    "ci_low", "ci_high", "ceiling_a", "ceiling_b", "ceiling", "ceiling_null_mean",
                    "fraction_of_ceiling", "context_only_mean", "context_only_null_mean", "activation_mean",
                    "share_agreeing", "output_overlap_mean", "output_overlap_null", "first_order_pearson_a",
                    "first_order_pearson_b"]
PAIR_COLUMNS = ["feature_a", "feature_b", "correlation", "activation_correlation", "effect_correlation", "effect_p",
                "agrees", "effect_context_only", "output_overlap", "effect_positions_a", "effect_positions_b"]
SIGNIFICANCE = 0.05
"""Per-pair tests are adjusted (Benjamini-Hochberg) across a layer pair's kept pairs at this level."""


@dataclass(frozen=True)
class EffectSide:
    """One side of a layer pair for the functional comparison."""

    effects: Path
    layer: int
    sae: str
    """The primary SAE: the one the match table pairs."""
    seed_sae: str | None
    """A second seed's SAE of the same layer (the ceiling), None where the model has one."""
    ceiling_matches: Path | None
    """The match table of sae against seed_sae (the ceiling's)."""
    codes: Path
    cache: Path
    output_tokens: Path
    manifest: Path
    agreement: Path
    """The model's first-order-against-exact table."""


def read_effects(path: str | Path, layer: int, sae: str):
    """(sampled cache rows, window of each, CSR effects (rows, features)) of one SAE of one layer."""
    import scipy.sparse

    with open_hdf5(path) as handle:
        group = handle[f"layer{layer}/{sae}"]
        rows, windows = handle["rows"][:], handle["window_index"][:]
        effects = scipy.sparse.csr_matrix((group["data"][:], group["indices"][:], group["indptr"][:]),
                                          shape=(len(rows), int(group.attrs["n_features"])))
    return rows, windows, effects


def _ceiling(side: EffectSide, draws: int, rng) -> tuple[float, float]:
    """(mean effect correlation of the seed-to-seed kept pairs on the model's sample, its random-pairing mean)."""
    from .agreement import correlation_matrix, pairing_null

    if side.seed_sae is None or side.ceiling_matches is None:
        return np.nan, np.nan
    table = pd.read_csv(side.ceiling_matches, sep="\t", usecols=["feature_b", "final_a", "kept"])
    kept = table[table["kept"].astype(bool)]
    if len(kept) < 2:
        return np.nan, np.nan
    _, _, first = read_effects(side.effects, side.layer, side.sae)
    _, _, second = read_effects(side.effects, side.layer, side.seed_sae)
    matrix = correlation_matrix(first[:, kept["final_a"].to_numpy()].toarray(),
                                second[:, kept["feature_b"].to_numpy()].toarray())
    return float(np.nanmean(np.diag(matrix))), float(np.mean(pairing_null(matrix, draws, rng)))


def _first_order_pearson(path: Path, layer: int) -> float:
    """The first-order estimate's correlation with exact ablation on the randomly drawn items of this layer."""
    table = pd.read_csv(path, sep="\t")
    rows = table[(table["layer"] == layer) & (table["kind"] == "random")] if "kind" in table else table.iloc[0:0]
    return float(rows["pearson"].iloc[0]) if len(rows) else np.nan


def functional_agreement(matches_path: str | Path, alignment_path: str | Path, a: EffectSide, b: EffectSide,
                         labels: dict, settings: CausalSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per kept pair table PAIR_COLUMNS, one-row summary labels + FUNCTION_COLUMNS) of one layer pair."""
    from ..saes.codes import feature_columns
    from ..matching.stage import aligned_rows
    from ..models.loading import token_decoder
    from ..similarity.baselines import adjust_p_values
    from .agreement import (correlation_matrix, overlap_matrix, pairing_null, per_pair_p, token_residuals,
                            window_bootstrap)

    rng = np.random.default_rng(settings.seed)
    table = pd.read_csv(matches_path, sep="\t", usecols=["feature_b", "final_a", "final_correlation", "kept"])
    kept = table[table["kept"].astype(bool)].sort_values("feature_b")
    features_a, features_b = kept["final_a"].to_numpy(np.int64), kept["feature_b"].to_numpy(np.int64)
    rows_a, windows_a, effects_a = read_effects(a.effects, a.layer, a.sae)
    rows_b, _, effects_b = read_effects(b.effects, b.layer, b.sae)
    aligned_a, aligned_b = aligned_rows(alignment_path)
    # The aligned positions inside both models' samples, as indices into each sample.
    inside = np.isin(aligned_a, rows_a) & np.isin(aligned_b, rows_b)
    sample_a = np.searchsorted(rows_a, aligned_a[inside])
    sample_b = np.searchsorted(rows_b, aligned_b[inside])
    x = effects_a[sample_a][:, features_a].toarray()
    y = effects_b[sample_b][:, features_b].toarray()
    windows = windows_a[sample_a]

    matrix = correlation_matrix(x, y)
    observed = np.diag(matrix).copy()
    null = pairing_null(matrix, settings.null_draws, rng)
    effect_mean = float(np.nanmean(observed)) if np.isfinite(observed).any() else np.nan
    p_pairs = per_pair_p(matrix)
    agrees = np.zeros(len(observed), dtype=bool)
    tested = np.isfinite(p_pairs)
    if tested.any():
        agrees[tested] = adjust_p_values(p_pairs[tested], "bh") < SIGNIFICANCE
    low, high = window_bootstrap(x, y, windows, settings.bootstrap_draws, rng)

    with open_hdf5(a.cache) as cache:
        tokens_a = cache["token_ids"][:][aligned_a[inside]]
    with open_hdf5(b.cache) as cache:
        tokens_b = cache["token_ids"][:][aligned_b[inside]]
    folds = windows % 2
    residual = correlation_matrix(token_residuals(x, tokens_a, folds), token_residuals(y, tokens_b, folds))
    context_only = np.diag(residual).copy()
    # The context-only and ceiling nulls only set a reference level (no p-value is read from them): fewer draws.
    reference_draws = max(10, settings.null_draws // 5)
    context_only_null = pairing_null(residual, reference_draws, rng)

    activation = np.full(len(features_a), np.nan)
    if len(features_a):
        codes_a = feature_columns(a.codes, aligned_a[inside], features_a)
        codes_b = feature_columns(b.codes, aligned_b[inside], features_b)
        activation = np.diag(correlation_matrix(codes_a, codes_b)) if len(codes_a) else activation

    def promoted(side, features):
        decode = token_decoder(side.manifest)
        with np.load(side.output_tokens) as saved:
            ids = saved["promoted_ids"][features]
        return [[decode([int(token)]) for token in row] for row in ids]

    overlaps = overlap_matrix(promoted(a, features_a), promoted(b, features_b)) if len(features_a) else np.zeros((0, 0))
    off_diagonal = ~np.eye(len(overlaps), dtype=bool)
    ceiling_a, ceiling_null_a = _ceiling(a, reference_draws, rng)
    ceiling_b, ceiling_null_b = _ceiling(b, reference_draws, rng)
    # The two models' ceilings averaged, as the similarity scores' are (one where the other has a single seed).
    ceiling, ceiling_null = np.nan, np.nan
    if np.isfinite([ceiling_a, ceiling_b]).any():
        ceiling, ceiling_null = np.nanmean([ceiling_a, ceiling_b]), np.nanmean([ceiling_null_a, ceiling_null_b])
    null_mean = float(np.mean(null)) if len(null) else np.nan
    gap = ceiling - ceiling_null
    pairs = pd.DataFrame({
        "feature_a": features_a, "feature_b": features_b, "correlation": kept["final_correlation"].to_numpy(),
        "activation_correlation": activation, "effect_correlation": observed, "effect_p": p_pairs, "agrees": agrees,
        "effect_context_only": context_only, "output_overlap": np.diag(overlaps) if len(overlaps) else [],
        "effect_positions_a": (x != 0).sum(axis=0), "effect_positions_b": (y != 0).sum(axis=0)}, columns=PAIR_COLUMNS)
    summary = pd.DataFrame([{
        **labels, "n_pairs": len(features_a), "n_defined": int(np.isfinite(observed).sum()),
        "n_positions": int(inside.sum()), "n_windows": len(np.unique(windows)), "effect_mean": effect_mean,
        "null_mean": null_mean, "null_sd": float(np.std(null)) if len(null) else np.nan,
        "p": float((1 + np.sum(null >= effect_mean)) / (1 + len(null))) if np.isfinite(effect_mean) else np.nan,
        "ci_low": low, "ci_high": high, "ceiling_a": ceiling_a, "ceiling_b": ceiling_b, "ceiling": ceiling,
        "ceiling_null_mean": ceiling_null,
        "fraction_of_ceiling": (effect_mean - null_mean) / gap if np.isfinite(gap) and gap > 0 else np.nan,
        "context_only_mean": float(np.nanmean(context_only)) if np.isfinite(context_only).any() else np.nan,
        "context_only_null_mean": float(np.mean(context_only_null)) if len(context_only_null) else np.nan,
        "activation_mean": float(np.nanmean(activation)) if np.isfinite(activation).any() else np.nan,
        "share_agreeing": float(agrees.mean()) if len(agrees) else np.nan,
        "output_overlap_mean": float(np.mean(np.diag(overlaps))) if len(overlaps) else np.nan,
        "output_overlap_null": float(overlaps[off_diagonal].mean()) if off_diagonal.any() else np.nan,
        "first_order_pearson_a": _first_order_pearson(a.agreement, a.layer),
        "first_order_pearson_b": _first_order_pearson(b.agreement, b.layer)}], columns=[*labels, *FUNCTION_COLUMNS])
    return pairs, summary


def function_table(summary_paths, out_path: str | Path, p_adjust: str, significance: float) -> pd.DataFrame:
    """The layer pairs' functional agreement of one model pair in one table, with p adjusted across its layer
    pairs (`p_adjust`, as the similarity scores) and whether each is above chance (adjusted p < significance
    and above the random pairings' mean)."""
    from ..similarity.baselines import adjust_p_values

    frames = [pd.read_csv(path, sep="\t") for path in summary_paths]
    table = pd.concat([frame for frame in frames if len(frame)], ignore_index=True) if frames else pd.DataFrame()
    if len(table):
        table = table.sort_values(["layer_a", "layer_b"], kind="stable").reset_index(drop=True)
        table["p_adjusted"] = adjust_p_values(table["p"].to_numpy(dtype=float), p_adjust)
        table["above_chance"] = (table["p_adjusted"] < significance) & (table["effect_mean"] > table["null_mean"])
    write_tsv(table, out_path)
    return table
