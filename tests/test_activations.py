"""The activation cache holds exactly the model's residual stream at text-bearing positions."""

import h5py
import numpy as np
import pytest
import torch

from sae_universality.activations.cache import cache_shard, merge_shards, prepare_tokenizer, tokenize_windows
from sae_universality.text.corpus import write_windows
from sae_universality.errors import UserError
from sae_universality.models.sources import load_model, prepare_model
from sae_universality.settings import ActivationSettings

ARCHITECTURES = ["gpt_neox", "gemma", "gemma2", "llama"]


@pytest.fixture(scope="module")
def prepared(tiny_models, tmp_path_factory):
    """{architecture: manifest path} of the tiny models, prepared like the workflow does."""
    root = tmp_path_factory.mktemp("prepared")
    return {
        arch: root / arch / "manifest.json"
        for arch in ARCHITECTURES
        if prepare_model(arch, {"path": str(tiny_models[arch]), "layers": [0]}, root / arch)
    }


@pytest.fixture(scope="module")
def windows_file(windows, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "windows.jsonl"
    write_windows(windows, path)
    return path


def direct_hidden_states(manifest, windows, layer):
    """Independent reference: full forward pass, one window at a time, hidden_states[layer + 1]."""
    model, tokenizer, _ = load_model(manifest)
    rows = []
    for window in windows:
        encoded = tokenizer(window.text, return_offsets_mapping=True, return_special_tokens_mask=True)
        with torch.no_grad():
            output = model(torch.tensor([encoded["input_ids"]]), output_hidden_states=True)
        hidden = output.hidden_states[layer + 1][0].double().numpy()
        for position, ((start, end), special) in enumerate(zip(encoded["offset_mapping"], encoded["special_tokens_mask"])):
            if not special and end > start:
                rows.append((window.window_index, position, window.char_start + end, encoded["input_ids"][position], hidden[position]))
    return rows


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cache_equals_direct_forward_pass(prepared, windows, windows_file, tmp_path, architecture):
    layers = [0, 2]  # not the last block: transformers' last hidden state has the final norm applied
    counts = cache_shard(prepared[architecture], windows_file, layers, tmp_path / "shard",
                         ActivationSettings(dtype="float32"), batch_size=3)
    for layer in layers:
        reference = direct_hidden_states(prepared[architecture], windows, layer)
        with h5py.File(tmp_path / "shard" / f"layer{layer}.h5", "r") as cache:
            assert counts[layer] == len(reference) == cache["activations"].shape[0]
            assert cache.attrs["layer"] == layer and cache.attrs["hidden_states_index"] == layer + 1
            assert cache.attrs["hook_point"] == "resid_post"
            np.testing.assert_array_equal(cache["window_index"][:], [r[0] for r in reference])
            np.testing.assert_array_equal(cache["position"][:], [r[1] for r in reference])
            np.testing.assert_array_equal(cache["char_end"][:], [r[2] for r in reference])
            np.testing.assert_array_equal(cache["token_ids"][:], [r[3] for r in reference])
            # Batched with right padding vs one window alone: equal up to float32 rounding.
            np.testing.assert_allclose(cache["activations"][:], np.stack([r[4] for r in reference]), rtol=1e-4, atol=1e-4)


def test_no_special_or_padding_position_is_stored(prepared, windows, windows_file, tmp_path):
    cache_shard(prepared["gpt_neox"], windows_file, [1], tmp_path / "shard", batch_size=4)
    _, tokenizer, _ = load_model(prepared["gpt_neox"])
    with h5py.File(tmp_path / "shard" / "layer1.h5", "r") as cache:
        tokens = cache["token_ids"][:]
        assert cache["activations"].dtype == np.float16
        assert cache["position"][:].min() == 1  # position 0 is BOS
        char_end = cache["char_end"][:]
        window_index = cache["window_index"][:]
    assert not np.isin(tokens, tokenizer.all_special_ids).any()
    # Within a window, tokens end strictly after each other and inside the window's text.
    for window in windows:
        ends = char_end[window_index == window.window_index]
        assert (np.diff(ends) >= 0).all()
        assert ends.min() > window.char_start and ends.max() == window.char_start + len(window.text)


def test_shards_merge_to_the_single_shard_cache(prepared, windows_file, tmp_path):
    cache_shard(prepared["llama"], windows_file, [1], tmp_path / "whole", ActivationSettings(shards=1), shard=0)
    for shard in range(3):
        cache_shard(prepared["llama"], windows_file, [1], tmp_path / f"s{shard}", ActivationSettings(shards=3), shard=shard)
    with h5py.File(tmp_path / "s2" / "layer1.h5", "r") as last:
        # Which shard of how many, and the storage dtype, come from the settings.
        assert (last.attrs["shard"], last.attrs["n_shards"], last.attrs["dtype"]) == (2, 3, "float16")
    rows = merge_shards([tmp_path / f"s{shard}" / "layer1.h5" for shard in range(3)], tmp_path / "merged.h5", rows_per_block=7)
    with h5py.File(tmp_path / "whole" / "layer1.h5", "r") as whole, h5py.File(tmp_path / "merged.h5", "r") as merged:
        assert rows == whole["activations"].shape[0] == merged.attrs["n_positions"]
        for name in ("token_ids", "window_index", "doc_index", "position", "char_end"):
            np.testing.assert_array_equal(whole[name][:], merged[name][:], err_msg=name)
        # Shards batch other windows together (other padding, other matmul shapes), so a float32
        # sum may round differently and land one float16 step away: allow one step, no more.
        whole_acts, merged_acts = whole["activations"][:].astype(np.float32), merged["activations"][:].astype(np.float32)
        step = np.spacing(np.abs(whole_acts).astype(np.float16)).astype(np.float32)
        assert (np.abs(whole_acts - merged_acts) <= step).all()
        assert (whole_acts == merged_acts).mean() > 0.99
    # One shard is linked, not copied.
    merge_shards([tmp_path / "whole" / "layer1.h5"], tmp_path / "linked.h5")
    assert (tmp_path / "linked.h5").stat().st_ino == (tmp_path / "whole" / "layer1.h5").stat().st_ino


def test_a_layer_beyond_the_model_is_refused(prepared, windows_file, tmp_path):
    with pytest.raises(UserError, match=r"layer 4 does not exist in model gemma \(blocks 0..3\)"):
        cache_shard(prepared["gemma"], windows_file, [4], tmp_path / "shard")
    assert not (tmp_path / "shard").exists(), "nothing half-written is left"


def test_nan_activations_stop_the_job_naming_model_layer_and_position(prepared, windows_file, tmp_path, monkeypatch):
    import sae_universality.activations.cache as activations

    real = activations.residual_stream

    def poisoned(model, batch, layers):
        hidden = real(model, batch, layers)
        hidden[layers[0]] = hidden[layers[0]].clone()
        hidden[layers[0]][0, 3, 0] = float("nan")
        return hidden

    monkeypatch.setattr(activations, "residual_stream", poisoned)
    with pytest.raises(UserError, match=r"NaN or Inf activation at model gemma2, layer 1, window 0, document 0, position 3"):
        cache_shard(prepared["gemma2"], windows_file, [1], tmp_path / "shard")
    assert not (tmp_path / "shard").exists()


def test_float16_overflow_is_reported_with_the_fix(prepared, windows_file, tmp_path, monkeypatch):
    import sae_universality.activations.cache as activations

    real = activations.residual_stream

    def huge(model, batch, layers):
        hidden = real(model, batch, layers)
        hidden[layers[0]] = hidden[layers[0]].clone()
        hidden[layers[0]][1, 2, 5] = 1e6
        return hidden

    monkeypatch.setattr(activations, "residual_stream", huge)
    with pytest.raises(UserError, match=r"exceed the float16 range .* set activations.dtype: float32"):
        cache_shard(prepared["gemma2"], windows_file, [1], tmp_path / "shard", ActivationSettings(dtype="float16"))


def test_tokenization_marks_text_positions(prepared, windows):
    _, tokenizer, _ = load_model(prepared["llama"])
    prepare_tokenizer(tokenizer)
    batch = tokenize_windows(tokenizer, windows[:3])
    assert batch.keep.shape == tuple(batch.input_ids.shape)
    assert not batch.keep[:, 0].any()  # BOS
    assert (batch.keep.sum(axis=1) == (batch.attention_mask.numpy().sum(axis=1) - 1)).all()
