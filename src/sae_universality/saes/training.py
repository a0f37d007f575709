"""Train sparse autoencoders on streams of activation batches.

The trainer does not know where activations come from: it takes
`make_batches(start_step)`, a function returning an iterable of (n, d_in) float
arrays that starts at batch `start_step` (or a plain iterable, which a resume
fast-forwards). `activations.batches.iter_hdf5_batches` is one such source, for
activation caches; `saes.evaluation` measures what a trained SAE is worth.

A run is a `TrainConfig`: its length and seed, the trainer's own knobs, and the
config's `TrainSettings` (schedule, AuxK, bookkeeping), declared once there;
`TrainConfig.for_rows` makes the run the workflow trains from those settings.
What differs between architectures (which codes a step trains, which loss) is
their record in `architectures.ARCHITECTURES`.

Practices (each a `TrainConfig` or `TrainSettings` field): one input scale so
that E||x||^2 = d_in, folded into the saved weights; unit-norm decoder rows with
the parallel gradient removed; AuxK loss on dead latents (Gao et al. 2024); Adam
with linear warmup and a linear decay to 0 over the last 20%; W_enc = W_dec^T
and b_dec = geometric median at the start. Runs are seeded and bitwise reproducible on CPU, and a
rerun resumes from the last checkpoint to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from sae_universality.activations.batches import count_batches
from sae_universality.devices import torch_device
from sae_universality.errors import UserError
from sae_universality.io import read_checked
from sae_universality.saes.architectures import (
    ARCHITECTURES,
    TRAINABLE,
    SaeConfig,
    SparseAutoencoder,
    SparseLatents,
    default_learning_rate,
)
from sae_universality.settings import TrainSettings

CHECKPOINT_NAME = "checkpoint.pt"


ONE_PASS = TrainSettings(epochs=1)
"""The settings of a TrainConfig given none: the config's defaults, its n_steps making one pass over the data."""

# TrainSettings the trainer does not read: the SAE's shape is its SaeConfig, the batch size is the batches'.
_NOT_THE_TRAINERS = frozenset({"architecture", "expansion_factor", "d_sae", "k", "l1_coefficient", "batch_size"})


