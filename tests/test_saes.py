"""Tests of the SAE module against plain numpy float64 computations."""

import numpy as np
import pytest
import torch

from sae_universality.errors import UserError
from sae_universality.saes.architectures import (
    ARCHITECTURES,
    FROM_SAELENS,
    TRAINABLE,
    SaeConfig,
    SparseAutoencoder,
    d_sae_for,
    default_d_sae,
    default_learning_rate,
    sae_from_weights,
    select_batch_topk,
)
from sae_universality.settings import TrainSettings


def random_weights(d_in, d_sae, seed):
    rng = np.random.default_rng(seed)
    return {
        "W_enc": rng.normal(size=(d_in, d_sae)) / np.sqrt(d_in),
        "b_enc": rng.normal(scale=0.2, size=d_sae),
        "W_dec": rng.normal(size=(d_sae, d_in)),
        "b_dec": rng.normal(scale=0.5, size=d_in),
        "threshold": rng.uniform(0.0, 0.6, size=d_sae),
    }


def numpy_codes(w, x, architecture, k=None, apply_b_dec_to_input=True):
    """Codes in float64, written from the papers' formulas."""
    centered = x - w["b_dec"] if apply_b_dec_to_input else x
    pre = centered @ w["W_enc"] + w["b_enc"]
    relu = np.maximum(pre, 0.0)
    if architecture == "relu":
        return relu
    if architecture == "jumprelu":
        return np.where(pre > w["threshold"], relu, 0.0)
    codes = np.zeros_like(relu)
    top = np.argsort(-relu, axis=1)[:, :k]
    np.put_along_axis(codes, top, np.take_along_axis(relu, top, axis=1), axis=1)
    return codes


def build(w, architecture, k=4, apply_b_dec_to_input=True):
    cfg = SaeConfig(d_in=w["W_enc"].shape[0], d_sae=w["W_enc"].shape[1], architecture=architecture, k=k,
                    apply_b_dec_to_input=apply_b_dec_to_input)
    threshold = torch.tensor(w["threshold"]) if architecture == "jumprelu" else None
    return sae_from_weights(cfg, torch.tensor(w["W_enc"]), torch.tensor(w["b_enc"]), torch.tensor(w["W_dec"]),
                            torch.tensor(w["b_dec"]), threshold)


