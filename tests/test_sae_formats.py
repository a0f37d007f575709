"""Tests of saving SAEs in SAELens's layout and loading the four published layouts."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file

from sae_universality.errors import UserError
from sae_universality.saes.formats import load_sae, pick_canonical_gemma_scope, save_sae
from sae_universality.saes.architectures import ARCHITECTURES, SaeConfig, SparseAutoencoder

D_IN, D_SAE = 12, 40


@pytest.fixture
def weights():
    rng = np.random.default_rng(0)
    return {
        "W_enc": (rng.normal(size=(D_IN, D_SAE)) / np.sqrt(D_IN)).astype(np.float32),
        "b_enc": rng.normal(scale=0.2, size=D_SAE).astype(np.float32),
        "W_dec": rng.normal(size=(D_SAE, D_IN)).astype(np.float32),
        "b_dec": rng.normal(scale=0.5, size=D_IN).astype(np.float32),
        "threshold": rng.uniform(0.05, 0.5, size=D_SAE).astype(np.float32),
    }


@pytest.fixture
def x():
    return np.random.default_rng(1).normal(size=(30, D_IN)).astype(np.float32)


def keep_top(relu, k):
    codes = np.zeros_like(relu)
    top = np.argsort(-relu, axis=1)[:, :k]
    np.put_along_axis(codes, top, np.take_along_axis(relu, top, axis=1), axis=1)
    return codes


def check(sae, x, expected_codes, expected_reconstruction):
    """Compare the SAE (float32) against float64 numpy results."""
    codes = sae.encode(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_array_equal(codes != 0, expected_codes != 0)
    np.testing.assert_allclose(codes, expected_codes, atol=3e-5)
    np.testing.assert_allclose(sae(torch.from_numpy(x)).detach().numpy(), expected_reconstruction, atol=2e-4)
    assert (expected_codes != 0).any() and (expected_codes == 0).any()


def trained_like(architecture, weights, k=5):
    sae = SparseAutoencoder(SaeConfig(d_in=D_IN, d_sae=D_SAE, architecture=architecture, k=k,
                                      model_name="pythia-70m", hook_name="blocks.3.hook_resid_post"))
    with torch.no_grad():
        for name, value in weights.items():
            getattr(sae, name).copy_(torch.from_numpy(value))
    return sae


@pytest.mark.parametrize("architecture", sorted(name for name, record in ARCHITECTURES.items() if record.saved_as is None))
def test_save_load_round_trip_is_exact(tmp_path, weights, x, architecture):
    sae = trained_like(architecture, weights)
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae("saelens", path=tmp_path / "sae")
    assert loaded.cfg == (sae.cfg if architecture == "topk" else replace(sae.cfg, k=loaded.cfg.k))  # k only matters for topk
    for name, tensor in sae.state_dict().items():
        if architecture == "jumprelu" or name != "threshold":
            assert torch.equal(loaded.state_dict()[name], tensor), name
    assert torch.equal(loaded.encode(torch.from_numpy(x)), sae.encode(torch.from_numpy(x)))
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == ["cfg.json", "sae_weights.safetensors"]


def test_saved_cfg_and_tensors_follow_saelens(tmp_path, weights):
    save_sae(trained_like("topk", weights, k=7), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg == {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
                   "normalize_activations": "none", "reshape_activations": "none",
                   "metadata": {"model_name": "pythia-70m", "hook_name": "blocks.3.hook_resid_post"},
                   "architecture": "topk", "k": 7, "rescale_acts_by_decoder_norm": False}
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    assert {name: tuple(t.shape) for name, t in tensors.items()} == {
        "W_enc": (D_IN, D_SAE), "W_dec": (D_SAE, D_IN), "b_enc": (D_SAE,), "b_dec": (D_IN,)}
    assert all(t.dtype == torch.float32 for t in tensors.values())


def test_batchtopk_is_saved_as_jumprelu_with_its_threshold(tmp_path, weights, x):
    sae = trained_like("batchtopk", {**weights, "threshold": np.full(D_SAE, 0.3, dtype=np.float32)})
    save_sae(sae, tmp_path)
    loaded = load_sae("saelens", path=tmp_path)
    assert loaded.cfg.architecture == "jumprelu"
    assert torch.equal(loaded.encode(torch.from_numpy(x)), sae.encode(torch.from_numpy(x)))


def test_saelens_standard_relu_layout(tmp_path, weights, x):
    folder = tmp_path / "gemma_2b_blocks.6.hook_resid_post_16384"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps({"d_in": D_IN, "d_sae": D_SAE, "hook_point": "blocks.6.hook_resid_post",
                                                 "apply_b_dec_to_input": True, "model_name": "gemma-2b", "dtype": "torch.float32"}))
    save_numpy({name: weights[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}, str(folder / "sae_weights.safetensors"))
    sae = load_sae("saelens", path=tmp_path, id=folder.name)
    assert sae.cfg.architecture == "relu" and sae.cfg.hook_name == "blocks.6.hook_resid_post"
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    codes = np.maximum((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 0)
    check(sae, x, codes, codes @ w["W_dec"] + w["b_dec"])


def test_saelens_normalized_sae_is_refused(tmp_path, weights):
    save_sae(trained_like("topk", weights), tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "expected_average_only_in"}))
    with pytest.raises(UserError, match="normalize_activations"):
        load_sae("saelens", path=tmp_path)


def write_sparsify(root, weights, k=5):
    folder = root / "layers.3"
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps({"expansion_factor": 32, "normalize_decoder": True, "num_latents": D_SAE,
                                                 "k": k, "multi_topk": False, "skip_connection": False, "d_in": D_IN}))
    save_numpy({"encoder.weight": np.ascontiguousarray(weights["W_enc"].T), "encoder.bias": weights["b_enc"],
                "W_dec": weights["W_dec"], "b_dec": weights["b_dec"]}, str(folder / "sae.safetensors"))
    return folder


def test_sparsify_layout(tmp_path, weights, x):
    write_sparsify(tmp_path, weights)
    sae = load_sae("sparsify", path=tmp_path, id="layers.3", expected_d_in=D_IN)
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 5
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    encoder = w["W_enc"].T  # stored as (d_sae, d_in), like nn.Linear
    codes = keep_top(np.maximum((x - w["b_dec"]) @ encoder.T + w["b_enc"], 0), 5)
    check(sae, x, codes, codes @ w["W_dec"] + w["b_dec"])


def write_gemma_scope(root, weights, l0s=(41, 82, 176)):
    for l0 in l0s:
        folder = root / "layer_12" / "width_16k" / f"average_l0_{l0}"
        folder.mkdir(parents=True)
        np.savez(folder / "params.npz", **weights)


def test_gemma_scope_layout_and_canonical_pick(tmp_path, weights, x):
    write_gemma_scope(tmp_path, weights)
    assert pick_canonical_gemma_scope("layer_12/width_16k/canonical", path=tmp_path) == "layer_12/width_16k/average_l0_82"
    sae = load_sae("gemma_scope", path=tmp_path, id="layer_12/width_16k/canonical")
    assert sae.cfg.architecture == "jumprelu" and not sae.cfg.apply_b_dec_to_input
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    pre = x @ w["W_enc"] + w["b_enc"]  # Gemma Scope does not subtract b_dec
    codes = (pre > w["threshold"]) * np.maximum(pre, 0)
    check(sae, x, codes, codes @ w["W_dec"] + w["b_dec"])
    with pytest.raises(UserError, match="average_l0"):
        load_sae("gemma_scope", path=tmp_path, id="layer_13/width_16k/canonical")


def test_canonical_ties_go_to_the_smaller_l0(tmp_path, weights):
    write_gemma_scope(tmp_path, weights, l0s=(90, 110, 300))
    assert pick_canonical_gemma_scope("layer_12/width_16k/canonical", path=tmp_path).endswith("average_l0_90")


def write_dictionary_learning(folder, dict_class, state, extra=None):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({name: torch.as_tensor(value) for name, value in state.items()}, folder / "ae.pt")
    trainer = {"dict_class": dict_class, "activation_dim": D_IN, "dict_size": D_SAE, **(extra or {})}
    (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"d_submodule": D_IN}}))


def test_dictionary_learning_relu_autoencoder(tmp_path, weights, x):
    state = {"bias": weights["b_dec"], "encoder.weight": weights["W_enc"].T.copy(), "encoder.bias": weights["b_enc"],
             "decoder.weight": weights["W_dec"].T.copy()}
    write_dictionary_learning(tmp_path, "AutoEncoder", state)
    sae = load_sae("dictionary_learning", path=tmp_path)
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    codes = np.maximum((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 0)
    check(sae, x, codes, w["W_dec"].T.dot(codes.T).T + w["b_dec"])


def test_dictionary_learning_topk_and_batchtopk(tmp_path, weights, x):
    state = {"encoder.weight": weights["W_enc"].T.copy(), "encoder.bias": weights["b_enc"], "decoder.weight": weights["W_dec"].T.copy(),
             "b_dec": weights["b_dec"], "k": torch.tensor(6, dtype=torch.int), "threshold": torch.tensor(-1.0)}
    write_dictionary_learning(tmp_path / "topk", "AutoEncoderTopK", state, {"k": 6})
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    relu = np.maximum((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 0)
    sae = load_sae("dictionary_learning", path=tmp_path / "topk")
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 6
    codes = keep_top(relu, 6)
    check(sae, x, codes, codes @ w["W_dec"] + w["b_dec"])
    write_dictionary_learning(tmp_path / "batch", "BatchTopKSAE", {**state, "threshold": torch.tensor(0.25)}, {"k": 6})
    sae = load_sae("dictionary_learning", path=tmp_path / "batch")
    codes = relu * (relu > 0.25)
    check(sae, x, codes, codes @ w["W_dec"] + w["b_dec"])


def test_dictionary_learning_jumprelu_with_unnormalized_decoder(tmp_path, weights, x):
    norms = np.linspace(0.5, 2.0, D_SAE).astype(np.float32)
    state = {"W_enc": weights["W_enc"], "b_enc": weights["b_enc"], "W_dec": weights["W_dec"] / np.linalg.norm(weights["W_dec"], axis=1, keepdims=True) * norms[:, None],
             "b_dec": weights["b_dec"], "threshold": weights["threshold"]}
    write_dictionary_learning(tmp_path, "JumpReluAutoEncoder", state)
    sae = load_sae("dictionary_learning", path=tmp_path)
    s = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
    pre = x @ s["W_enc"] + s["b_enc"]
    codes = np.maximum(pre * (pre > s["threshold"]), 0) * np.linalg.norm(s["W_dec"], axis=1)  # their encode
    reconstruction = (codes / np.linalg.norm(s["W_dec"], axis=1)) @ s["W_dec"] + s["b_dec"]  # their decode
    check(sae, x, codes, reconstruction)


def test_d_in_mismatch_names_both_widths(tmp_path, weights):
    write_sparsify(tmp_path, weights)
    with pytest.raises(UserError, match=f"d_in={D_IN} but the model's hidden size is 512"):
        load_sae("sparsify", path=tmp_path, id="layers.3", expected_d_in=512)


def test_bad_requests_are_user_errors(tmp_path, weights):
    with pytest.raises(UserError, match="unknown SAE format"):
        load_sae("safetensors", path=tmp_path)
    with pytest.raises(UserError, match="exactly one"):
        load_sae("saelens")
    with pytest.raises(UserError, match="does not exist"):
        load_sae("saelens", path=tmp_path / "missing")
    write_sparsify(tmp_path, weights)
    with pytest.raises(UserError, match="sae_weights.safetensors"):
        load_sae("saelens", path=tmp_path, id="layers.3")


def test_hub_offline_without_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        load_sae("sparsify", repo="EleutherAI/sae-pythia-70m-32k", id="layers.3", cache_dir=tmp_path)
    message = str(error.value)
    assert "EleutherAI/sae-pythia-70m-32k/layers.3/" in message and "network" in message and "local path" in message
    assert "\n" not in message


def fake_hub_cache(cache, repo):
    """A Hugging Face cache holding one snapshot of repo; returns the snapshot folder."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_folder = cache / f"models--{repo.replace('/', '--')}"
    (repo_folder / "refs").mkdir(parents=True)
    (repo_folder / "refs" / "main").write_text(commit)
    snapshot = repo_folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def test_hub_cache_is_used_offline(tmp_path, monkeypatch, weights, x):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = fake_hub_cache(tmp_path, "EleutherAI/sae-pythia-70m-32k")
    write_sparsify(snapshot, weights)
    sae = load_sae("sparsify", repo="EleutherAI/sae-pythia-70m-32k", id="layers.3", cache_dir=tmp_path)
    local = load_sae("sparsify", path=snapshot, id="layers.3")
    assert torch.equal(sae.encode(torch.from_numpy(x)), local.encode(torch.from_numpy(x)))
    scope = fake_hub_cache(tmp_path, "google/gemma-scope-2b-pt-res")
    write_gemma_scope(scope, weights, l0s=(20, 95))
    sae = load_sae("gemma_scope", repo="google/gemma-scope-2b-pt-res", id="layer_12/width_16k/canonical", cache_dir=tmp_path)
    assert sae.cfg.architecture == "jumprelu"
    with pytest.raises(UserError, match="layers.4"):
        load_sae("sparsify", repo="EleutherAI/sae-pythia-70m-32k", id="layers.4", cache_dir=tmp_path)


@pytest.mark.parametrize("damage", ["weights", "config"])
def test_a_damaged_sae_folder_is_one_line_naming_the_file(tmp_path, weights, damage):
    """A saved SAE whose weights were cut short, or whose cfg.json is not JSON: which file, and how to remake it."""
    from sae_universality.saes.formats import save_sae

    write_sparsify(tmp_path / "release", weights)
    folder = tmp_path / "results" / "saes" / "m" / "layer0" / "seed0"
    save_sae(load_sae("sparsify", path=tmp_path / "release", id="layers.3"), folder)
    damaged = folder / ("sae_weights.safetensors" if damage == "weights" else "cfg.json")
    damaged.write_bytes(damaged.read_bytes()[:40])
    with pytest.raises(UserError, match=rf"^{damaged} is damaged or incomplete \(.+\); delete it and rerun: "
                                        r"Snakemake remakes it \(rule train_sae or load_pretrained_sae\)$"):
        load_sae("saelens", path=folder)
