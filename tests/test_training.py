"""Tests of SAE training, batch streaming from HDF5, and quality metrics."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import fields, replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sae_universality.errors import UserError
from sae_universality.saes.architectures import ARCHITECTURES, TRAINABLE, SaeConfig, SparseAutoencoder, sae_from_weights
from sae_universality.activations.batches import BatchOrder, count_batches, iter_hdf5_batches
from sae_universality.saes.evaluation import downstream_losses, evaluate_sae, evaluate_saes, splice_loss_recovered
from sae_universality.saes.training import SaeTrainer, TrainConfig, geometric_median, learning_rate_at, train_sae
from sae_universality.settings import TrainSettings

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors train faster on one thread, and the results do not depend on load."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def sparse_dictionary_data(n_samples, d_in=32, n_atoms=128, n_active=4, seed=0):
    """Samples = positive combinations of n_active random unit atoms; returns (atoms, samples float32)."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d_in))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    chosen = np.argsort(rng.random((n_samples, n_atoms)), axis=1)[:, :n_active]
    codes = np.zeros((n_samples, n_atoms))
    np.put_along_axis(codes, chosen, rng.uniform(0.5, 1.5, size=(n_samples, n_active)), axis=1)
    return atoms, (codes @ atoms).astype(np.float32)


def batches_of(data, batch_size):
    def make_batches(start_step):
        for step in range(start_step, len(data) // batch_size):
            yield data[step * batch_size:(step + 1) * batch_size]
    return make_batches


def test_topk_sae_recovers_the_true_dictionary():
    batch_size, n_steps = 512, 600
    atoms, data = sparse_dictionary_data(batch_size * n_steps)
    cfg = TrainConfig(n_steps=n_steps, settings=TrainSettings(epochs=1, lr=3e-3, warmup_steps=20, dead_after_tokens=batch_size * 10,
                                                              log_every=100))
    result = train_sae(batches_of(data, batch_size), SaeConfig(d_in=32, d_sae=256, k=4), cfg)
    W_dec = result.sae.W_dec.detach().double().numpy()
    best_cosine = (atoms @ (W_dec / np.linalg.norm(W_dec, axis=1, keepdims=True)).T).max(axis=1)
    assert (best_cosine > 0.9).mean() >= 0.9
    curve = result.curve
    assert list(curve.step) == [100, 200, 300, 400, 500, 600]
    assert curve.fvu.iloc[-1] < 0.5 * curve.fvu.iloc[0]
    assert (curve.mean_l0 <= 4).all()
    assert curve.lr.iloc[-1] == pytest.approx(3e-3 / (n_steps * 0.2))


SMALL_RUN = TrainSettings(epochs=1, warmup_steps=5, dead_after_tokens=256, aux_k=16, log_every=10, checkpoint_every=10)


def small_run(data, checkpoint_dir=None, n_steps=40, architecture="topk", d_sae=64, seed=0, **settings):
    cfg = TrainConfig(n_steps=n_steps, settings=replace(SMALL_RUN, **settings), seed=seed)
    return train_sae(batches_of(data, 128), SaeConfig(d_in=32, d_sae=d_sae, k=4, architecture=architecture), cfg, checkpoint_dir)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "relu"])
def test_training_is_bitwise_deterministic(architecture):
    _, data = sparse_dictionary_data(128 * 40, seed=1)
    first, second = small_run(data, architecture=architecture), small_run(data, architecture=architecture)
    for name, tensor in first.sae.state_dict().items():
        assert torch.equal(tensor, second.sae.state_dict()[name]), name
    assert first.curve.equals(second.curve)
    other_seed = small_run(data, architecture=architecture, seed=1)
    assert not torch.equal(first.sae.W_dec, other_seed.sae.W_dec)
    assert first.curve.fvu.iloc[-1] < first.curve.fvu.iloc[0]


