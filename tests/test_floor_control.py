"""The floor control: a re-randomized copy of a model, its token embeddings kept, prepared like any model."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from sae_universality.config import SCHEMA, check_config
from sae_universality.errors import UserError
from sae_universality.models.rerandomize import rerandomize_parameters
from sae_universality.models.sources import check_model_entries, known_n_layers, load_model, prepare_model

from conftest import REPO

with open(REPO / "config.yaml") as stream:
    DEFAULT = yaml.safe_load(stream)


def load_tiny(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def give_each_tensor_its_own_distribution(model, seed=0):
    """Like a trained model: every tensor has a mean and spread of its own (a random init shares them).

    The final norm is set constant, to check that a constant tensor is kept.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for index, (name, parameter) in enumerate(model.named_parameters()):
            mean, std = 0.3 * (index % 7) - 1.0, 0.01 * (1 + index % 5)
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std + mean)
        final_norm = [p for n, p in model.named_parameters() if "norm" in n and "layers" not in n][-1]
        final_norm.fill_(1.25)
    return model


def float64_statistics(model) -> dict:
    """{name: (values as float64 numpy, mean, std with Bessel's correction)} of every parameter."""
    statistics = {}
    for name, parameter in model.named_parameters():
        values = parameter.detach().cpu().numpy().astype(np.float64)
        statistics[name] = (values, values.mean(), values.std(ddof=1) if values.size > 1 else 0.0)
    return statistics


@pytest.mark.parametrize("architecture", ["gpt_neox", "gemma"])  # untied and tied output head
def test_every_tensor_keeps_its_mean_and_std_and_only_the_embeddings_are_kept(tiny_models, architecture):
    model = give_each_tensor_its_own_distribution(load_tiny(tiny_models[architecture]))
    before = float64_statistics(model)
    embedding_name = next(n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight)
    embedding_before = model.get_input_embeddings().weight.detach().clone()

    assert rerandomize_parameters(model, seed=0) is model, "in place, returns the model"
    after = float64_statistics(model)
    assert torch.equal(model.get_input_embeddings().weight, embedding_before)
    redrawn = 0
    for name, (values, mean, std) in before.items():
        new_values, new_mean, new_std = after[name]
        if name == embedding_name:
            continue
        if std == 0:
            np.testing.assert_array_equal(new_values, values, err_msg=f"constant {name} is kept")
            continue
        n = values.size
        # Six standard errors of the sample mean and of the sample std of n Gaussian draws.
        assert abs(new_mean - mean) <= 6 * std / np.sqrt(n), name
        assert abs(new_std / std - 1) <= 6 / np.sqrt(2 * (n - 1)), name
        assert not np.array_equal(new_values, values), f"{name} is redrawn"
        assert abs(np.corrcoef(new_values.ravel(), values.ravel())[0, 1]) < 0.5, f"{name} is independent of the original"
        redrawn += 1
    assert redrawn >= len(before) - 2


def test_a_tied_output_head_stays_tied_and_an_untied_one_is_redrawn(tiny_models):
    gemma = load_tiny(tiny_models["gemma"])
    rerandomize_parameters(gemma, seed=0)
    assert gemma.lm_head.weight is gemma.get_input_embeddings().weight

    neox = load_tiny(tiny_models["gpt_neox"])
    assert not neox.config.tie_word_embeddings
    head_before = neox.get_output_embeddings().weight.detach().clone()
    rerandomize_parameters(neox, seed=0)
    assert not torch.equal(neox.get_output_embeddings().weight, head_before)


