"""Checking an experiment's configuration before any job runs.

`check_config` validates against workflow/schemas/config.schema.yaml with
snakemake.utils.validate (which also fills in the defaults), then makes the
checks a schema cannot: pairs name defined models, corpus files exist, SAE
settings fit. The checks of each model entry (its source exists, its layers
exist in the model, a re-randomized model names a model with a source of its
own) belong to the models stage, which this ground-floor module does not
import: callers that check a whole experiment pass them in as `check_models`
(`models.sources.check_model_entries`). Every mistake becomes one `UserError`
line naming the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .errors import UserError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def check_config(config: dict, schema: str | Path = SCHEMA,
                 check_models: Callable[[dict], None] | None = None) -> dict:
    """Validate `config` in place (defaults filled in) and return it; raise UserError on the first mistake.

    `check_models(models)` checks the model entries (sources, layers) after the
    schema and the floor controls; without it they are left unchecked. The
    workflow passes `models.sources.check_model_entries`.
    """
    _validate_schema(config, Path(schema))
    if config["pairs"] == "all":
        config["pairs"] = every_pair(config["models"])
    _check_pairs(config["pairs"], config["models"])
    if _add_floor_controls(config):
        _validate_schema(config, Path(schema))  # fills the defaults of the added models
    if check_models is not None:
        check_models(config["models"])
    _check_cards(config)
    _check_corpus(config["corpus"])
    _check_saes(config)
    _check_similarity(config["similarity"])
    return config


def _validate_schema(config: dict, schema: Path) -> None:
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(schema))
    except WorkflowError as error:
        # snakemake formats its arguments into one string; the jsonschema error is its cause.
        cause = error.__cause__ or error.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            cause = None
        if cause is None:
            raise UserError(f"config: {str(error).splitlines()[0]}") from None
        raise UserError(describe_validation_error(cause)) from None


def describe_validation_error(error) -> str:
    """One line: where in the config, what is wrong, what the key is for."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        # A key with alternatives (pairs: a list, or "all"): say what is wrong in the alternative of the value's kind.
        from jsonschema.exceptions import best_match

        kinds = {list: "array", str: "string", dict: "object", bool: "boolean", int: "integer", float: "number"}
        kind = kinds.get(type(error.instance))
        alternatives = error.validator_value
        same_kind = [sub for sub in error.context
                     if alternatives[sub.relative_schema_path[0]].get("type") == kind] or list(error.context)
        described = describe_validation_error(best_match(same_kind))
        hint = error.schema.get("description", "").strip()
        where = _key_path(error.absolute_path) or "config"
        return described if described.endswith(")") or not hint else f"{described} ({where}: {hint})"
    where = _key_path(error.absolute_path) or "config"
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"config: {error.message} in {where}; allowed keys: {allowed}"
    if error.validator == "pattern" and error.schema.get("pattern", "").startswith("^[A-Za-z0-9]"):
        return (f"config: {where}: id {error.instance!r} is not safe in file names; "
                "use letters, digits, '.', '_' and '-' (no '--'), starting with a letter or digit")
    message = error.message if len(error.message) < 160 else error.message[:157] + "..."
    hint = error.schema.get("description", "")
    hint = f" ({where}: {hint.strip()})" if hint and error.validator != "required" else ""
    return f"config: {where}: {message}{hint}"


def _key_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def every_pair(models: dict) -> list[dict]:
    """`pairs: all`: every unordered pair of the models, in their order (re-randomized floor models excepted)."""
    import itertools

    real = [name for name, entry in models.items() if "rerandomized" not in entry]
    if len(real) < 2:
        raise UserError(f"pairs: all needs at least two models, and models has {len(real)} ({', '.join(real)}); "
                        "add a model under models or list the pairs")
    return [{"a": a, "b": b, "floor": False} for a, b in itertools.combinations(real, 2)]


def _check_pairs(pairs: list[dict], models: dict) -> None:
    seen = set()
    for index, pair in enumerate(pairs):
        for side in ("a", "b"):
            if pair[side] not in models:
                raise UserError(
                    f"pairs[{index}].{side}: model '{pair[side]}' is not defined; use one of {', '.join(models)} or add it under models"
                )
        for side in ("a", "b"):
            chosen, available = pair.get(f"layers_{side}"), models[pair[side]].get("layers", [])
            outside = sorted(set(chosen or []) - set(available))
            if outside:
                raise UserError(f"pairs[{index}].layers_{side}: layer(s) {', '.join(map(str, outside))} of "
                                f"{pair[side]} are not in models.{pair[side]}.layers ({', '.join(map(str, available))}); "
                                "add them there or remove them here")
        key = (pair["a"], pair["b"])
        if key in seen:
            raise UserError(f"pairs[{index}]: {pair['a']} vs {pair['b']} is listed twice; remove one")
        seen.add(key)


FLOOR_SUFFIX = "-rerandomized"