def test_batchtopk_learns_an_inference_threshold():
    _, data = sparse_dictionary_data(128 * 40, seed=2)
    result = small_run(data, architecture="batchtopk")
    threshold = result.sae.threshold
    assert threshold.min() > 0 and torch.all(threshold == threshold[0])
    quality = evaluate_sae(result.sae, [data[:1024]])
    assert 1 < quality["mean_l0"] < 16  # near k=4 at inference, without a per-row TopK


def test_aux_loss_appears_once_latents_die():
    _, data = sparse_dictionary_data(128 * 40, n_atoms=8, seed=3)  # far fewer atoms than latents
    curve = small_run(data, d_sae=256).curve
    assert curve.dead_fraction.iloc[-1] > 0
    assert (curve.aux_loss[curve.dead_fraction > 0] > 0).all()
    assert (curve.aux_loss[curve.dead_fraction == 0] == 0).all()


RUN_SCRIPT = textwrap.dedent('''
    import sys, time
    import numpy as np, torch
    torch.set_num_threads(1)
    from sae_universality.saes.architectures import SaeConfig
    from sae_universality.saes.formats import save_sae
    from sae_universality.saes.training import TrainConfig, train_sae
    from sae_universality.settings import TrainSettings
    checkpoint_dir, out_dir, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    data = np.random.default_rng(5).normal(size=(64 * 120, 16)).astype(np.float32) * 3

    def make_batches(start_step):
        for step in range(start_step, 120):
            time.sleep(delay)  # slows the run down so that it can be killed mid-way
            yield data[step * 64:(step + 1) * 64]

    cfg = TrainConfig(n_steps=120, settings=TrainSettings(epochs=1, warmup_steps=5, dead_after_tokens=300, aux_k=8,
                                                          checkpoint_every=10, log_every=10))
    result = train_sae(make_batches, SaeConfig(d_in=16, d_sae=48, k=3), cfg, checkpoint_dir)
    save_sae(result.sae, out_dir)
    result.curve.to_csv(out_dir + "/curve.csv", index=False)
''')


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": SRC}

    def run(name, delay):
        return subprocess.run([sys.executable, str(script), str(tmp_path / f"ckpt_{name}"), str(tmp_path / name), str(delay)],
                              env=env, check=True, capture_output=True, timeout=120)

    run("straight", 0)
    killed = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ckpt_resumed"), str(tmp_path / "resumed"), "0.05"], env=env)
    checkpoint = tmp_path / "ckpt_resumed" / "checkpoint.pt"
    deadline = time.time() + 90
    while not checkpoint.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    steps_done = torch.load(checkpoint, weights_only=False)["step"]
    assert 0 < steps_done < 120
    assert not (tmp_path / "resumed").exists()
    run("resumed", 0)
    straight = (tmp_path / "straight" / "sae_weights.safetensors").read_bytes()
    assert (tmp_path / "resumed" / "sae_weights.safetensors").read_bytes() == straight
    assert (tmp_path / "resumed" / "curve.csv").read_text() == (tmp_path / "straight" / "curve.csv").read_text()


def test_checkpoint_of_another_config_is_refused(tmp_path):
    _, data = sparse_dictionary_data(128 * 20, seed=4)
    small_run(data, tmp_path, n_steps=20)
    finished = small_run(data, tmp_path, n_steps=20)  # a finished run returns from its checkpoint
    assert len(finished.curve) == 2
    with pytest.raises(UserError, match="other settings"):
        small_run(data, tmp_path, n_steps=20, lr=1e-3)


def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path):
    """A checkpoint cut short (the disk filled up while it was renamed into place on a file system without
    atomic renames): one line that names it, and training does not silently restart."""
    _, data = sparse_dictionary_data(128 * 20, seed=4)
    folder = tmp_path / "results" / "checkpoints" / "m" / "layer0" / "seed0"
    small_run(data, folder, n_steps=20)
    checkpoint = folder / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    with pytest.raises(UserError, match=rf"^{checkpoint} is damaged or incomplete \(.+\); delete it and rerun: "
                                        r"Snakemake remakes it \(rule train_sae\)$"):
        small_run(data, folder, n_steps=20)