def test_the_same_seed_gives_identical_weights_and_another_seed_others(tiny_models):
    first, second, other = (rerandomize_parameters(load_tiny(tiny_models["llama"]), seed) for seed in (7, 7, 8))
    embedding = "model.embed_tokens.weight"
    redrawn = []  # parameters a new seed must change: not the embedding, not constants or single elements
    for (name, a), (_, b), (_, c) in zip(first.state_dict().items(), second.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name
        if name != embedding and a.numel() > 1 and a.double().std() > 0:
            redrawn.append(name)
        assert torch.equal(a, c) == (name not in redrawn), name
    assert {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"} <= set(redrawn)
    assert torch.equal(first.state_dict()[embedding], other.state_dict()[embedding])


def test_small_hand_made_module_keeps_constants_and_single_elements():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 8)
            self.linear = torch.nn.Linear(200, 300)
            self.scale = torch.nn.Parameter(torch.tensor([0.7]))
            self.constant = torch.nn.Parameter(torch.full((4, 4), -2.5))

        def get_input_embeddings(self):
            return self.embed

    module = Tiny()
    with torch.no_grad():
        module.linear.weight.normal_(3.0, 2.0)
    weight = module.linear.weight.detach().double().numpy().copy()
    scale, constant = module.scale.detach().clone(), module.constant.detach().clone()
    rerandomize_parameters(module, seed=1)
    new_weight = module.linear.weight.detach().double().numpy()
    assert new_weight.mean() == pytest.approx(weight.mean(), abs=6 * weight.std(ddof=1) / np.sqrt(weight.size))
    assert new_weight.std(ddof=1) == pytest.approx(weight.std(ddof=1), rel=6 / np.sqrt(2 * weight.size))
    assert torch.equal(module.scale, scale) and torch.equal(module.constant, constant)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_and_cpu_give_the_same_weights(tiny_models):
    on_cpu = rerandomize_parameters(load_tiny(tiny_models["llama"]), seed=3)
    on_gpu = rerandomize_parameters(load_tiny(tiny_models["llama"]).to("cuda"), seed=3)
    for (name, a), (_, b) in zip(on_cpu.state_dict().items(), on_gpu.state_dict().items()):
        assert torch.equal(a, b.cpu()), name


# ---------------------------------------------------------------- prepare_model


@pytest.mark.parametrize("architecture", ["gpt_neox", "gemma"])
def test_prepared_rerandomized_model_loads_and_runs(tiny_models, tmp_path, architecture):
    source = prepare_model("real", {"path": str(tiny_models[architecture]), "layers": [0]}, tmp_path / "real")
    entry = {"rerandomized": {"from": "real", "seed": 5}, "layers": [0]}
    manifest = prepare_model("floor", entry, tmp_path / "floor", source_manifest=tmp_path / "real" / "manifest.json")

    assert sorted(path.name for path in (tmp_path / "floor").iterdir()) == ["manifest.json", "weights"], "no leftovers"
    assert json.loads((tmp_path / "floor" / "manifest.json").read_text()) == manifest
    assert manifest["source"] == "rerandomized" and manifest["location"] == "real"
    assert manifest["rerandomized_from"] == "real" and manifest["rerandomization_seed"] == 5
    assert manifest["load_from"] == str(tmp_path / "floor" / "weights")
    for key in ("architecture", "n_layers", "d_model", "tokenizer", "vocab_size"):
        assert manifest[key] == source[key], key

    model, tokenizer, _ = load_model(tmp_path / "floor" / "manifest.json")
    real_model, real_tokenizer, _ = load_model(tmp_path / "real" / "manifest.json")
    expected = rerandomize_parameters(load_tiny(tiny_models[architecture]), seed=5)
    for (name, saved), (_, drawn) in zip(model.state_dict().items(), expected.state_dict().items()):
        assert torch.equal(saved, drawn), f"{name} survives saving bit-exactly"
    assert torch.equal(model.get_input_embeddings().weight, real_model.get_input_embeddings().weight)
    head, real_head = model.get_output_embeddings().weight, real_model.get_output_embeddings().weight
    assert torch.equal(head, real_head) == bool(model.config.tie_word_embeddings), "a tied head is kept, an untied one redrawn"

    text = "Fresh snow reflects most of the light."
    assert tokenizer(text)["input_ids"] == real_tokenizer(text)["input_ids"]
    with torch.no_grad():
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        hidden = model(ids, output_hidden_states=True).hidden_states
        real_hidden = real_model(ids, output_hidden_states=True).hidden_states
    assert len(hidden) == manifest["n_layers"] + 1 and torch.isfinite(hidden[-1]).all()
    assert not torch.allclose(hidden[-1], real_hidden[-1]), "another model"


def test_the_source_folder_defaults_to_the_sibling_of_out_dir(tiny_models, tmp_path):
    prepare_model("real", {"path": str(tiny_models["llama"]), "layers": [0]}, tmp_path / "real")
    manifest = prepare_model("floor", {"rerandomized": {"from": "real"}, "layers": [0]}, tmp_path / "floor")
    assert manifest["rerandomization_seed"] == 0


def test_prepare_model_refuses_a_missing_or_rerandomized_source(tiny_models, tmp_path):
    with pytest.raises(UserError, match=r"models.floor.rerandomized.from: model 'real' is not prepared \(.*missing\); prepare it first"):
        prepare_model("floor", {"rerandomized": {"from": "real"}, "layers": [0]}, tmp_path / "floor")
    prepare_model("real", {"path": str(tiny_models["llama"]), "layers": [0]}, tmp_path / "real")
    prepare_model("floor", {"rerandomized": {"from": "real"}, "layers": [0]}, tmp_path / "floor")
    with pytest.raises(UserError, match=r"models.twice.rerandomized.from: 'floor' is itself re-randomized; name the model it comes from \('real'\)"):
        prepare_model("twice", {"rerandomized": {"from": "floor"}, "layers": [0]}, tmp_path / "twice")


# ---------------------------------------------------------------- config


def with_models(**models) -> dict:
    config = copy.deepcopy(DEFAULT)
    config["models"].update(models)
    return config


def test_a_rerandomized_model_is_a_valid_model_with_its_sources_blocks():
    config = check_config(with_models(floor={"rerandomized": {"from": "gemma3"}, "layers": [2, 17]}), SCHEMA,
                          check_models=check_model_entries)
    assert config["models"]["floor"]["rerandomized"] == {"from": "gemma3", "seed": 0, "keep_norms": False}
    assert known_n_layers("floor", config["models"]["floor"], config["models"]) == 18
    assert known_n_layers("floor", config["models"]["floor"]) is None, "without the models, the source is unknown"


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"floor": {"rerandomized": {"from": "gemma9"}, "layers": [1]}},
         r"^models.floor.rerandomized.from: model 'gemma9' is not defined; name one of smollm2, gemma3 \(a model with hf, path, embedded or gguf\)$"),
        ({"floor": {"rerandomized": {"from": "gemma3"}, "layers": [1]}, "twice": {"rerandomized": {"from": "floor"}, "layers": [1]}},
         r"^models.twice.rerandomized.from: 'floor' is itself re-randomized; name one of smollm2, gemma3 "),
        ({"floor": {"rerandomized": {"from": "floor"}, "layers": [1]}},
         r"^models.floor.rerandomized.from: 'floor' is this model itself; name one of smollm2, gemma3 "),
        ({"floor": {"rerandomized": {"from": "gemma3"}, "layers": [18]}},
         r"^models.floor.layers: \[18\] out of range; floor has blocks 0..17$"),
        ({"floor": {"rerandomized": {"from": "gemma3"}, "embedded": "gemma3-270m", "layers": [1]}},
         r"^models.floor: give exactly one of hf, path, embedded, gguf, rerandomized \(found embedded, rerandomized\)$"),
        ({"floor": {"rerandomized": {"seed": 1}, "layers": [1]}}, r"^config: models.floor.rerandomized: 'from' is a required property$"),
        ({"floor": {"rerandomized": "gemma3", "layers": [1]}}, r"^config: models.floor.rerandomized: 'gemma3' is not of type 'object'"),
        ({"floor": {"rerandomized": {"from": "gemma3", "sed": 1}, "layers": [1]}}, r"'sed' was unexpected\) in models.floor.rerandomized; allowed keys: from, keep_norms, seed$"),
    ],
)
def test_config_mistakes_of_a_rerandomized_model_give_one_clear_line(models, message):
    with pytest.raises(UserError, match=message) as raised:
        check_config(with_models(**models), SCHEMA, check_models=check_model_entries)
    assert "\n" not in str(raised.value)