def _add_floor_controls(config: dict) -> bool:
    """For each pair with `floor: true`, a model '<b>-rerandomized' and the pair (a, it); True if any added.

    The re-randomized model gets B's layers and batch size, and B's training settings (a
    published SAE of B would not fit the re-randomized model, so one is trained instead).
    """
    models, added = config["models"], False
    for index, pair in enumerate(list(config["pairs"])):
        if not pair.get("floor"):
            continue
        floor = pair["b"] + FLOOR_SUFFIX
        source = models[pair["b"]]
        if "rerandomized" in source:
            raise UserError(f"pairs[{index}].floor: {pair['b']} is already re-randomized; set floor on the pair "
                            "with the real model")
        if floor not in models:
            sae = {key: value for key, value in source["sae"].items() if key == "train"}
            models[floor] = {"rerandomized": {"from": pair["b"]}, "layers": list(source["layers"]),
                             "batch_size": source["batch_size"], "sae": sae}
        elif models[floor].get("rerandomized", {}).get("from") != pair["b"]:
            raise UserError(f"models.{floor}: the floor control of pairs[{index}] needs this id for a re-randomized "
                            f"copy of {pair['b']}; rename that model")
        if not any(other["a"] == pair["a"] and other["b"] == floor for other in config["pairs"]):
            config["pairs"].append({"a": pair["a"], "b": floor, "floor": False,
                                    **{key: pair[key] for key in ("layers_a", "layers_b") if key in pair}})
        added = True
    return added


def pair_layers(config: dict) -> dict[tuple[str, str], tuple[list[int], list[int]]]:
    """{(a, b): (layers of a, layers of b)} compared in each pair (after check_config): the pair's
    `layers_a`/`layers_b` where set, else all of the model's layers; sorted."""
    models = config["models"]
    return {(pair["a"], pair["b"]): (sorted(pair.get("layers_a") or models[pair["a"]]["layers"]),
                                     sorted(pair.get("layers_b") or models[pair["b"]]["layers"]))
            for pair in config["pairs"]}


def _check_cards(config: dict) -> None:
    compared = pair_layers(config)
    for index, named in enumerate(config.get("cards", {}).get("pairs", [])):
        key = (named["a"], named["b"])
        if key not in compared:
            raise UserError(f"cards.pairs[{index}]: {named['a']} vs {named['b']} is not a compared pair; use one of "
                            f"{', '.join(f'{a} vs {b}' for a, b in compared)}")
        for side, layers in zip(("a", "b"), compared[key]):
            if named[f"layer_{side}"] not in layers:
                raise UserError(f"cards.pairs[{index}].layer_{side}: {named[f'layer_{side}']} is not a layer this pair "
                                f"compares ({', '.join(map(str, layers))})")


def floor_controls(config: dict) -> dict[tuple[str, str], tuple[str, str]]:
    """{(a, b): (a, b's re-randomized copy)} for the pairs with a floor control (after check_config)."""
    return {(pair["a"], pair["b"]): (pair["a"], pair["b"] + FLOOR_SUFFIX) for pair in config["pairs"]
            if pair.get("floor")}

def _check_corpus(corpus: dict) -> None:
    if corpus["source"] == "files":
        if not corpus["paths"]:
            raise UserError("corpus.paths: empty while corpus.source is files; list .txt or .jsonl files")
        for path in corpus["paths"]:
            if not Path(path).is_file():
                raise UserError(f"corpus.paths: {path} does not exist; fix the path or remove it")
    if corpus["source"] == "hf-dataset" and not corpus["hf_dataset"].get("name"):
        raise UserError("corpus.hf_dataset.name: missing while corpus.source is hf-dataset; e.g. Skylion007/openwebtext")


def _check_similarity(similarity: dict) -> None:
    if ("heldout_svcca" in similarity["metrics"] and similarity["svcca_folds"] == 1
            and similarity["svcca_components"] is None):
        raise UserError("similarity.svcca_folds: 1 leaves heldout_svcca no folds to choose its components on; "
                        "use 2 or more folds, or set similarity.svcca_components")


def _check_saes(config: dict) -> None:
    train_keys = set(config["saes"]["train"])
    for name, entry in config["models"].items():
        sae = entry["sae"]
        unknown = sorted(set(sae.get("train", {})) - train_keys)
        if unknown:
            raise UserError(f"models.{name}.sae.train: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(train_keys))}")
        pretrained = sae.get("pretrained")
        if pretrained is not None:
            if ("path" in pretrained) == ("repo" in pretrained):
                raise UserError(f"models.{name}.sae.pretrained: give exactly one of path (a local folder) or repo (a hub repo)")
            if "path" in pretrained and not Path(pretrained["path"]).exists():
                raise UserError(f"models.{name}.sae.pretrained.path: {pretrained['path']} does not exist; fix the path or use repo")
            if "train" in sae and sae["train"]:
                raise UserError(f"models.{name}.sae: give either train or pretrained, not both")


def sae_names(config: dict, model: str) -> list[str]:
    """Names of the SAEs of a model at each layer: 'pretrained', or 'seed<N>' per training seed."""
    if "pretrained" in config["models"][model]["sae"]:
        return ["pretrained"]
    return [f"seed{seed}" for seed in config["saes"]["seeds"]]