def test_stream_ending_early_is_a_contract_failure_with_its_traceback():
    # The workflow counts its batches itself (count_batches); only a wrong call of the API gets here.
    _, data = sparse_dictionary_data(128 * 10, seed=4)
    with pytest.raises(ValueError, match="ended after 10 of n_steps=40"):
        small_run(data)


def test_a_plain_iterator_of_batches_is_accepted():
    _, data = sparse_dictionary_data(128 * 40, seed=1)
    from_callable = small_run(data)
    cfg = TrainConfig(n_steps=40, settings=SMALL_RUN)
    from_iterator = train_sae(iter(np.split(data, 40)), SaeConfig(d_in=32, d_sae=64, k=4), cfg)
    assert torch.equal(from_callable.sae.W_dec, from_iterator.sae.W_dec)


def test_normalization_is_estimated_and_folded_into_the_saved_sae():
    rng = np.random.default_rng(7)
    data = (rng.normal(size=(2048, 16)) * 5 + 2).astype(np.float32)
    cfg = TrainConfig(n_steps=10, settings=TrainSettings(epochs=1, warmup_steps=2, log_every=5), normalization_batches=4)
    trainer = SaeTrainer(SaeConfig(d_in=16, d_sae=32, k=4), cfg)
    batches = np.split(data, 16)
    trainer.initialize([torch.from_numpy(b) for b in batches[:4]])
    mean_square_norm = np.mean(np.sum(np.concatenate(batches[:4]).astype(np.float64) ** 2, axis=1))
    assert trainer.input_scale == pytest.approx(np.sqrt(16 / mean_square_norm), rel=1e-6)
    for batch in batches[:10]:
        trainer.step(batch)
    raw_sae = trainer.raw_sae()
    x = torch.from_numpy(data[:100])
    s = trainer.input_scale
    with torch.no_grad():
        torch.testing.assert_close(raw_sae(x), trainer.sae(x * s) / s, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(raw_sae.encode(x), trainer.sae.encode(x * s) / s, rtol=1e-5, atol=1e-5)
    # b_dec started at the geometric median of the normalized first batch
    assert abs(float(raw_sae.b_dec.detach().mean()) - 2.0) < 1.0


def test_learning_rate_schedule():
    cfg = TrainConfig(n_steps=100, settings=TrainSettings(warmup_steps=5))
    rates = [learning_rate_at(step, 1.0, cfg) for step in range(100)]
    assert rates[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert rates[5:80] == [1.0] * 75
    assert rates[80:] == pytest.approx([(100 - s) / 20 for s in range(80, 100)])
    assert learning_rate_at(0, 1.0, TrainConfig(n_steps=100, settings=TrainSettings(warmup_steps=1000))) == pytest.approx(0.1)


def test_a_checkpoint_is_resumed_only_by_a_run_of_the_same_trainer_settings():
    from sae_universality.saes.training import _identity

    sae_cfg = SaeConfig(d_in=8, d_sae=16, k=2)
    base = TrainConfig(n_steps=50, settings=SMALL_RUN)
    identity = _identity(sae_cfg, base)
    # One flat dict of the run's and the trainer's settings: the keys checkpoints written before TrainConfig took
    # its shared settings from TrainSettings carry, so those checkpoints still resume.
    assert set(identity["train"]) == {
        "n_steps", "lr", "warmup_steps", "decay_fraction", "adam_betas", "adam_eps", "normalize_activations",
        "normalization_batches", "b_dec_init", "normalize_decoder", "aux_k", "aux_coefficient", "dead_after_tokens",
        "epochs", "batchtopk_threshold_decay", "seed", "checkpoint_every", "log_every", "device"}
    changed = {"n_steps": 51, "seed": 1, "device": "cuda", "adam_betas": (0.8, 0.9), "adam_eps": 1e-8,
               "normalize_activations": False, "normalization_batches": 2, "b_dec_init": "mean",
               "normalize_decoder": False, "batchtopk_threshold_decay": 0.5}
    assert set(changed) == {item.name for item in fields(TrainConfig)} - {"settings"}
    for name, value in changed.items():
        assert _identity(sae_cfg, replace(base, **{name: value})) != identity, name
    trainer_reads = {"lr": 1e-3, "warmup_steps": 7, "decay_fraction": 0.5, "aux_k": 3, "aux_coefficient": 0.5,
                     "dead_after_tokens": 9, "epochs": 2}
    for name, value in trainer_reads.items():
        assert _identity(sae_cfg, replace(base, settings=replace(SMALL_RUN, **{name: value}))) != identity, name
    # Bookkeeping does not change the weights, and the SAE's shape is judged by its SaeConfig.
    for name, value in {"checkpoint_every": 3, "log_every": 3, "architecture": "relu", "k": 5, "d_sae": 99}.items():
        assert _identity(sae_cfg, replace(base, settings=replace(SMALL_RUN, **{name: value}))) == identity, name
    assert _identity(replace(sae_cfg, k=3), base) != identity


def test_a_run_of_the_workflow_is_its_settings_made_a_run_of_known_length():
    settings = TrainSettings(batch_size=100, epochs=3, log_every=20, warmup_steps=1000, lr=1e-3)
    run = TrainConfig.for_rows(settings, n_rows=1050, seed=7)
    assert run.n_steps == 30 and run.seed == 7  # 10 full batches per epoch, remainder dropped
    assert run.settings == replace(settings, log_every=1)  # at least 20 curve points: 30 steps // 20
    assert TrainConfig.for_rows(settings, n_rows=100_000, seed=0).settings.log_every == 20
    assert run.device == TrainConfig().device and run.adam_eps == TrainConfig().adam_eps


@pytest.mark.parametrize("architecture", [name for name, record in ARCHITECTURES.items() if not record.trainable])
def test_an_architecture_that_is_not_trainable_is_refused(architecture):
    assert "jumprelu" not in TRAINABLE
    with pytest.raises(ValueError, match=f"^{architecture} SAEs can be loaded but not trained here; train {', '.join(TRAINABLE)}$"):
        SaeTrainer(SaeConfig(d_in=4, d_sae=8, architecture=architecture), TrainConfig(device="cpu"))


def test_geometric_median_minimizes_summed_distance():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(size=(50, 3)), rng.normal(size=(5, 3)) + 40])  # outliers pull the mean
    median = geometric_median(torch.tensor(points)).numpy()

    def cost(p):
        return np.linalg.norm(points - p, axis=1).sum()
    assert cost(median) < cost(points.mean(axis=0))
    for direction in np.eye(3):
        assert cost(median) <= cost(median + 1e-3 * direction) + 1e-9
        assert cost(median) <= cost(median - 1e-3 * direction) + 1e-9