def test_dry_run_prepares_the_source_before_its_rerandomized_copy(tmp_path):
    config = with_models(**{"gemma3-rerandomized": {"rerandomized": {"from": "gemma3"}, "layers": [2, 6, 10, 14]}})
    config["pairs"] = config["pairs"] + [{"a": "smollm2", "b": "gemma3-rerandomized"}]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path / "run"),
         "--configfile", str(config_file), "--cores", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.strip() for line in result.stdout.splitlines()]
    source_job = lines.index("output: resources/models/gemma3/manifest.json")
    copy_job = lines.index("output: resources/models/gemma3-rerandomized/manifest.json")
    assert source_job < copy_job, "the dry run lists the source's preparation first"
    assert lines[copy_job - 2:copy_job] == ["rule prepare_model:", "input: resources/models/gemma3/manifest.json"]
    assert "results/matching/smollm2--gemma3-rerandomized/summary.tsv" in result.stdout


def test_three_seeds_give_a_ceiling_from_each_of_their_three_pairs(tmp_path):
    config = with_models()
    config["saes"] = {**config.get("saes", {}), "seeds": [0, 1, 2]}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path / "run"),
         "--configfile", str(config_file), "--cores", "1", "results/similarity/ceiling/gemma3/layer10.tsv"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = sorted(line.split("output: ")[1] for line in result.stdout.splitlines()
                    if "output: results/similarity/ceiling/gemma3/layer10/" in line and ".matches.tsv" not in line)
    assert scored == [f"results/similarity/ceiling/gemma3/layer10/{pair}.tsv"
                      for pair in ("seed0--seed1", "seed0--seed2", "seed1--seed2")]
    assert "rule ceiling_of_layer:" in result.stdout


