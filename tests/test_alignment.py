"""Aligned positions of two models end at the same character of the same window."""

import h5py
import numpy as np
import pandas as pd

from sae_universality.activations.cache import cache_shard, read_positions
from sae_universality.activations.alignment import align_positions, write_alignment, write_alignment_summary
from sae_universality.text.corpus import write_windows
from sae_universality.models.sources import prepare_model


def cache(tiny_models, architecture, windows_file, root):
    manifest = prepare_model(architecture, {"path": str(tiny_models[architecture]), "layers": [1]}, root / architecture)
    assert manifest["n_layers"] == 4
    cache_shard(root / architecture / "manifest.json", windows_file, [1], root / f"{architecture}_acts")
    return root / f"{architecture}_acts" / "layer1.h5"


def test_different_tokenizers_align_at_common_boundaries(tiny_models, windows, tmp_path):
    windows_file = tmp_path / "windows.jsonl"
    write_windows(windows, windows_file)
    cache_a = cache(tiny_models, "gpt_neox", windows_file, tmp_path)  # byte-level BPE
    cache_b = cache(tiny_models, "llama", windows_file, tmp_path)  # metaspace BPE, another vocabulary
    summary = write_alignment(cache_a, cache_b, tmp_path / "pair.h5", "neox", "llama")
    positions_a, positions_b = read_positions(cache_a), read_positions(cache_b)

    # Independent reference: the set of (window, end offset) shared by both models.
    ends_a = set(zip(positions_a["window_index"].tolist(), positions_a["char_end"].tolist()))
    ends_b = set(zip(positions_b["window_index"].tolist(), positions_b["char_end"].tolist()))
    common = ends_a & ends_b
    assert 0 < len(common) < max(len(ends_a), len(ends_b)), "the tokenizers differ but share some boundaries"

    with h5py.File(tmp_path / "pair.h5", "r") as aligned:
        rows_a, rows_b = aligned["rows_a"][:], aligned["rows_b"][:]
        assert aligned.attrs["n_aligned"] == len(common) == len(rows_a)
        assert not aligned.attrs["same_tokenizer"]
    np.testing.assert_array_equal(positions_a["window_index"][rows_a], positions_b["window_index"][rows_b])
    np.testing.assert_array_equal(positions_a["char_end"][rows_a], positions_b["char_end"][rows_b])
    assert set(zip(positions_a["window_index"][rows_a].tolist(), positions_a["char_end"][rows_a].tolist())) == common
    # Each model read the same prefix: the window text up to the shared end offset.
    by_index = {w.window_index: w for w in windows}
    for row in rows_a[:50]:
        window = by_index[positions_a["window_index"][row]]
        assert window.char_start < positions_a["char_end"][row] <= window.char_start + len(window.text)
    assert summary["fraction_aligned_a"] == len(common) / len(positions_a["char_end"])
    assert summary["fraction_aligned_b"] == len(common) / len(positions_b["char_end"])
    write_alignment_summary(summary, tmp_path / "pair.tsv")
    table = pd.read_csv(tmp_path / "pair.tsv", sep="\t")
    assert table.loc[0, "n_aligned"] == len(common)


def test_same_tokenizer_aligns_every_position_one_to_one(tiny_models, windows, tmp_path):
    windows_file = tmp_path / "windows.jsonl"
    write_windows(windows, windows_file)
    cache_a = cache(tiny_models, "gpt_neox", windows_file, tmp_path)
    cache_b = cache(tiny_models, "gemma2", windows_file, tmp_path)  # same tokenizer, other architecture
    summary = write_alignment(cache_a, cache_b, tmp_path / "pair.h5", "neox", "gemma2")
    assert summary["same_tokenizer"] and summary["fraction_aligned_a"] == summary["fraction_aligned_b"] == 1.0
    with h5py.File(tmp_path / "pair.h5", "r") as aligned:
        np.testing.assert_array_equal(aligned["rows_a"][:], np.arange(summary["n_positions_a"]))
        np.testing.assert_array_equal(aligned["rows_b"][:], np.arange(summary["n_positions_b"]))


def test_several_tokens_ending_at_one_character_use_the_last():
    # Model A splits one multi-byte character into two byte tokens ending at the same offset.
    positions_a = {"window_index": np.array([0, 0, 0, 1]), "char_end": np.array([3, 5, 5, 2]),
                   "doc_index": np.array([7, 7, 7, 8]), "token_ids": np.arange(4)}
    positions_b = {"window_index": np.array([0, 0, 1, 1]), "char_end": np.array([5, 9, 1, 2]),
                   "doc_index": np.array([7, 7, 8, 8]), "token_ids": np.arange(4)}
    aligned = align_positions(positions_a, positions_b)
    np.testing.assert_array_equal(aligned["rows_a"], [2, 3])
    np.testing.assert_array_equal(aligned["rows_b"], [0, 3])
    np.testing.assert_array_equal(aligned["char_end"], [5, 2])
    np.testing.assert_array_equal(aligned["doc_index"], [7, 8])