def write_cache(path, n_rows, d=4):
    """An activation cache whose column 0 holds the row index (exact in float16 below 2048)."""
    activations = np.random.default_rng(0).normal(size=(n_rows, d)).astype(np.float16)
    activations[:, 0] = np.arange(n_rows)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("activations", data=activations, chunks=(64, d))
        handle.create_dataset("window_index", data=np.arange(n_rows) // 10)
    return activations


def row_ids(batches):
    return [batch[:, 0].astype(np.int64) for batch in batches]


def test_hdf5_batches_cover_rows_once_per_epoch_and_shuffle(tmp_path):
    path = tmp_path / "layer3.h5"
    activations = write_cache(path, 1000)
    batches = list(iter_hdf5_batches(path, BatchOrder(batch_size=64, seed=3, buffer_rows=256, chunk_rows=32, epochs=2)))
    assert len(batches) == count_batches(1000, 64, epochs=2) == 30
    assert all(b.dtype == np.float32 and b.shape == (64, 4) for b in batches)
    ids = row_ids(batches)
    first_epoch, second_epoch = np.concatenate(ids[:15]), np.concatenate(ids[15:])
    assert len(np.unique(first_epoch)) == 960 and len(np.unique(second_epoch)) == 960
    assert not np.array_equal(first_epoch, second_epoch)
    assert not np.array_equal(first_epoch, np.sort(first_epoch))
    np.testing.assert_array_equal(batches[0], activations[ids[0]].astype(np.float32))


def test_hdf5_batches_are_deterministic_and_restartable(tmp_path):
    path = tmp_path / "layer3.h5"
    write_cache(path, 1000)
    order = BatchOrder(batch_size=48, seed=9, buffer_rows=200, chunk_rows=40, epochs=2)
    full = row_ids(iter_hdf5_batches(path, order))
    again = row_ids(iter_hdf5_batches(path, order))
    assert all(np.array_equal(a, b) for a, b in zip(full, again))
    other_seed = row_ids(iter_hdf5_batches(path, replace(order, seed=10)))
    assert not np.array_equal(np.concatenate(full), np.concatenate(other_seed))
    for start in (1, 7, 20, 25, 39, 40):
        restarted = row_ids(iter_hdf5_batches(path, order, start_batch=start))
        assert len(restarted) == len(full) - start
        assert all(np.array_equal(a, b) for a, b in zip(restarted, full[start:]))


def test_hdf5_batches_use_only_the_given_rows(tmp_path):
    path = tmp_path / "layer3.h5"
    write_cache(path, 1000)
    with h5py.File(path) as handle:
        train_rows = np.flatnonzero(handle["window_index"][:] % 5 != 0)
    ids = np.concatenate(row_ids(iter_hdf5_batches(path, BatchOrder(batch_size=50, seed=1, buffer_rows=128, chunk_rows=16), rows=train_rows)))
    assert len(ids) == 800 and set(ids) == set(train_rows)
    with pytest.raises(ValueError, match="row indices"):
        next(iter_hdf5_batches(path, BatchOrder(batch_size=50, seed=1), rows=[5, 1000]))


def test_evaluate_sae_matches_numpy():
    rng = np.random.default_rng(11)
    sae = SparseAutoencoder(SaeConfig(d_in=8, d_sae=40, k=3), seed=4)
    with torch.no_grad():
        sae.b_enc.fill_(-0.3)
    data = rng.normal(size=(300, 8)).astype(np.float32) + 1
    metrics = evaluate_sae(sae, np.split(data, [100, 250]))
    x = data.astype(np.float64)
    W_enc, b_enc, W_dec = (t.detach().double().numpy() for t in (sae.W_enc, sae.b_enc, sae.W_dec))
    pre = np.maximum(x @ W_enc + b_enc, 0)
    top = np.argsort(-pre, axis=1)[:, :3]
    codes = np.zeros_like(pre)
    np.put_along_axis(codes, top, np.take_along_axis(pre, top, axis=1), axis=1)
    fvu = ((x - codes @ W_dec) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert metrics["fvu"] == pytest.approx(fvu, rel=1e-5)
    assert metrics["explained_variance"] == pytest.approx(1 - fvu, rel=1e-5)
    assert metrics["mean_l0"] == pytest.approx((codes > 0).sum(1).mean())
    assert metrics["dead_fraction"] == pytest.approx((codes > 0).any(0).__invert__().mean())
    assert 0 < metrics["dead_fraction"] < 1 and metrics["n_positions"] == 300


def test_evaluate_saes_in_one_pass_equal_one_at_a_time():
    rng = np.random.default_rng(12)
    saes = [SparseAutoencoder(SaeConfig(d_in=8, d_sae=d_sae, k=3), seed=seed) for seed, d_sae in ((1, 40), (2, 24))]
    data = rng.normal(size=(300, 8)).astype(np.float32) + 1
    batches = list(np.split(data, [100, 250]))
    consumed = []

    def stream():  # one pass only: a second read of the batches would show here
        for batch in batches:
            consumed.append(len(batch))
            yield batch

    together = evaluate_saes(saes, stream())
    assert consumed == [100, 150, 50]
    assert together == [evaluate_sae(sae, batches) for sae in saes]
    assert together[0]["fvu"] != together[1]["fvu"]
    with pytest.raises(UserError, match="share d_in"):
        evaluate_saes([saes[0], SparseAutoencoder(SaeConfig(d_in=6, d_sae=12, k=2))], batches)


def identity_sae(d):
    """A ReLU SAE with latents x+ and x-: its reconstruction is exactly x."""
    eye = torch.eye(d)
    cfg = SaeConfig(d_in=d, d_sae=2 * d, architecture="relu")
    return sae_from_weights(cfg, torch.cat([eye, -eye], 1), torch.zeros(2 * d), torch.cat([eye, -eye], 0), torch.zeros(d))


class RecordingSae(SparseAutoencoder):
    """Returns its input unchanged and keeps it."""

    def forward(self, x):
        self.seen = x.clone()
        return x


def tiny_models():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                            num_attention_heads=2, max_position_embeddings=32))
    return [llama.eval(), neox.eval()]


