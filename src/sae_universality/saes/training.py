"""Train sparse autoencoders on streams of activation batches.

The trainer does not know where activations come from: it takes
`make_batches(start_step)`, a function returning an iterable of (n, d_in) float
arrays that starts at batch `start_step` (or a plain iterable, which a resume
fast-forwards). `activation_batches.iter_hdf5_batches` is one such source, for
activation caches; `sae_evaluation` measures what a trained SAE is worth.

Practices (each a `TrainConfig` field): one input scale so that E||x||^2 = d_in,
folded into the saved weights; unit-norm decoder rows with the parallel gradient
removed; AuxK loss on dead latents (Gao et al. 2024); Adam with linear warmup and
a linear decay to 0 over the last 20%; W_enc = W_dec^T and b_dec = geometric
median at the start. Runs are seeded and bitwise reproducible on CPU, and a
rerun resumes from the last checkpoint to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from sae_universality.devices import torch_device
from sae_universality.errors import UserError
from sae_universality.io import read_checked
from sae_universality.saes.architectures import SaeConfig, SparseAutoencoder, SparseLatents, default_learning_rate

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """How to train one SAE; the defaults follow Gao et al. 2024."""

    n_steps: int = 10_000
    """Optimizer steps (one batch each); the learning-rate schedule ends here."""
    lr: float | None = None
    """Adam learning rate; None scales it with width (saes.default_learning_rate)."""
    warmup_steps: int = 1000
    """Steps of linear learning-rate warmup, at most a tenth of n_steps."""
    decay_fraction: float = 0.2
    """Final fraction of steps over which the learning rate falls linearly to 0."""
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
    aux_k: int = 512
    """Dead latents the AuxK loss uses per position (at most the number of dead latents)."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss."""
    dead_after_tokens: int | None = None
    """A latent is dead when it has not fired in this many training tokens; None: 10 million, or one
    epoch when that is shorter (a small run must be able to see a latent die)."""
    epochs: int = 1
    """Passes over the training data that the n_steps make: one epoch is n_steps / epochs batches."""
    batchtopk_threshold_decay: float = 0.99
    """Decay of the running mean of BatchTopK's smallest kept value (its inference threshold)."""
    seed: int = 0
    """Seed of the weight initialization."""
    checkpoint_every: int = 200
    """Steps between checkpoints, when a checkpoint folder is given."""
    log_every: int = 20
    """Steps between rows of the training curve."""
    device: str = "auto"
    """cuda, cpu, or auto (CUDA when available; bf16 matmuls there, float32 on CPU)."""


@dataclass
class TrainResult:
    """A trained SAE that reads raw activations, with its training curve."""

    sae: SparseAutoencoder
    curve: pd.DataFrame
    input_scale: float


BatchSource = Callable[[int], Iterable] | Iterable


def learning_rate_at(step: int, base_lr: float, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): warmup, constant, linear decay to 0."""
    warmup = max(1, min(cfg.warmup_steps, cfg.n_steps // 10))
    decay_start = int(cfg.n_steps * (1 - cfg.decay_fraction))
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
        if sae_cfg.architecture == "jumprelu":
            raise ValueError("jumprelu SAEs can be loaded but not trained here; train topk, batchtopk or relu")
        self.cfg = cfg
        self.device = torch_device(cfg.device)
        self.use_bf16 = self.device.type == "cuda"
        self.sae = SparseAutoencoder(sae_cfg, seed=cfg.seed).to(self.device)
        self.base_lr = cfg.lr if cfg.lr is not None else default_learning_rate(sae_cfg.d_sae)
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

    def _sparse_loss(self, x: Tensor, x_centered: Tensor, total_variance: Tensor) -> tuple[Tensor, dict, SparseLatents]:
        """FVU of a TopK / BatchTopK SAE plus the AuxK loss; x: (n, d_in) normalized."""
        sae = self.sae
        pre = self._pre_activations(x_centered)
        active = sae.select(pre, whole_batch=True)
        values = sae.differentiable_values(x_centered, active)
        residual = x - sae.decode_sparse(active, values)
        fvu = residual.pow(2).sum() / total_variance
        aux_loss = self._aux_loss(pre, x_centered, residual.detach())
        if sae.cfg.architecture == "batchtopk":
            self._update_batchtopk_threshold(active.values)
        return fvu + self.cfg.aux_coefficient * aux_loss, {"fvu": fvu.item(), "aux_loss": aux_loss.item()}, active

    def _aux_loss(self, pre: Tensor, x_centered: Tensor, residual: Tensor) -> Tensor:
        """Reconstruct the residual (n, d_in) from the top aux_k dead latents (Gao et al. AuxK)."""
        dead = (self.tokens_since_fired >= self.dead_after(len(pre))).nonzero().flatten()
        if len(dead) == 0 or self.cfg.aux_coefficient == 0:
            return residual.new_zeros(())
        aux_k = min(self.cfg.aux_k, len(dead))
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

    def _relu_loss(self, x: Tensor, x_centered: Tensor, total_variance: Tensor) -> tuple[Tensor, dict, Tensor]:
        """Squared error plus l1_coefficient * sum_i f_i ||W_dec_i||, both over the total variance."""
        sae = self.sae
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            codes = torch.relu(torch.addmm(sae.b_enc, x_centered, sae.W_enc).float())
        residual = x - (codes @ sae.W_dec + sae.b_dec)
        squared_error = residual.pow(2).sum()
        l1 = (codes * sae.W_dec.norm(dim=1)).sum()
        loss = (squared_error + sae.cfg.l1_coefficient * l1) / total_variance
        return loss, {"fvu": (squared_error / total_variance).item(), "aux_loss": 0.0}, codes

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
        x_centered = sae.center(x)
        if sae.cfg.architecture == "relu":
            loss, metrics, codes = self._relu_loss(x, x_centered, total_variance)
            fired = (codes > 0).any(dim=0)
            mean_l0 = float((codes > 0).sum()) / len(x)
        else:
            loss, metrics, active = self._sparse_loss(x, x_centered.detach(), total_variance)
            fired = torch.bincount(active.latents[active.values > 0], minlength=sae.cfg.d_sae) > 0
            mean_l0 = float((active.values > 0).sum()) / len(x)
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
        """Tokens without firing after which a latent counts as dead (see TrainConfig.dead_after_tokens)."""
        if self.cfg.dead_after_tokens is not None:
            return self.cfg.dead_after_tokens
        return min(10_000_000, (self.cfg.n_steps // self.cfg.epochs) * batch_size)

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
    """The settings a checkpoint must share with a run to be resumed by it."""
    return {"sae": sae_cfg.to_dict(), "train": asdict(replace(cfg, checkpoint_every=0, log_every=0))}


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
    checkpoint_dir: folder for `checkpoint.pt`, written every cfg.checkpoint_every
        steps and at the end; a rerun continues from it.
    Returns the SAE for raw activations (on CPU) and the training curve, one row
    per cfg.log_every steps: step, tokens, lr, loss, fvu, aux_loss, mean_l0, dead_fraction.
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
        if trainer.step_index % cfg.log_every == 0 or trainer.step_index == cfg.n_steps:
            trainer.curve.append(metrics)
        if folder is not None and trainer.step_index % cfg.checkpoint_every == 0:
            _save_checkpoint(trainer, identity, folder)
    if folder is not None:
        _save_checkpoint(trainer, identity, folder)
    return TrainResult(trainer.raw_sae(), pd.DataFrame(trainer.curve), trainer.input_scale)