def test_keep_norms_keeps_every_normalization_parameter_and_redraws_the_rest(tiny_models):
    from sae_universality.models.rerandomize import is_norm_parameter

    original = give_each_tensor_its_own_distribution(load_tiny(tiny_models["gemma"]))
    before = {name: parameter.detach().clone() for name, parameter in original.named_parameters()}
    kept = rerandomize_parameters(copy.deepcopy(original), seed=0, keep_norms=True)
    redrawn = rerandomize_parameters(copy.deepcopy(original), seed=0)
    norms = [name for name in before if is_norm_parameter(name)]
    assert len(norms) >= 3 and any("layernorm" in name for name in norms)
    embedding = "model.embed_tokens.weight"
    for name, parameter in kept.named_parameters():
        if name in norms or name == embedding:
            assert torch.equal(parameter, before[name]), name
        elif parameter.numel() > 1 and before[name].std() > 0:
            assert not torch.equal(parameter, before[name]), name
    changed = [name for name in norms if before[name].std() > 0
               and not torch.equal(dict(redrawn.named_parameters())[name], before[name])]
    assert changed, "without keep_norms the norms are redrawn"
    assert not is_norm_parameter("model.layers.0.mlp.down_proj.weight") and is_norm_parameter("transformer.ln_f.bias")


def test_keep_norms_false_leaves_the_prepared_floor_model_as_it_was():
    """A key added later re-prepares a floor model only when it is set."""
    from sae_universality.models.sources import source_entry

    before = {"rerandomized": {"from": "gemma3", "seed": 0}, "layers": [1]}
    assert source_entry({**before, "rerandomized": {"from": "gemma3", "seed": 0, "keep_norms": False}}) == \
        source_entry(before) == {"rerandomized": {"from": "gemma3", "seed": 0}}
    assert source_entry({**before, "rerandomized": {"from": "gemma3", "seed": 0, "keep_norms": True}}) == \
        {"rerandomized": {"from": "gemma3", "seed": 0, "keep_norms": True}}