@pytest.mark.parametrize("model_index", [0, 1])
def test_splice_loss_recovered(model_index):
    model = tiny_models()[model_index]
    input_ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean = model(input_ids=input_ids, labels=input_ids)
        hidden = model(input_ids=input_ids, output_hidden_states=True).hidden_states
    perfect = splice_loss_recovered(model, input_ids, 1, identity_sae(16))
    assert perfect["ce_clean"] == pytest.approx(float(clean.loss), rel=1e-5)
    assert perfect["ce_sae"] == pytest.approx(perfect["ce_clean"], rel=1e-5)
    assert perfect["fraction_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert abs(perfect["ce_zero"] - perfect["ce_clean"]) > 1e-3
    useless = SparseAutoencoder(SaeConfig(d_in=16, d_sae=8, k=2))
    with torch.no_grad():
        useless.W_dec.zero_()
    nothing = splice_loss_recovered(model, input_ids, 1, useless)
    assert nothing["ce_sae"] == pytest.approx(nothing["ce_zero"], rel=1e-5)
    assert nothing["fraction_recovered"] == pytest.approx(0.0, abs=1e-4)
    noisy = identity_sae(16)
    with torch.no_grad():
        noisy.W_dec.mul_(0.5)
    halfway = splice_loss_recovered(model, input_ids, 1, noisy)
    assert halfway["ce_clean"] == perfect["ce_clean"] and halfway["ce_zero"] == perfect["ce_zero"]
    expected = (halfway["ce_zero"] - halfway["ce_sae"]) / (halfway["ce_zero"] - halfway["ce_clean"])
    assert halfway["fraction_recovered"] == pytest.approx(expected)
    assert halfway["ce_sae"] not in (perfect["ce_clean"], perfect["ce_zero"])
    recorder = RecordingSae(SaeConfig(d_in=16, d_sae=8, k=2))
    splice_loss_recovered(model, input_ids, 1, recorder)
    torch.testing.assert_close(recorder.seen, hidden[2])  # block 1's output is hidden_states[2]
    with pytest.raises(UserError, match="layer 3"):
        splice_loss_recovered(model, input_ids, 3, useless)


@pytest.mark.parametrize("model_index", [0, 1])
def test_downstream_losses_of_several_saes_equal_one_at_a_time(model_index):
    model = tiny_models()[model_index]
    input_ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(2))
    splice_mask = torch.ones_like(input_ids, dtype=torch.bool)
    splice_mask[:, :3] = False  # positions a cache would not store keep their clean values
    noisy, useless = identity_sae(16), SparseAutoencoder(SaeConfig(d_in=16, d_sae=8, k=2))
    with torch.no_grad():
        noisy.W_dec.mul_(0.5)
        useless.W_dec.zero_()
    saes = [identity_sae(16), noisy, useless]
    together = downstream_losses(model, input_ids, 1, saes, splice_mask=splice_mask)
    alone = [splice_loss_recovered(model, input_ids, 1, sae, splice_mask=splice_mask) for sae in saes]
    assert together == alone
    assert len({row["ce_sae"] for row in together}) == 3, "each SAE gets its own spliced pass"
    assert together[0]["fraction_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert together[2]["ce_sae"] == pytest.approx(together[2]["ce_zero"], rel=1e-5)
    # Two windows of 12 tokens: 11 next-token predictions each.
    assert all(row["loss_tokens"] == 22 for row in together)
    padded = torch.ones_like(input_ids)
    padded[1, 8:] = 0  # the second window has 8 tokens, so 7 predictions
    assert downstream_losses(model, input_ids, 1, saes[:1], attention_mask=padded)[0]["loss_tokens"] == 18


def test_seed_stability_is_the_best_one_to_one_assignment_of_decoder_cosines():
    """Against every permutation, in float64: the Hungarian pairing is the best, and its counts follow."""
    import itertools

    import numpy as np

    from sae_universality.saes.evaluation import seed_stability

    rng = np.random.default_rng(0)
    W_a = rng.normal(size=(6, 4))
    # B: A's rows shuffled, rescaled and nudged (three close, three far), plus noise.
    order = rng.permutation(6)
    W_b = W_a[order] * rng.uniform(0.5, 3, size=(6, 1))
    W_b[3:] += rng.normal(scale=2.0, size=(3, 4))
    unit_a = W_a / np.linalg.norm(W_a, axis=1, keepdims=True)
    unit_b = W_b / np.linalg.norm(W_b, axis=1, keepdims=True)
    cosine = unit_a @ unit_b.T
    best = max(itertools.permutations(range(6)), key=lambda perm: sum(cosine[i, perm[i]] for i in range(6)))
    assigned = np.array([cosine[i, best[i]] for i in range(6)])
    found = seed_stability(W_a, W_b)
    assert found["decoder_cosine_mean"] == pytest.approx(assigned.mean(), rel=1e-12)
    assert found["fraction_shared"] == pytest.approx((assigned >= 0.7).mean())
    assert seed_stability(W_a, W_a[order])["fraction_shared"] == 1.0  # the same dictionary, reordered
    assert seed_stability(W_a, W_a)["decoder_cosine_mean"] == pytest.approx(1.0)


def four_architectures():
    """Tiny random Llama, GPT-NeoX, Gemma-3 (sliding and global layers, soft-capped logits) and Qwen2 models."""
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                              LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM)
    torch.manual_seed(3)
    shape = dict(vocab_size=60, hidden_size=16, intermediate_size=32, num_hidden_layers=4, num_attention_heads=2,
                 max_position_embeddings=32)
    models = {
        "llama": LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, **shape)),
        "gpt_neox": GPTNeoXForCausalLM(GPTNeoXConfig(**shape)),
        "gemma3": Gemma3ForCausalLM(Gemma3TextConfig(num_key_value_heads=1, head_dim=8, sliding_window=4,
                                                     layer_types=["sliding_attention", "full_attention"] * 2,
                                                     final_logit_softcapping=3.0, **shape)),
        "qwen2": Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=1, **shape)),
    }
    return {name: model.eval() for name, model in models.items()}


