"""GGUF models dequantized to float32 model folders, once per machine.

A GGUF source (`embedded`, `gguf`: see models/sources.py) is dequantized into
an ordinary model folder, so later jobs load it in seconds. The folder is kept
in a cache shared by every experiment of the machine (`model_cache_root`),
keyed by the file's content and the versions of the code that dequantizes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

from ..io import atomic_directory
from .loading import describe_model

CACHE_VARIABLE = "SAE_UNIVERSALITY_CACHE"
_DESCRIPTION = "prepared.json"


class GgufFile(Protocol):
    """What a GGUF source tells the cache about the file of a location (the source's config value)."""

    def origin(self, location: str) -> str:
        """The file's origin as manifests name it: a pinned package or the file's name."""

    def content_key(self, location: str) -> str:
        """A name that changes with the file's content."""

    def locate_gguf(self, location: str, scratch: Path) -> Path:
        """The GGUF file's path, assembled in the folder `scratch` if needed."""


def model_cache_root() -> Path | None:
    """Where dequantized GGUF models are kept for every experiment of this machine (None: nowhere).

    `$SAE_UNIVERSALITY_CACHE` (the value `off` turns the cache off), else
    `$XDG_CACHE_HOME/sae-universality`, else `~/.cache/sae-universality`.
    """
    configured = os.environ.get(CACHE_VARIABLE)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "none", "0") else Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sae-universality"


def file_digest_key(location: str) -> str:
    """`<file stem>-<first 16 hex digits of its sha256>`: a content key of a GGUF file."""
    digest = hashlib.sha256()
    with open(location, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 24), b""):
            digest.update(block)
    return f"{Path(location).stem}-{digest.hexdigest()[:16]}"


def _dequantization_key(source: GgufFile, location: str) -> str:
    """A folder name that changes with the GGUF's content and with the code that dequantizes it."""
    import importlib.metadata  # versions without importing transformers: a cache hit then costs no import

    tools = "-".join(f"{package}{importlib.metadata.version(package)}" for package in ("transformers", "gguf"))
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", f"{source.content_key(location)}-{tools}")


def _gguf_tokenizer_name(source: GgufFile, location: str) -> str:
    """Where the tokenizer came from, for the manifest and the caches' provenance.

    A tokenizer read from a GGUF names the scratch folder it was unpacked in, which is gone after the job.
    """
    return f"{source.origin(location)} (GGUF)"


def _dequantize_into(source: GgufFile, location: str, folder: Path) -> dict:
    """Dequantize a GGUF model to a float32 model folder; return what its manifest says about it."""
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        model, tokenizer = _load_gguf(source.locate_gguf(location, Path(scratch)))
    # A GGUF-loaded model refuses save_pretrained until it forgets it was quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    described = describe_model(model, tokenizer, _gguf_tokenizer_name(source, location))
    (folder / _DESCRIPTION).write_text(json.dumps(described, indent=2) + "\n")
    return described


def dequantized(source: GgufFile, location: str, out_dir: Path) -> tuple[Path, dict]:
    """(model folder, its description): from the machine's cache when there, else dequantized now.

    Without a cache the folder is `out_dir/weights`, as before. With one, the first
    experiment on a machine fills `<cache>/models/<key>` (written aside, then renamed
    into place, so a concurrent job never sees half a model) and every later one
    reuses it: Gemma-3 costs 45 s of CPU to dequantize, a cached one nothing.
    """
    root = model_cache_root()
    if root is None:
        folder = out_dir / "weights"
        with atomic_directory(folder) as temporary:
            described = _dequantize_into(source, location, Path(temporary))
        return folder, described
    folder = root / "models" / _dequantization_key(source, location)
    if not (folder / _DESCRIPTION).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            _dequantize_into(source, location, temporary)
            try:
                # Never replaces a folder another job renamed into place first (others may be reading it).
                os.rename(temporary, folder)
            except OSError:
                if not (folder / _DESCRIPTION).is_file():
                    raise
        finally:
            if temporary.exists():
                shutil.rmtree(temporary)
    # Folders cached before the tokenizer was named by its origin still name a scratch folder.
    return folder, {**json.loads((folder / _DESCRIPTION).read_text()), "tokenizer": _gguf_tokenizer_name(source, location)}


@contextlib.contextmanager
def _gguf_parsed_once():
    """Within the block, every `gguf.GGUFReader(path)` of one path returns the same reader.

    transformers opens a GGUF file three times (tokenizer, config, weights), and
    parsing its metadata (the vocabulary as one field per token) costs more than
    dequantizing the weights: Gemma-3-270M's 262k-token vocabulary takes ~20 s a
    parse on this project's CPUs. transformers imports the class from the module
    at each call, so replacing the module attribute is enough.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def shared_reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _load_gguf(gguf_file: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import torch

    folder, filename = str(gguf_file.parent), gguf_file.name
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    return model, tokenizer
