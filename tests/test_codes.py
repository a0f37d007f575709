"""Tests of sparse code files against dense numpy computations."""

import h5py
import numpy as np
import pytest
import torch

from sae_universality.saes.codes import encode_cache_to_codes, iter_code_chunks, read_code_rows
from sae_universality.errors import UserError
from sae_universality.saes.architectures import SaeConfig, sae_from_weights

N_ROWS, D_IN, D_SAE = 500, 10, 48


@pytest.fixture
def cache(tmp_path):
    rng = np.random.default_rng(0)
    activations = rng.normal(size=(N_ROWS, D_IN)).astype(np.float16)
    path = tmp_path / "layer2.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("activations", data=activations, chunks=(64, D_IN))
    return path, activations.astype(np.float64)


def make_sae(architecture):
    rng = np.random.default_rng(1)
    w = {"W_enc": rng.normal(size=(D_IN, D_SAE)) / 3, "b_enc": rng.normal(scale=0.3, size=D_SAE) - 0.2,
         "W_dec": rng.normal(size=(D_SAE, D_IN)), "b_dec": rng.normal(scale=0.3, size=D_IN), "threshold": rng.uniform(0.1, 0.4, D_SAE)}
    cfg = SaeConfig(d_in=D_IN, d_sae=D_SAE, architecture=architecture, k=5)
    threshold = torch.tensor(w["threshold"]) if architecture == "jumprelu" else None
    return sae_from_weights(cfg, *(torch.tensor(w[n]) for n in ("W_enc", "b_enc", "W_dec", "b_dec")), threshold), w


def dense_codes(w, x, architecture):
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    relu = np.maximum(pre, 0)
    if architecture == "pre_activations":
        return relu
    if architecture == "jumprelu":
        return np.where(pre > w["threshold"], relu, 0)
    codes = np.zeros_like(relu)
    top = np.argsort(-relu, axis=1)[:, :5]
    np.put_along_axis(codes, top, np.take_along_axis(relu, top, axis=1), axis=1)
    return codes


@pytest.mark.parametrize("architecture,pre_activations", [("topk", False), ("jumprelu", False), ("topk", True)])
def test_codes_file_matches_dense_computation(tmp_path, cache, architecture, pre_activations):
    path, x = cache
    sae, w = make_sae(architecture)
    out = encode_cache_to_codes(sae, path, tmp_path / "codes" / "c.h5", batch_size=128, pre_activations=pre_activations)
    expected = dense_codes(w, x, "pre_activations" if pre_activations else architecture)
    with h5py.File(out) as handle:
        assert handle.attrs["n_positions"] == N_ROWS and handle.attrs["n_features"] == D_SAE
        assert handle.attrs["kind"] == ("pre_activations" if pre_activations else "codes")
        assert handle["indptr"].dtype == np.int64 and handle["indices"].dtype == np.int32 and handle["values"].dtype == np.float32
        indptr, indices = handle["indptr"][:], handle["indices"][:]
    assert indptr[-1] == (expected != 0).sum() == len(indices)
    for row in (0, 77, 499):  # latents ascend within a row
        assert np.all(np.diff(indices[indptr[row]:indptr[row + 1]]) > 0)
    codes = read_code_rows(out, 0, N_ROWS).toarray()
    np.testing.assert_array_equal(codes != 0, expected != 0)
    np.testing.assert_allclose(codes, expected, atol=3e-5)
    assert [p.name for p in out.parent.iterdir()] == ["c.h5"]  # no temporary left behind


@pytest.fixture
def codes_file(tmp_path, cache):
    path, x = cache
    sae, w = make_sae("topk")
    return encode_cache_to_codes(sae, path, tmp_path / "c.h5", batch_size=100), dense_codes(w, x, "topk")


def test_read_code_rows_slices(codes_file):
    path, expected = codes_file
    np.testing.assert_allclose(read_code_rows(path, 120, 133).toarray(), expected[120:133], atol=3e-5)
    assert read_code_rows(path, 7, 7).shape == (0, D_SAE)
    with pytest.raises(ValueError, match="outside"):
        read_code_rows(path, 10, 501)


def test_iter_code_chunks_for_all_sorted_and_unsorted_rows(codes_file):
    path, expected = codes_file
    chunks = list(iter_code_chunks(path, chunk_rows=128))
    assert [c.shape[0] for c in chunks] == [128, 128, 128, 116]
    np.testing.assert_allclose(np.vstack([c.toarray() for c in chunks]), expected, atol=3e-5)
    rng = np.random.default_rng(3)
    aligned = np.sort(rng.choice(N_ROWS, size=300, replace=False))
    for rows in (aligned, rng.permutation(aligned), np.array([5, 5, 3, 499, 0])):
        chunks = list(iter_code_chunks(path, rows=rows, chunk_rows=64))
        assert all(c.shape[0] <= 64 for c in chunks)
        got = np.vstack([c.toarray() for c in chunks])
        np.testing.assert_allclose(got, expected[rows], atol=3e-5)
        assert np.array_equal(got != 0, expected[rows] != 0)
    with pytest.raises(ValueError, match="row indices"):
        next(iter_code_chunks(path, rows=[1, 500]))


def test_width_mismatch_is_a_user_error(tmp_path, cache):
    path, _ = cache
    sae = sae_from_weights(SaeConfig(d_in=8, d_sae=16, k=2), torch.zeros(8, 16), torch.zeros(16), torch.zeros(16, 8), torch.zeros(8))
    with pytest.raises(UserError, match="d_in=8"):
        encode_cache_to_codes(sae, path, tmp_path / "c.h5")
    assert not (tmp_path / "c.h5").exists()