def reference_spliced_loss(model, input_ids, attention_mask, layer, replace):
    """Float64 next-token loss from the model's own full logits, block `layer`'s output replaced by replace(output)."""
    from sae_universality.models.loading import decoder_layers

    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        new = replace(hidden)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = decoder_layers(model)[layer].register_forward_hook(hook) if replace is not None else None
    try:
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.double()
    finally:
        if handle is not None:
            handle.remove()
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, input_ids[:, 1:, None])[..., 0]
    counted = (attention_mask[:, 1:] * attention_mask[:, :-1]).bool()
    return float(-log_probs[counted].sum() / counted.sum())


@pytest.mark.parametrize("architecture", ["llama", "gpt_neox", "gemma3", "qwen2"])
def test_layers_evaluated_from_one_clean_pass_equal_full_passes_with_full_logits(architecture):
    """Replayed block outputs and the chunked head give the losses of full forward passes, on every architecture."""
    from sae_universality.saes.evaluation import downstream_losses_of_layers, next_token_loss_sum

    model = four_architectures()[architecture]
    input_ids = torch.randint(0, 60, (5, 12), generator=torch.Generator().manual_seed(4))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[3, 7:] = 0  # a shorter window, padded
    splice_mask = torch.ones_like(input_ids, dtype=torch.bool)
    splice_mask[:, :2] = False
    noisy = identity_sae(16)
    with torch.no_grad():
        noisy.W_dec.mul_(0.4)
    saes_by_layer = {0: [noisy], 2: [identity_sae(16), noisy]}
    results = downstream_losses_of_layers(model, input_ids, saes_by_layer, attention_mask, splice_mask,
                                          windows_per_pass=2)

    def splice(value):
        return lambda hidden: torch.where(splice_mask[..., None], value(hidden).to(hidden.dtype), hidden)

    clean = reference_spliced_loss(model, input_ids, attention_mask, 0, None)
    for layer, saes in saes_by_layer.items():
        zero = reference_spliced_loss(model, input_ids, attention_mask, layer, splice(torch.zeros_like))
        assert abs(zero - clean) > 1e-3
        for sae, row in zip(saes, results[layer]):
            expected = reference_spliced_loss(model, input_ids, attention_mask, layer, splice(lambda h, s=sae: s(h.float())))
            assert row["ce_clean"] == pytest.approx(clean, rel=1e-5)
            assert row["ce_zero"] == pytest.approx(zero, rel=1e-5)
            assert row["ce_sae"] == pytest.approx(expected, rel=1e-5)
            assert row["loss_tokens"] == 5 * 11 - 5
    assert results[2][0]["fraction_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert results[0][0]["ce_sae"] != results[2][1]["ce_sae"]
    # Chunking the head changes nothing but the memory it takes.
    with torch.no_grad():
        hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    whole, tokens = next_token_loss_sum(model, hidden, input_ids, attention_mask)
    chunked, _ = next_token_loss_sum(model, hidden, input_ids, attention_mask, chunk_positions=7)
    assert whole / tokens == pytest.approx(clean, rel=1e-5) and chunked == pytest.approx(whole, rel=1e-6)
    # The blocks are the model's own again afterwards.
    from sae_universality.models.loading import decoder_layers
    assert not any(type(block).__name__ == "_Replay" for block in decoder_layers(model))


def test_downstream_rows_are_grouped_by_layer_and_skipped_without_loading_a_model(tmp_path):
    import pandas as pd

    from sae_universality.saes.stage import DownstreamInputs, downstream_of_model, sae_dirs_by_layer
    from sae_universality.settings import SaeSettings

    paths = ["results/saes/m/layer9/seed0", "results/saes/m/layer9/seed1", "results/saes/m/layer15/seed0"]
    grouped = sae_dirs_by_layer(paths)
    assert grouped == {9: {"seed0": paths[0], "seed1": paths[1]}, 15: {"seed0": paths[2]}}
    # loss_windows 0: NaN rows, and the model is never loaded (its manifest does not exist).
    table = downstream_of_model(DownstreamInputs(grouped, tmp_path / "missing.json", tmp_path / "missing.jsonl"),
                                tmp_path / "downstream.tsv", "m", SaeSettings(loss_windows=0))
    written = pd.read_csv(tmp_path / "downstream.tsv", sep="\t")
    assert list(zip(written["layer"], written["sae"])) == [(9, "seed0"), (9, "seed1"), (15, "seed0")]
    assert written["ce_sae"].isna().all() and (written["loss_tokens"] == 0).all() and len(table) == 3
