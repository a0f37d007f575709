"""One test per kind of user mistake: each ends in one line naming the key and the fix."""

import copy
import subprocess
import sys

import pytest
import yaml

from sae_universality.config import SCHEMA, check_config
from sae_universality.errors import UserError
from sae_universality.models.sources import SOURCES, ModelSource, check_model_entries, source_entry, source_keys

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
    return check_config(config, SCHEMA, check_models=check_model_entries)


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
    *(f"cards.pairs[].{key}" for key in ("a", "b", "layer_a", "layer_b", "feature_a", "feature_b")),
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
        ({"pairs": "some"}, r"^config: pairs: 'some' is not one of \['all'\] \(pairs: Model pairs to compare"),
        ({"pairs": 3}, r"^config: pairs: 3 is not of type 'string' \(pairs: Model pairs to compare.* or \"all\""),
        ({"models": {"smollm2": DEFAULT["models"]["smollm2"]}, "pairs": "all"},
         r"^pairs: all needs at least two models, and models has 1 \(smollm2\); add a model under models or list"),
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


def test_pairs_all_is_every_unordered_pair_in_the_order_of_the_models():
    config = copy.deepcopy(DEFAULT)
    config["models"]["third"] = copy.deepcopy(config["models"]["gemma3"])
    config["models"]["gemma3-rerandomized"] = {"rerandomized": {"from": "gemma3"}, "layers": [10]}
    config["pairs"] = "all"
    pairs = [(pair["a"], pair["b"]) for pair in check_config(config, SCHEMA)["pairs"]]
    assert pairs == [("smollm2", "gemma3"), ("smollm2", "third"), ("gemma3", "third")]  # no floor model in them


def test_a_pair_may_compare_a_subset_of_each_models_layers():
    from sae_universality.config import pair_layers

    config = copy.deepcopy(DEFAULT)
    config["models"]["third"] = copy.deepcopy(config["models"]["gemma3"])
    config["pairs"] = [{"a": "smollm2", "b": "gemma3", "layers_b": [14]}, {"a": "gemma3", "b": "third"}]
    layers = pair_layers(check_config(config, SCHEMA))
    assert layers[("smollm2", "gemma3")] == (sorted(DEFAULT["models"]["smollm2"]["layers"]), [14])
    assert layers[("gemma3", "third")] == (sorted(DEFAULT["models"]["gemma3"]["layers"]),) * 2
    config = copy.deepcopy(DEFAULT)
    config["pairs"] = [{"a": "smollm2", "b": "gemma3", "layers_a": [9, 4, 5]}]
    with pytest.raises(UserError, match=r"^pairs\[0\]\.layers_a: layer\(s\) 4, 5 of smollm2 are not in "
                                        r"models\.smollm2\.layers \(9, 15\); add them there or remove them here$"):
        check_config(config, SCHEMA)


def test_missing_source_and_missing_path(tmp_path):
    with pytest.raises(UserError, match=r"models.gemma3: give exactly one of hf, path, embedded, gguf, rerandomized \(found none\)"):
        checked(remove=("models.gemma3.embedded",))
    config = copy.deepcopy(DEFAULT)
    config["models"]["gemma3"] = {"path": str(tmp_path / "nothing"), "layers": [0]}
    with pytest.raises(UserError, match=r"models.gemma3.path: .*nothing is not a folder"):
        check_config(config, SCHEMA, check_models=check_model_entries)


def test_layers_of_a_local_model_are_checked_against_its_config(tiny_models):
    config = copy.deepcopy(DEFAULT)
    config["models"]["gemma3"] = {"path": str(tiny_models["gemma"]), "layers": [0, 4]}
    with pytest.raises(UserError, match=r"models.gemma3.layers: \[4\] out of range; gemma3 has blocks 0..3"):
        check_config(config, SCHEMA, check_models=check_model_entries)


@pytest.mark.parametrize(
    ("mistake", "line"),
    [
        ("pairs:\n  - {a: smollm2, b: nobody}\n",
         "pairs[0].b: model 'nobody' is not defined; use one of smollm2, gemma3 or add it under models"),
        # A model entry's mistake is the models stage's check, which the workflow passes to check_config.
        ("models:\n  gemma3: {embedded: gemma3-270m, layers: [40]}\n",
         "models.gemma3.layers: [40] out of range; gemma3 has blocks 0..17"),
    ],
)
def test_snakemake_stops_with_one_line_and_no_traceback(tmp_path, mistake, line):
    bad = tmp_path / "bad.yaml"
    bad.write_text(mistake)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("sae-universality:")]
    assert errors == [f"sae-universality: {line}"]
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- the registry of model sources

NOT_SOURCE_KEYS = {"layers", "batch_size", "sae", "family"}  # what a model entry says besides where the model comes from


def model_entry_schema() -> dict:
    with open(SCHEMA) as stream:
        return yaml.safe_load(stream)["properties"]["models"]["additionalProperties"]


