"""One test per kind of user mistake: each ends in one line naming the key and the fix."""

import copy
import subprocess
import sys

import pytest
import yaml

from sae_universality.config import SCHEMA, check_config
from sae_universality.errors import UserError

from conftest import REPO

with open(REPO / "config.yaml") as stream:
    DEFAULT = yaml.safe_load(stream)


def checked(changes: dict | None = None, remove: tuple = ()) -> dict:
    config = copy.deepcopy(DEFAULT)
    for dotted, value in (changes or {}).items():
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    for dotted in remove:
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        del node[last]
    return check_config(config, SCHEMA)


def test_default_config_is_valid_and_defaults_are_filled():
    config = checked()
    assert config["models"]["smollm2"]["batch_size"] == 8
    assert config["corpus"]["windows_per_document"] is None
    assert config["activations"]["shards"] == 1


# What a user must choose: a model's source and layers, a pair's models, a dataset's name.
CHOICES_WITHOUT_DEFAULT = {
    "models.*.hf", "models.*.path", "models.*.embedded", "models.*.gguf", "models.*.layers",
    "models.*.rerandomized", "models.*.rerandomized.from",
    "pairs[].a", "pairs[].b", "corpus.hf_dataset.name",
    "models.*.sae.pretrained", "models.*.sae.pretrained.format", "models.*.sae.pretrained.path",
    "models.*.sae.pretrained.repo", "models.*.sae.pretrained.id",
}


def test_every_schema_key_has_a_description_and_a_default():
    with open(SCHEMA) as stream:
        schema = yaml.safe_load(stream)

    def walk(node, where):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{where}.{key} has no description"
            path = f"{where}.{key}".lstrip(".")
            if path not in CHOICES_WITHOUT_DEFAULT:
                assert "default" in sub, f"{path} has no default"
            walk(sub, path)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{where}.*".lstrip("."))
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}[]".lstrip("."))

    walk(schema, "")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"corpus.windw_chars": 5}, r"'windw_chars' was unexpected\) in corpus; allowed keys: .*window_chars"),
        ({"corpus.window_chars": "many"}, r"corpus.window_chars: 'many' is not of type 'integer' \(corpus.window_chars: Maximum characters"),
        ({"corpus.source": "web"}, r"corpus.source: 'web' is not one of"),
        ({"activations.dtype": "int8"}, r"activations.dtype: 'int8' is not one of \['float16', 'float32'\]"),
        ({"models.smollm2.layers": [3, 40]}, r"models.smollm2.layers: \[40\] out of range; smollm2 has blocks 0..29"),
        ({"models.smollm2.layers": [-1]}, r"models.smollm2.layers\[0\]: -1 is less than the minimum of 0"),
        ({"models.smollm2.layers": []}, r"models.smollm2.layers: \[\] should be non-empty"),
        ({"models.smollm2.hf": "EleutherAI/pythia-70m"}, r"models.smollm2: give exactly one of hf, path, embedded, gguf, rerandomized \(found hf, embedded\)"),
        ({"models.smollm2.embedded": "gpt-5"}, r"models.smollm2.embedded: 'gpt-5' is not one of"),
        ({"models.gemma3.path": "/nonexistent/model"}, r"give exactly one of"),
        ({"pairs": [{"a": "smollm2", "b": "gemma9"}]}, r"pairs\[0\].b: model 'gemma9' is not defined; use one of smollm2, gemma3"),
        ({"pairs": [{"a": "smollm2"}]}, r"pairs\[0\]: 'b' is a required property"),
        ({"pairs": [{"a": "smollm2", "b": "gemma3"}] * 2}, r"pairs\[1\]: smollm2 vs gemma3 is listed twice"),
        ({"models.bad/name": {"embedded": "gemma3-270m", "layers": [1]}}, r"id 'bad/name' is not safe in file names"),
        ({"models.a--b": {"embedded": "gemma3-270m", "layers": [1]}}, r"id 'a--b' is not safe in file names"),
        ({"corpus.source": "files"}, r"corpus.paths: empty while corpus.source is files"),
        ({"corpus.source": "files", "corpus.paths": ["/no/such.txt"]}, r"corpus.paths: /no/such.txt does not exist"),
        ({"corpus.source": "hf-dataset"}, r"corpus.hf_dataset.name: missing"),
        ({"models.smollm2.sae": {"train": {"widht": 3}}}, r"models.smollm2.sae.train: unknown key\(s\) widht; allowed: "),
        ({"models.smollm2.sae": {"pretrained": {"format": "sparsify", "repo": "x/y", "path": "/tmp"}}},
         r"models.smollm2.sae.pretrained: give exactly one of path \(a local folder\) or repo"),
        ({"models.smollm2.sae": {"pretrained": {"format": "onnx", "repo": "x/y"}}}, r"models.smollm2.sae.pretrained.format: 'onnx' is not one of"),
        ({"saes.train.architecture": "gated"}, r"saes.train.architecture: 'gated' is not one of \['topk', 'batchtopk', 'relu'\]"),
        ({"matching.one_to_one": "best"}, r"matching.one_to_one: 'best' is not one of"),
        ({"similarity.metrics": ["svcca", "cosine"]}, r"similarity.metrics\[1\]: 'cosine' is not one of"),
    ],
)
def test_user_mistakes_give_one_clear_line(changes, message):
    with pytest.raises(UserError, match=message) as raised:
        checked(changes)
    assert "\n" not in str(raised.value)


def test_missing_source_and_missing_path(tmp_path):
    with pytest.raises(UserError, match=r"models.gemma3: give exactly one of hf, path, embedded, gguf, rerandomized \(found none\)"):
        checked(remove=("models.gemma3.embedded",))
    config = copy.deepcopy(DEFAULT)
    config["models"]["gemma3"] = {"path": str(tmp_path / "nothing"), "layers": [0]}
    with pytest.raises(UserError, match=r"models.gemma3.path: .*nothing is not a folder"):
        check_config(config, SCHEMA)


def test_layers_of_a_local_model_are_checked_against_its_config(tiny_models):
    config = copy.deepcopy(DEFAULT)
    config["models"]["gemma3"] = {"path": str(tiny_models["gemma"]), "layers": [0, 4]}
    with pytest.raises(UserError, match=r"models.gemma3.layers: \[4\] out of range; gemma3 has blocks 0..3"):
        check_config(config, SCHEMA)


def test_snakemake_stops_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pairs:\n  - {a: smollm2, b: nobody}\n")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("sae-universality:")]
    assert errors == ["sae-universality: pairs[0].b: model 'nobody' is not defined; use one of smollm2, gemma3 or add it under models"]
    assert "Traceback" not in result.stderr
