"""Loading models the same way in every job: transformers models and tokenizers, manifests, blocks, decoders.

`load_model` (in models/sources.py, since how a prepared model loads depends
on its source) builds on `load_transformers`; jobs that only decode token ids
use `token_decoder`, which avoids importing transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..io import hub_offline

MANIFEST = "manifest.json"


def read_manifest(manifest_path: str | Path) -> dict:
    return json.loads(Path(manifest_path).read_text())


def load_transformers(name: str, kind: str, location: str, revision: str | None, dtype=None, device=None):
    """(model, tokenizer) of a causal LM, in eval mode; one clear line when it cannot be had.

    `kind` "path" reads the folder `location`; any other kind reads the hub id
    `location` (from the cache when HF_HUB_OFFLINE=1).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind == "path" and not Path(location).is_dir():
        raise UserError(f"models.{name}.path: {location} is not a folder; give a Hugging Face model folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(location, revision=revision, dtype=dtype or torch.float32)
    except OSError as error:
        if kind == "path":
            raise UserError(f"models.{name}.path: {location} holds no loadable model ({str(error).splitlines()[0]})") from None
        where = "the hub is off (HF_HUB_OFFLINE=1)" if hub_offline() else "the hub is unreachable or the id is wrong"
        raise UserError(
            f"models.{name}: '{location}' (revision {revision or 'main'}) is not in the Hugging Face cache and {where}; "
            "run once with network to cache it, or point models." + name + ".path at a local copy"
        ) from None
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer


def describe_model(model, tokenizer, tokenizer_name: str) -> dict:
    """What a manifest says about a loaded model: architecture, n_layers, d_model, tokenizer, vocab_size."""
    text_config = model.config.get_text_config()
    return {"architecture": model.config.model_type, "n_layers": int(text_config.num_hidden_layers),
            "d_model": int(text_config.hidden_size), "tokenizer": tokenizer_name, "vocab_size": int(len(tokenizer))}


def token_decoder(manifest_path: str | Path) -> Callable[[list[int]], str]:
    """`decode(ids) -> str` of a prepared model's tokenizer, as `tokenizer.decode(ids)` gives it.

    Jobs that only turn token ids into text (matching, reports) read the folder's
    tokenizer.json with the `tokenizers` library: the same Rust decoder that
    transformers' fast tokenizers call, without importing transformers (seconds
    per job). Where that file is missing, or the tokenizer cleans up spaces after
    decoding, the transformers tokenizer is loaded instead.
    """
    manifest = read_manifest(manifest_path)
    folder = Path(manifest["load_from"])
    tokenizer_file, settings_file = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if (tokenizer_file.is_file() and settings_file.is_file()
            and not json.loads(settings_file.read_text()).get("clean_up_tokenization_spaces", False)):
        from tokenizers import Tokenizer

        rust_tokenizer = Tokenizer.from_file(str(tokenizer_file))
        return lambda ids: rust_tokenizer.decode(list(ids), skip_special_tokens=False)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(manifest["load_from"], revision=manifest["revision"] or None)
    return tokenizer.decode


def decoder_layers(model):
    """The ModuleList of transformer blocks of a causal LM (Llama, Gemma 1-3, GPT-NeoX, GPT-2, ...)."""
    base = model.base_model
    for attribute in ("layers", "h", "blocks"):
        layers = getattr(base, attribute, None)
        if layers is not None:
            return layers
    language_model = getattr(base, "language_model", None)  # multimodal wrappers
    if language_model is not None and hasattr(language_model, "layers"):
        return language_model.layers
    raise UserError(f"cannot find the transformer blocks of a {type(model).__name__}; this architecture is not supported yet")