@dataclass(frozen=True)
class TrainConfig:
    """One training run of one SAE; the defaults follow Gao et al. 2024.

    The trainer reads from `settings` (config: saes.train) lr, warmup_steps,
    decay_fraction, aux_k, aux_coefficient, dead_after_tokens, epochs,
    checkpoint_every and log_every; the rest of them size the SAE (its SaeConfig)
    and its batches (the caller's).
    """

    n_steps: int = 10_000
    """Optimizer steps (one batch each); the learning-rate schedule ends here."""
    settings: TrainSettings = ONE_PASS
    """Schedule, AuxK loss and bookkeeping, shared with the config; their epochs say how many passes the
    n_steps make (one epoch is n_steps / epochs batches), which sets when a latent counts as dead."""
    seed: int = 0
    """Seed of the weight initialization."""
    device: str = "auto"
    """cuda, cpu, or auto (CUDA when available; bf16 matmuls there, float32 on CPU)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's beta1 and beta2."""
    adam_eps: float = 6.25e-10
    """Adam's epsilon (Gao et al.)."""
    normalize_activations: bool = True
    """Train on x * s with s chosen so that E||x s||^2 = d_in; s is folded into the saved SAE."""
    normalization_batches: int = 10
    """Batches from the start of the stream used to estimate s."""
    b_dec_init: str = "geometric_median"
    """Initial b_dec from the first batch: geometric_median, mean or zeros."""
    normalize_decoder: bool = True
    """Keep decoder rows at unit norm; remove the gradient along each row."""
    batchtopk_threshold_decay: float = 0.99
    """Decay of the running mean of the smallest kept value, the inference threshold of an architecture that
    learns one (BatchTopK)."""

    @classmethod
    def for_rows(cls, settings: TrainSettings, n_rows: int, seed: int) -> TrainConfig:
        """The run that trains one SAE on n_rows positions: settings.epochs passes of whole batches of
        settings.batch_size (count_batches), seeded with seed."""
        n_steps = count_batches(n_rows, settings.batch_size, settings.epochs)
        # At least 20 points of the training curve, however short the run.
        log_every = max(1, min(settings.log_every, n_steps // 20 or 1))
        return cls(n_steps=n_steps, settings=replace(settings, log_every=log_every), seed=seed)


@dataclass
class TrainResult:
    """A trained SAE that reads raw activations, with its training curve."""

    sae: SparseAutoencoder
    curve: pd.DataFrame
    input_scale: float


BatchSource = Callable[[int], Iterable] | Iterable


def learning_rate_at(step: int, base_lr: float, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): warmup, constant, linear decay to 0."""
    warmup = max(1, min(cfg.settings.warmup_steps, cfg.n_steps // 10))
    decay_start = int(cfg.n_steps * (1 - cfg.settings.decay_fraction))
    factor = min(1.0, (step + 1) / warmup)
    if step >= decay_start:
        factor *= (cfg.n_steps - step) / (cfg.n_steps - decay_start)
    return base_lr * factor


def geometric_median(points: Tensor, n_iterations: int = 100, tolerance: float = 1e-6) -> Tensor:
    """Weiszfeld's iteration: the point minimizing the summed distance to rows of points (n, d)."""
    guess = points.mean(dim=0)
    for _ in range(n_iterations):
        weights = 1 / (points - guess).norm(dim=1).clamp_min(1e-12)
        new_guess = (weights[:, None] * points).sum(dim=0) / weights.sum()
        if (new_guess - guess).norm() <= tolerance * (1 + guess.norm()):
            return new_guess
        guess = new_guess
    return guess


class SaeTrainer:
    """Holds an SAE, its optimizer and dead-latent counters; `step(x)` trains on one batch."""

    def __init__(self, sae_cfg: SaeConfig, cfg: TrainConfig):
        self.architecture = ARCHITECTURES[sae_cfg.architecture]
        if not self.architecture.trainable:
            raise ValueError(f"{sae_cfg.architecture} SAEs can be loaded but not trained here; train {', '.join(TRAINABLE)}")
        # Each loss returns (loss, metrics, fired (d_sae,) bool, mean_l0).
        self.loss = {"sparse": self._sparse_loss, "l1": self._l1_loss}[self.architecture.training_loss]
        self.cfg = cfg
        self.device = torch_device(cfg.device)
        self.use_bf16 = self.device.type == "cuda"
        self.sae = SparseAutoencoder(sae_cfg, seed=cfg.seed).to(self.device)
        self.base_lr = cfg.settings.lr if cfg.settings.lr is not None else default_learning_rate(sae_cfg.d_sae)
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=self.base_lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
                                          fused=self.device.type in ("cpu", "cuda"))
        self.tokens_since_fired = torch.zeros(sae_cfg.d_sae, dtype=torch.long, device=self.device)
        self.input_scale = 1.0
        self.step_index = 0
        self.tokens_seen = 0
        self.batchtopk_threshold: float | None = None
        self.curve: list[dict] = []

    def initialize(self, first_batches: list[Tensor]) -> None:
        """Estimate the input scale and b_dec from the first batches of the stream."""
        if self.cfg.normalize_activations:
            mean_square_norm = torch.cat([batch.pow(2).sum(dim=1) for batch in first_batches]).double().mean()
            self.input_scale = float(math.sqrt(self.sae.cfg.d_in / mean_square_norm)) if mean_square_norm > 0 else 1.0
        first = first_batches[0].to(self.device) * self.input_scale
        with torch.no_grad():
            if self.cfg.b_dec_init == "geometric_median":
                self.sae.b_dec.copy_(geometric_median(first))
            elif self.cfg.b_dec_init == "mean":
                self.sae.b_dec.copy_(first.mean(dim=0))
            elif self.cfg.b_dec_init != "zeros":
                raise ValueError(f"unknown b_dec_init {self.cfg.b_dec_init!r}; use geometric_median, mean or zeros")

    def _pre_activations(self, x_centered: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            pre = torch.addmm(self.sae.b_enc, x_centered, self.sae.W_enc)
        return torch.relu_(pre.float())

    def _sparse_loss(self, x: Tensor, x_centered: Tensor, total_variance: Tensor) -> tuple[Tensor, dict, Tensor, float]:
        """FVU of the selected codes (TopK, BatchTopK) plus the AuxK loss; x: (n, d_in) normalized."""
        sae = self.sae
        x_centered = x_centered.detach()
        pre = self._pre_activations(x_centered)
        active = sae.select(pre, whole_batch=True)
        values = sae.differentiable_values(x_centered, active)
        residual = x - sae.decode_sparse(active, values)
        fvu = residual.pow(2).sum() / total_variance
        aux_loss = self._aux_loss(pre, x_centered, residual.detach())
        if self.architecture.learns_threshold:
            self._update_batchtopk_threshold(active.values)
        loss = fvu + self.cfg.settings.aux_coefficient * aux_loss
        fired = torch.bincount(active.latents[active.values > 0], minlength=sae.cfg.d_sae) > 0
        mean_l0 = float((active.values > 0).sum()) / len(x)
        return loss, {"fvu": fvu.item(), "aux_loss": aux_loss.item()}, fired, mean_l0

    def _aux_loss(self, pre: Tensor, x_centered: Tensor, residual: Tensor) -> Tensor:
        """Reconstruct the residual (n, d_in) from the top aux_k dead latents (Gao et al. AuxK)."""
        dead = (self.tokens_since_fired >= self.dead_after(len(pre))).nonzero().flatten()
        if len(dead) == 0 or self.cfg.settings.aux_coefficient == 0:
            return residual.new_zeros(())
        aux_k = min(self.cfg.settings.aux_k, len(dead))
        values, local = pre.index_select(1, dead).topk(aux_k, dim=1, sorted=False)
        n = pre.shape[0]
        rows = torch.arange(n, device=pre.device)
        active = SparseLatents(values.flatten(), dead[local.flatten()], rows * aux_k, rows.repeat_interleave(aux_k))
        values = self.sae.differentiable_values(x_centered, active)
        explained = self.sae.decode_sparse(active, values) - self.sae.b_dec
        residual_variance = (residual - residual.mean(dim=0)).pow(2).sum().clamp_min(1e-12)
        return (explained - residual).pow(2).sum() / residual_variance

    def _update_batchtopk_threshold(self, kept: Tensor) -> None:
        positive = kept[kept > 0]
        if len(positive) == 0:
            return
        smallest = float(positive.min())
        decay = self.cfg.batchtopk_threshold_decay
        old = self.batchtopk_threshold
        self.batchtopk_threshold = smallest if old is None else decay * old + (1 - decay) * smallest
        self.sae.threshold.fill_(self.batchtopk_threshold)

    def _l1_loss(self, x: Tensor, x_centered: Tensor, total_variance: Tensor) -> tuple[Tensor, dict, Tensor, float]:
        """Squared error of the dense ReLU codes plus l1_coefficient * sum_i f_i ||W_dec_i||, both over the total variance."""
        sae = self.sae
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            codes = torch.relu(torch.addmm(sae.b_enc, x_centered, sae.W_enc).float())
        residual = x - (codes @ sae.W_dec + sae.b_dec)
        squared_error = residual.pow(2).sum()
        l1 = (codes * sae.W_dec.norm(dim=1)).sum()
        loss = (squared_error + sae.cfg.l1_coefficient * l1) / total_variance
        metrics = {"fvu": (squared_error / total_variance).item(), "aux_loss": 0.0}
        return loss, metrics, (codes > 0).any(dim=0), float((codes > 0).sum()) / len(x)

    def step(self, batch) -> dict:
        """One optimizer step on a raw batch (n, d_in); returns the step's metrics."""
        sae, cfg = self.sae, self.cfg
        x = torch.as_tensor(batch).to(self.device, torch.float32) * self.input_scale
        if x.ndim != 2 or x.shape[1] != sae.cfg.d_in:
            raise ValueError(f"training batch has shape {tuple(x.shape)}, expected (n, {sae.cfg.d_in}); check the activation cache and d_in")
        lr = learning_rate_at(self.step_index, self.base_lr, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total_variance = (x - x.mean(dim=0)).pow(2).sum().clamp_min(1e-12)
        loss, metrics, fired, mean_l0 = self.loss(x, sae.center(x), total_variance)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.normalize_decoder:
            sae.remove_gradient_parallel_to_decoder()
        self.optimizer.step()
        if cfg.normalize_decoder:
            sae.set_decoder_to_unit_norm()
        self.tokens_since_fired += len(x)
        self.tokens_since_fired[fired] = 0
        self.step_index += 1
        self.tokens_seen += len(x)
        dead_fraction = float((self.tokens_since_fired >= self.dead_after(len(x))).float().mean())
        return {"step": self.step_index, "tokens": self.tokens_seen, "lr": lr, "loss": loss.item(), **metrics,
                "mean_l0": mean_l0, "dead_fraction": dead_fraction}

    def dead_after(self, batch_size: int) -> int:
        """Tokens without firing after which a latent counts as dead: settings.dead_after_tokens, or when
        None 10 million or one epoch, the fewer (a small run must be able to see a latent die)."""
        settings = self.cfg.settings
        if settings.dead_after_tokens is not None:
            return settings.dead_after_tokens
        return min(10_000_000, (self.cfg.n_steps // settings.epochs) * batch_size)

    def raw_sae(self) -> SparseAutoencoder:
        """The SAE for raw (unnormalized) activations, on CPU."""
        return self.sae.folded(self.input_scale).cpu()

    def state_dict(self) -> dict:
        return {"step": self.step_index, "tokens": self.tokens_seen, "sae": self.sae.state_dict(), "optimizer": self.optimizer.state_dict(),
                "tokens_since_fired": self.tokens_since_fired, "input_scale": self.input_scale,
                "batchtopk_threshold": self.batchtopk_threshold, "curve": self.curve}

    def load_state_dict(self, state: dict) -> None:
        self.step_index, self.tokens_seen = state["step"], state["tokens"]
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tokens_since_fired.copy_(state["tokens_since_fired"])
        self.input_scale = state["input_scale"]
        self.batchtopk_threshold = state["batchtopk_threshold"]
        self.curve = list(state["curve"])


def _identity(sae_cfg: SaeConfig, cfg: TrainConfig) -> dict:
    """The settings a checkpoint must share with a run to be resumed by it: the SAE's, and every setting
    the trainer reads but the bookkeeping (checkpoint_every, log_every), as one flat dict."""
    run = {item.name: getattr(cfg, item.name) for item in fields(cfg) if item.name != "settings"}
    shared = {item.name: getattr(cfg.settings, item.name) for item in fields(cfg.settings) if item.name not in _NOT_THE_TRAINERS}
    return {"sae": sae_cfg.to_dict(), "train": {**run, **shared, "checkpoint_every": 0, "log_every": 0}}


def _save_checkpoint(trainer: SaeTrainer, identity: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    torch.save({"identity": identity, **trainer.state_dict()}, temporary)
    os.replace(temporary, folder / CHECKPOINT_NAME)


def _load_checkpoint(trainer: SaeTrainer, identity: dict, folder: Path) -> None:
    path = folder / CHECKPOINT_NAME
    if not path.exists():
        return
    state = read_checked(path, lambda path: torch.load(path, map_location=trainer.device, weights_only=False))
    if state["identity"] != identity:
        raise UserError(f"checkpoint {path} belongs to a run with other settings; delete {folder} or choose another checkpoint folder")
    trainer.load_state_dict(state)


def _start_stream(source: BatchSource, start_step: int, n_first: int) -> tuple[list[Tensor], Iterator]:
    """The first n_first batches (only when starting at step 0) and the stream from start_step."""
    if callable(source):
        first = list(itertools.islice(iter(source(0)), n_first)) if start_step == 0 else []
        return first, iter(source(start_step))
    stream = iter(source)
    if start_step > 0:
        return [], itertools.islice(stream, start_step, None)
    first = list(itertools.islice(stream, n_first))
    return first, itertools.chain(first, stream)


def train_sae(batches: BatchSource, sae_cfg: SaeConfig, cfg: TrainConfig = TrainConfig(),
              checkpoint_dir: str | Path | None = None) -> TrainResult:
    """Train an SAE on a stream of activation batches.

    batches: `make_batches(start_step)` returning an iterable of (n, d_in) float
        arrays (numpy or torch) from batch `start_step` on, or an iterable of such
        arrays (a resume re-iterates it and skips the batches already used). A
        rerun must see the same batches for the resume to be exact.
    checkpoint_dir: folder for `checkpoint.pt`, written every cfg.settings.checkpoint_every
        steps and at the end; a rerun continues from it.
    Returns the SAE for raw activations (on CPU) and the training curve, one row
    per cfg.settings.log_every steps: step, tokens, lr, loss, fvu, aux_loss, mean_l0, dead_fraction.
    """
    trainer = SaeTrainer(sae_cfg, cfg)
    identity = _identity(sae_cfg, cfg)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        _load_checkpoint(trainer, identity, folder)
    first, stream = _start_stream(batches, trainer.step_index, cfg.normalization_batches)
    if trainer.step_index == 0:
        if not first:
            raise ValueError("the activation batch stream is empty; check the activation cache and the row selection")
        trainer.initialize([torch.as_tensor(batch).to(torch.float32) for batch in first])
    while trainer.step_index < cfg.n_steps:
        batch = next(stream, None)
        if batch is None:
            if folder is not None:
                _save_checkpoint(trainer, identity, folder)
            raise ValueError(f"the batch stream ended after {trainer.step_index} of n_steps={cfg.n_steps} steps; lower n_steps or supply more batches")
        metrics = trainer.step(batch)
        if trainer.step_index % cfg.settings.log_every == 0 or trainer.step_index == cfg.n_steps:
            trainer.curve.append(metrics)
        if folder is not None and trainer.step_index % cfg.settings.checkpoint_every == 0:
            _save_checkpoint(trainer, identity, folder)
    if folder is not None:
        _save_checkpoint(trainer, identity, folder)
    return TrainResult(trainer.raw_sae(), pd.DataFrame(trainer.curve), trainer.input_scale)