@pytest.mark.parametrize("architecture,apply_b_dec", [("topk", True), ("relu", True), ("jumprelu", False), ("jumprelu", True)])
def test_encode_decode_match_numpy(architecture, apply_b_dec):
    w = random_weights(12, 40, seed=1)
    x = np.random.default_rng(2).normal(size=(25, 12))
    sae = build(w, architecture, k=5, apply_b_dec_to_input=apply_b_dec)
    expected_codes = numpy_codes(w, x, architecture, k=5, apply_b_dec_to_input=apply_b_dec)
    codes = sae.encode(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(codes, expected_codes, atol=2e-5)
    np.testing.assert_array_equal(codes != 0, expected_codes != 0)
    reconstruction = sae(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(reconstruction, expected_codes @ w["W_dec"] + w["b_dec"], atol=1e-4)
    dense_decode = sae.decode(torch.tensor(expected_codes, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(dense_decode, expected_codes @ w["W_dec"] + w["b_dec"], atol=1e-4)


def test_pre_activations_are_relu_before_topk():
    w = random_weights(10, 30, seed=3)
    x = np.random.default_rng(4).normal(size=(8, 10))
    sae = build(w, "topk", k=3)
    pre = sae.pre_activations(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(pre, np.maximum((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 0), atol=2e-5)
    assert (pre > 0).sum(axis=1).min() > 3  # more positive than TopK keeps


def test_encode_keeps_leading_dimensions():
    sae = build(random_weights(6, 20, seed=5), "topk", k=2)
    x = torch.randn(3, 4, 6)
    codes = sae.encode(x)
    assert codes.shape == (3, 4, 20)
    assert ((codes != 0).sum(dim=-1) <= 2).all()
    assert torch.allclose(codes[1, 2], sae.encode(x[1, 2][None])[0])
    assert sae(x).shape == x.shape


def test_batch_topk_keeps_the_largest_entries_of_the_batch():
    pre = torch.relu(torch.randn(7, 30))
    active = select_batch_topk(pre, k=3)
    assert len(active.values) == 21
    kept = torch.zeros_like(pre, dtype=torch.bool)
    kept[active.rows, active.latents] = True
    assert pre[kept].min() >= pre[~kept].max()
    assert torch.equal(active.values, pre[active.rows, active.latents])
    assert torch.all(active.rows[1:] >= active.rows[:-1])  # CSR order
    counts = torch.bincount(active.rows, minlength=7)
    assert torch.equal(active.row_starts, torch.cumsum(counts, 0) - counts)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_sparse_gradients_equal_dense_autograd(architecture):
    cfg = SaeConfig(d_in=8, d_sae=24, k=3, architecture=architecture)
    sae = SparseAutoencoder(cfg, seed=1).double()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.3)
    x = torch.randn(10, 8, dtype=torch.float64)
    centered = (x - sae.b_dec).detach()
    pre = torch.relu(torch.addmm(sae.b_enc, centered, sae.W_enc)).detach()
    active = sae.select(pre, whole_batch=True)
    out = sae.decode_sparse(active, sae.differentiable_values(centered, active))
    (out - x).pow(3).sum().backward()
    sparse_grads = {name: p.grad.clone() for name, p in sae.named_parameters()}
    sae.zero_grad()
    mask = torch.zeros(10, 24, dtype=torch.bool)
    mask[active.rows, active.latents] = True
    codes = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc) * mask
    (codes @ sae.W_dec + sae.b_dec - x).pow(3).sum().backward()
    for name, p in sae.named_parameters():
        torch.testing.assert_close(sparse_grads[name], p.grad, rtol=1e-10, atol=1e-10)
        assert p.grad.abs().max() > 0


def test_folding_a_scale_reproduces_normalized_reconstruction():
    w = random_weights(9, 27, seed=6)
    for architecture in ("topk", "relu", "jumprelu"):
        sae = build(w, architecture, k=4)
        scale = 0.37
        raw = sae.folded(scale)
        x = torch.randn(11, 9) * 3
        torch.testing.assert_close(raw(x), sae(x * scale) / scale, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(raw.encode(x), sae.encode(x * scale) / scale, rtol=1e-5, atol=1e-5)
        assert torch.equal(raw.W_dec, sae.W_dec)


def test_initialization_and_unit_norm():
    sae = SparseAutoencoder(SaeConfig(d_in=5, d_sae=7, k=2), seed=0)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)
    assert not torch.equal(sae.W_dec, SparseAutoencoder(SaeConfig(d_in=5, d_sae=7, k=2), seed=1).W_dec)
    with torch.no_grad():
        sae.W_dec.mul_(torch.arange(1, 8, dtype=torch.float32)[:, None])
    rows = sae.W_dec.detach().clone()
    sae.set_decoder_to_unit_norm()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(sae.W_dec, rows / rows.norm(dim=1, keepdim=True))


def test_gradient_removal_leaves_only_perpendicular_part_for_unit_rows():
    sae = SparseAutoencoder(SaeConfig(d_in=6, d_sae=9, k=2), seed=2)
    grad = torch.randn(9, 6)
    sae.W_dec.grad = grad.clone()
    sae.remove_gradient_parallel_to_decoder()
    W = sae.W_dec.detach().double()
    expected = grad.double() - (grad.double() * W).sum(1, keepdim=True) * W
    torch.testing.assert_close(sae.W_dec.grad.double(), expected, rtol=1e-5, atol=1e-6)
    assert (sae.W_dec.grad * sae.W_dec).sum(dim=1).abs().max() < 1e-5


def test_config_validation_and_defaults():
    with pytest.raises(UserError, match="architecture"):
        SaeConfig(d_in=4, d_sae=8, architecture="gated")
    with pytest.raises(UserError, match="k=9"):
        SaeConfig(d_in=4, d_sae=8, k=9)
    cfg = SaeConfig.from_dict({"d_in": 4, "d_sae": 8, "k": 2, "unknown_key": 1})
    assert cfg == SaeConfig(d_in=4, d_sae=8, k=2)
    assert SaeConfig.from_dict(cfg.to_dict()) == cfg
    assert default_d_sae(512) == 4096
    assert default_learning_rate(2**14) == pytest.approx(2e-4)
    assert default_learning_rate(2**16) == pytest.approx(1e-4)


def test_wrong_weight_shape_is_a_user_error():
    cfg = SaeConfig(d_in=4, d_sae=8, k=2)
    with pytest.raises(UserError, match="W_dec"):
        sae_from_weights(cfg, torch.zeros(4, 8), torch.zeros(8), torch.zeros(4, 8), torch.zeros(4))


def test_the_trainable_architectures_are_the_schemas():
    import yaml

    from sae_universality.config import SCHEMA

    node = yaml.safe_load(SCHEMA.read_text())
    for key in ("saes", "train", "architecture"):
        node = node["properties"][key]
    assert set(TRAINABLE) == set(node["enum"]) == {"topk", "batchtopk", "relu"}
    assert node["default"] in TRAINABLE


def test_the_registry_names_are_what_sae_config_accepts():
    for name, architecture in ARCHITECTURES.items():
        cfg = SaeConfig(d_in=4, d_sae=8, architecture=name, k=2)
        assert cfg.architecture == name
        if architecture.uses_k:
            with pytest.raises(UserError, match="k=9"):
                SaeConfig(d_in=4, d_sae=8, architecture=name, k=9)
        else:
            assert SaeConfig(d_in=4, d_sae=8, architecture=name, k=9).k == 9  # k does not apply
    for unknown in ("gated", "TopK", "standard", ""):
        with pytest.raises(UserError, match=rf"unknown SAE architecture {unknown!r}; use one of {', '.join(ARCHITECTURES)}$"):
            SaeConfig(d_in=4, d_sae=8, architecture=unknown)


def test_every_architecture_is_saved_under_a_saelens_name_that_loads_back():
    for name, architecture in ARCHITECTURES.items():
        saved = ARCHITECTURES[architecture.saved_as] if architecture.saved_as else architecture
        assert saved.saved_as is None and saved.saelens_name is not None, name
        assert FROM_SAELENS[saved.saelens_name] == (architecture.saved_as or name)
        assert architecture.trainable == (architecture.training_loss in ("sparse", "l1")), name
        assert not architecture.learns_threshold or saved.saves_threshold, name  # a learned threshold is kept
    assert FROM_SAELENS == {"topk": "topk", "standard": "relu", "jumprelu": "jumprelu"}


def test_selection_at_inference_and_in_training_follow_the_registry():
    w = random_weights(6, 20, seed=8)
    pre = torch.relu(torch.randn(5, 20, generator=torch.Generator().manual_seed(3)))
    counts = {}
    for name in ARCHITECTURES:
        sae = build(w, name, k=3)
        sae.threshold.fill_(0.5)
        counts[name] = (len(sae.select(pre).values), len(sae.select(pre, whole_batch=True).values))
    above_half, positive = int((pre > 0.5).sum()), int((pre > 0).sum())
    assert counts == {"topk": (15, 15), "batchtopk": (above_half, 15), "relu": (positive, positive),
                      "jumprelu": (above_half, above_half)}


def test_the_width_of_an_sae_from_its_settings():
    assert d_sae_for(TrainSettings(expansion_factor=4), d_in=16) == 64
    assert d_sae_for(TrainSettings(expansion_factor=4, d_sae=100), d_in=16) == 100
    cfg = SaeConfig.from_settings(TrainSettings(architecture="relu", k=5, l1_coefficient=2.0), 16, model_name="m", hook_name="h")
    assert cfg == SaeConfig(d_in=16, d_sae=128, architecture="relu", k=5, l1_coefficient=2.0, model_name="m", hook_name="h")