def test_the_source_registry_equals_the_schemas_source_keys():
    keys = set(model_entry_schema()["properties"]) - NOT_SOURCE_KEYS
    assert sorted(source_keys()) == sorted(keys) == sorted(["hf", "revision", "path", "embedded", "gguf", "rerandomized"])
    assert list(SOURCES) == ["hf", "path", "embedded", "gguf", "rerandomized"]
    assert SOURCES["hf"].owns == ("revision",) and all(not source.owns for key, source in SOURCES.items() if key != "hf")
    # The schema's prose names every source, in the registry's order.
    assert "one source: hf, path, embedded, gguf or rerandomized." in " ".join(
        yaml.safe_load(SCHEMA.read_text())["properties"]["models"]["description"].split())


def test_the_embedded_models_equal_the_schemas_enum():
    from sae_universality.models.embedded import EMBEDDED

    assert list(EMBEDDED) == model_entry_schema()["properties"]["embedded"]["enum"]


def test_the_prepare_rule_keys_on_the_registrys_source_keys_and_nothing_else():
    entry = {"hf": "EleutherAI/pythia-70m", "revision": "step1000", "layers": [1, 2], "batch_size": 4,
             "sae": {"train": {"k": 8}}}
    assert source_entry(entry) == {"hf": "EleutherAI/pythia-70m", "revision": "step1000"}
    every_source = {key: f"value of {key}" for key in source_keys()}
    assert source_entry({**every_source, "layers": [0], "batch_size": 8, "sae": {}}) == every_source
    assert source_entry({"rerandomized": {"from": "a", "seed": 3}, "layers": [0]}) == {"rerandomized": {"from": "a", "seed": 3}}
    # The workflow's params of prepare_model are this function's answer, not a list of its own.
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    body = common.split("def model_source_entry(wildcards):")[1].split("\ndef ")[0]
    assert "return source_entry(MODELS[wildcards.model])" in body
    assert not any(f'"{key}"' in body for key in source_keys())


def test_a_source_registered_in_a_test_is_checked_counted_and_keyed_through_the_registry(monkeypatch):
    """A new source: one class and one table entry, nothing else touched."""

    class ZooSource(ModelSource):
        key = "zoo"
        owns = ("keeper",)

        def check(self, name, location, models):
            if location != "lion":
                raise UserError(f"models.{name}.zoo: '{location}' is not in the zoo; use lion")

        def n_layers(self, location, entry, models):
            return 2

    monkeypatch.setitem(SOURCES, "zoo", ZooSource())
    check_model_entries({"a": {"zoo": "lion", "layers": [0, 1]}})
    with pytest.raises(UserError, match=r"^models.a.layers: \[2\] out of range; a has blocks 0..1$"):
        check_model_entries({"a": {"zoo": "lion", "layers": [1, 2]}})
    with pytest.raises(UserError, match=r"^models.a.zoo: 'tiger' is not in the zoo; use lion$"):
        check_model_entries({"a": {"zoo": "tiger", "layers": [0]}})
    with pytest.raises(UserError, match=r"^models.a: give exactly one of hf, path, embedded, gguf, rerandomized, zoo "
                                        r"\(found path, zoo\)$"):
        check_model_entries({"a": {"zoo": "lion", "path": "/x", "layers": [0]}})
    with pytest.raises(UserError, match=r"\(a model with hf, path, embedded, gguf or zoo\)$"):
        check_model_entries({"a": {"zoo": "lion", "layers": [0]}, "b": {"rerandomized": {"from": "c"}, "layers": [0]}})
    assert source_entry({"zoo": "lion", "keeper": "Ann", "layers": [0]}) == {"zoo": "lion", "keeper": "Ann"}


def test_model_entries_are_checked_only_where_check_models_is_given():
    config = copy.deepcopy(DEFAULT)
    config["models"]["gemma3"]["layers"] = [40]
    assert check_config(copy.deepcopy(config), SCHEMA)["models"]["gemma3"]["layers"] == [40]
    with pytest.raises(UserError, match=r"^models.gemma3.layers: \[40\] out of range; gemma3 has blocks 0..17$"):
        check_config(config, SCHEMA, check_models=check_model_entries)


@pytest.mark.parametrize(("named", "line"), [
    ({"a": "gemma3", "b": "smollm2"}, r"cards.pairs\[0\]: gemma3 vs smollm2 is not a compared pair; use one of smollm2 vs gemma3"),
    ({"layer_b": 6}, r"cards.pairs\[0\].layer_b: 6 is not a layer this pair compares \(10, 14\)"),
])
def test_a_named_card_must_be_a_compared_pair_and_layer(named, line):
    config = copy.deepcopy(DEFAULT)
    config["cards"] = {"pairs": [{"a": "smollm2", "b": "gemma3", "layer_a": 9, "layer_b": 10, "feature_a": 1,
                                  "feature_b": 2, **named}]}
    with pytest.raises(UserError, match=f"^{line}$"):
        check_config(config, SCHEMA)
