"""Sparse autoencoders: one module for TopK, BatchTopK, ReLU and JumpReLU SAEs.

Weights follow the SAELens layout: `W_enc` (d_in, d_sae), `b_enc` (d_sae),
`W_dec` (d_sae, d_in), `b_dec` (d_in). Rows of `W_dec` are the feature directions.

    pre-activations  p(x) = ReLU((x - b_dec) @ W_enc + b_enc)      (n, d_sae)
    codes            f(x) = the latents of p(x) the architecture keeps
    reconstruction   x_hat = f @ W_dec + b_dec                      (n, d_in)

Active latents travel as `SparseLatents` (CSR rows without the last pointer), so
training never multiplies by the mostly-zero (n, d_sae) code matrix: decoding
is an `embedding_bag` over the k active rows of `W_dec`, and the weight
gradients are sparse-times-dense products (see `_SparseEncode`, `_SparseDecode`).

What differs between architectures is one `Architecture` record each in the
table `ARCHITECTURES`: how codes are picked at inference and in training,
whether it trains here and with which loss, whether k applies, and how SAELens
names it on disk. Adding an architecture means its selection function here and
its row in that table; the trainer (training.py) and the SAELens files
(formats.py) read the record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sae_universality.errors import UserError
from sae_universality.settings import TrainSettings


@dataclass(frozen=True)
class SaeConfig:
    """Shape and activation function of one sparse autoencoder."""

    d_in: int
    """Width of the activations the SAE reads (the model's hidden size)."""
    d_sae: int
    """Number of latents (features)."""
    architecture: str = "topk"
    """A name in ARCHITECTURES: topk, batchtopk, relu, or jumprelu (jumprelu is for loading, not training)."""
    k: int = 32
    """Active latents per position (topk) or on average per position (batchtopk)."""
    l1_coefficient: float = 5.0
    """Weight of the L1 penalty on codes times decoder row norms (relu only)."""
    apply_b_dec_to_input: bool = True
    """Subtract b_dec from the input before encoding (Gemma Scope does not)."""
    model_name: str = ""
    """Language model the SAE reads (metadata only)."""
    hook_name: str = ""
    """Hook point the SAE reads, e.g. blocks.3.hook_resid_post (metadata only)."""

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise UserError(f"unknown SAE architecture {self.architecture!r}; use one of {', '.join(ARCHITECTURES)}")
        if self.d_in < 1 or self.d_sae < 1:
            raise UserError(f"SAE sizes must be positive, got d_in={self.d_in} d_sae={self.d_sae}")
        if ARCHITECTURES[self.architecture].uses_k and not 1 <= self.k <= self.d_sae:
            raise UserError(f"SAE k={self.k} must be between 1 and d_sae={self.d_sae}")

    @classmethod
    def from_settings(cls, settings: TrainSettings, d_in: int, model_name: str = "", hook_name: str = "") -> "SaeConfig":
        """The SAE that `settings` (config: saes.train) train on a model of width d_in."""
        return cls(d_in=d_in, d_sae=d_sae_for(settings, d_in), architecture=settings.architecture, k=settings.k,
                   l1_coefficient=settings.l1_coefficient, model_name=model_name, hook_name=hook_name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SaeConfig":
        """Build from a dict, ignoring keys this class does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def default_d_sae(d_in: int, expansion_factor: int = 8) -> int:
    """Number of latents for a model width: d_in times the expansion factor."""
    return d_in * expansion_factor


def d_sae_for(settings: TrainSettings, d_in: int) -> int:
    """Number of latents `settings` give an SAE of a model of width d_in: their d_sae, else d_in * expansion_factor."""
    return settings.d_sae or default_d_sae(d_in, settings.expansion_factor)


def default_learning_rate(d_sae: int) -> float:
    """Adam learning rate scaled with width as in Gao et al. 2024: 2e-4 / sqrt(d_sae / 2**14)."""
    return 2e-4 / math.sqrt(d_sae / 2**14)


class SparseLatents(NamedTuple):
    """Active latents of n positions in CSR order (rows ascending).

    values (nnz,) float, latents (nnz,) int64 latent index, row_starts (n,) int64
    offset of each row's first entry, rows (nnz,) int64 position of each entry.
    """

    values: Tensor
    latents: Tensor
    row_starts: Tensor
    rows: Tensor

    def to_dense(self, d_sae: int) -> Tensor:
        """The (n, d_sae) code matrix."""
        dense = self.values.new_zeros(len(self.row_starts), d_sae)
        dense[self.rows, self.latents] = self.values
        return dense


def select_topk(pre_acts: Tensor, k: int) -> SparseLatents:
    """Keep the k largest of each row of ReLU'd pre-activations (n, d_sae)."""
    values, latents = pre_acts.topk(k, dim=1, sorted=False)
    n = pre_acts.shape[0]
    rows = torch.arange(n, device=pre_acts.device)
    return SparseLatents(values.flatten(), latents.flatten(), rows * k, rows.repeat_interleave(k))


def select_batch_topk(pre_acts: Tensor, k: int) -> SparseLatents:
    """Keep the n * k largest entries of the whole batch (BatchTopK, Bussmann et al. 2024)."""
    n, d_sae = pre_acts.shape
    _, flat = pre_acts.flatten().topk(n * k, sorted=False)
    flat = flat.sort().values  # row-major order, so entries come grouped by row
    rows, latents = flat // d_sae, flat % d_sae
    return _from_coordinates(pre_acts, rows, latents)


def select_above(pre_acts: Tensor, threshold: Tensor) -> SparseLatents:
    """Keep positive entries above a per-latent threshold (JumpReLU; ReLU with threshold 0)."""
    rows, latents = (pre_acts > threshold.clamp_min(0)).nonzero(as_tuple=True)
    return _from_coordinates(pre_acts, rows, latents)


def _from_coordinates(pre_acts: Tensor, rows: Tensor, latents: Tensor) -> SparseLatents:
    counts = torch.bincount(rows, minlength=pre_acts.shape[0])
    row_starts = torch.cumsum(counts, 0) - counts
    return SparseLatents(pre_acts[rows, latents], latents, row_starts, rows)


# How each architecture picks its codes from ReLU'd pre-activations (n, d_sae) of an SAE.
Selection = Callable[[Tensor, "SparseAutoencoder"], SparseLatents]


def _top_k_of_each_position(pre_acts: Tensor, sae: "SparseAutoencoder") -> SparseLatents:
    return select_topk(pre_acts, sae.cfg.k)


def _top_k_times_n_of_the_batch(pre_acts: Tensor, sae: "SparseAutoencoder") -> SparseLatents:
    return select_batch_topk(pre_acts, sae.cfg.k)


def _positive(pre_acts: Tensor, sae: "SparseAutoencoder") -> SparseLatents:
    return select_above(pre_acts, pre_acts.new_zeros(()))


def _above_threshold(pre_acts: Tensor, sae: "SparseAutoencoder") -> SparseLatents:
    return select_above(pre_acts, sae.threshold)


@dataclass(frozen=True)
class Architecture:
    """What makes one SAE architecture: its codes, its training, its name in SAELens's files."""

    select: Selection
    """The codes at inference (and when encoding a cache)."""
    select_in_training: Selection | None = None
    """The codes in a training step, when they differ from inference's (BatchTopK: top n*k of the batch)."""
    uses_k: bool = False
    """k sets how many latents are active (k must lie in 1..d_sae)."""
    training_loss: str | None = None
    """sparse (FVU of the selected codes + AuxK on dead latents), l1 (squared error + L1 penalty on the
    dense ReLU codes), or None: loaded, never trained here."""
    learns_threshold: bool = False
    """Training keeps a running threshold (the smallest kept code) that inference selects with."""
    saelens_name: str | None = None
    """Its architecture in a SAELens cfg.json; None: saved as the architecture `saved_as`."""
    saved_as: str | None = None
    """The architecture of ours it is saved as, when SAELens has no name for it (same codes at inference)."""
    saves_threshold: bool = False
    """Its per-latent threshold is part of its weights (saved as the tensor `threshold`)."""
    saelens_fields: Callable[[SaeConfig], dict] = lambda cfg: {}
    """Keys of its SAELens cfg.json beyond the common ones."""

    @property
    def trainable(self) -> bool:
        """The trainer here can train it."""
        return self.training_loss is not None


# Name (config: saes.train.architecture, SaeConfig.architecture) -> architecture.
ARCHITECTURES: dict[str, Architecture] = {
    "topk": Architecture(
        select=_top_k_of_each_position, uses_k=True, training_loss="sparse", saelens_name="topk",
        saelens_fields=lambda cfg: {"k": cfg.k, "rescale_acts_by_decoder_norm": False}),
    # At inference a BatchTopK SAE is a JumpReLU with one shared threshold, and SAELens saves it so.
    "batchtopk": Architecture(
        select=_above_threshold, select_in_training=_top_k_times_n_of_the_batch, uses_k=True,
        training_loss="sparse", learns_threshold=True, saved_as="jumprelu"),
    "relu": Architecture(
        select=_positive, training_loss="l1", saelens_name="standard",
        saelens_fields=lambda cfg: {"l1_coefficient": cfg.l1_coefficient}),
    "jumprelu": Architecture(select=_above_threshold, saelens_name="jumprelu", saves_threshold=True),
}
TRAINABLE = tuple(name for name, architecture in ARCHITECTURES.items() if architecture.trainable)
# SAELens cfg.json architecture -> ours.
FROM_SAELENS = {architecture.saelens_name: name for name, architecture in ARCHITECTURES.items() if architecture.saelens_name}


def _latent_sums(latents: Tensor, rows: Tensor, weights: Tensor, d_sae: int, dense: Tensor) -> Tensor:
    """(d_sae, d) matrix whose row j sums weights[e] * dense[rows[e]] over entries e with latents[e] == j."""
    sparse = torch.sparse_coo_tensor(torch.stack([latents, rows]), weights, (d_sae, dense.shape[0]), check_invariants=False)
    return torch.sparse.mm(sparse, dense)


class _SparseEncode(torch.autograd.Function):
    """Selected code values with the encoder's gradient computed sparsely.

    Forward returns `values` (already computed without grad). Backward uses that
    only nnz entries of dL/d(pre-activations) are nonzero: dW_enc = x_c^T S as a
    sparse (d_sae, n) @ dense (n, d_in) product, db_enc = column sums of S, and
    db_dec = -W_enc @ db_enc because x_c = x - b_dec.
    """

    @staticmethod
    def forward(ctx, x_centered, b_dec, W_enc, b_enc, values, latents, rows):
        """Returns a copy of values (nnz,). Eight parameters: an autograd Function receives the tensors it
        differentiates, and those it needs for that, as flat arguments, and returns one gradient per argument."""
        ctx.save_for_backward(x_centered, W_enc, values, latents, rows)
        return values.clone()

    @staticmethod
    def backward(ctx, grad_values):
        x_centered, W_enc, values, latents, rows = ctx.saved_tensors
        grad = grad_values * (values > 0)  # ReLU: zero-valued picks get no gradient
        d_sae = W_enc.shape[1]
        grad_b_enc = torch.zeros(d_sae, device=grad.device, dtype=grad.dtype).index_add_(0, latents, grad)
        grad_W_enc = _latent_sums(latents, rows, grad, d_sae, x_centered).T.contiguous()
        grad_b_dec = -(W_enc @ grad_b_enc) if ctx.needs_input_grad[1] else None
        return None, grad_b_dec, grad_W_enc, grad_b_enc, None, None, None


class _SparseDecode(torch.autograd.Function):
    """codes @ W_dec for sparse codes, without bias: an embedding_bag of W_dec rows."""

    @staticmethod
    def forward(ctx, values, W_dec, latents, row_starts, rows):
        ctx.save_for_backward(values, W_dec, latents, row_starts, rows)
        return F.embedding_bag(latents, W_dec, row_starts, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx, grad_out):
        values, W_dec, latents, row_starts, rows = ctx.saved_tensors
        grad_values = grad_W_dec = None
        if ctx.needs_input_grad[0]:
            # torch's per-sample-weight backward computes grad_out[row] . W_dec[latent] without gathering rows
            with torch.enable_grad():
                leaf = values.detach().requires_grad_()
                out = F.embedding_bag(latents, W_dec.detach(), row_starts, mode="sum", per_sample_weights=leaf)
                (grad_values,) = torch.autograd.grad(out, leaf, grad_out)
        if ctx.needs_input_grad[1]:
            grad_W_dec = _latent_sums(latents, rows, values, W_dec.shape[0], grad_out)
        return grad_values, grad_W_dec, None, None, None


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder; `forward(x)` reconstructs x of shape (..., d_in)."""

    def __init__(self, cfg: SaeConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        generator = torch.Generator().manual_seed(seed)
        directions = torch.randn(cfg.d_sae, cfg.d_in, generator=generator)
        directions /= directions.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(directions)
        self.W_enc = nn.Parameter(directions.T.clone())  # Gao et al.: encoder starts as the decoder's transpose
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        # Per-latent JumpReLU threshold; BatchTopK fills it with its inference threshold
        self.register_buffer("threshold", torch.zeros(cfg.d_sae))

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def center(self, x: Tensor) -> Tensor:
        """The encoder's input: x - b_dec, or x itself when apply_b_dec_to_input is False."""
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_activations(self, x: Tensor) -> Tensor:
        """ReLU((x - b_dec) @ W_enc + b_enc) before any TopK or threshold: (n, d_in) -> (n, d_sae)."""
        x = x.to(self.W_enc.dtype)
        return torch.relu(torch.addmm(self.b_enc, self.center(x), self.W_enc))

    def select(self, pre_acts: Tensor, whole_batch: bool = False) -> SparseLatents:
        """Active latents from ReLU'd pre-activations (n, d_sae).

        whole_batch: the architecture's training rule (BatchTopK: top n*k over the
        batch) instead of its inference rule (BatchTopK: the learned threshold).
        """
        architecture = ARCHITECTURES[self.cfg.architecture]
        if whole_batch and architecture.select_in_training is not None:
            return architecture.select_in_training(pre_acts, self)
        return architecture.select(pre_acts, self)

    def encode_sparse(self, x: Tensor) -> SparseLatents:
        """Active latents of x (n, d_in) in CSR order."""
        return self.select(self.pre_activations(x))

    def encode(self, x: Tensor) -> Tensor:
        """Codes (..., d_sae) of x (..., d_in)."""
        flat = x.reshape(-1, self.cfg.d_in)
        return self.encode_sparse(flat).to_dense(self.cfg.d_sae).reshape(*x.shape[:-1], self.cfg.d_sae)

    def decode(self, codes: Tensor) -> Tensor:
        """Reconstruction (..., d_in) of dense codes (..., d_sae)."""
        return codes.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def decode_sparse(self, active: SparseLatents, values: Tensor | None = None) -> Tensor:
        """Reconstruction (n, d_in) of sparse codes; `values` overrides active.values (to carry gradients)."""
        values = active.values if values is None else values
        return _SparseDecode.apply(values, self.W_dec, active.latents, active.row_starts, active.rows) + self.b_dec

    def differentiable_values(self, x_centered: Tensor, active: SparseLatents) -> Tensor:
        """active.values as a function of W_enc, b_enc, b_dec (gradient computed sparsely)."""
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else self.b_dec.detach()
        return _SparseEncode.apply(x_centered, b_dec, self.W_enc, self.b_enc, active.values, active.latents, active.rows)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.cfg.d_in)
        return self.decode_sparse(self.encode_sparse(flat)).reshape(x.shape).to(x.dtype)

    @torch.no_grad()
    def set_decoder_to_unit_norm(self) -> None:
        """Rescale every decoder row to length 1."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).eps)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder(self) -> None:
        """Drop the part of W_dec's gradient along each row, which only changes the row's length."""
        parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
        self.W_dec.grad -= parallel * self.W_dec

    @torch.no_grad()
    def folded(self, input_scale: float) -> "SparseAutoencoder":
        """An SAE for raw activations x from one trained on x * input_scale.

        Every activation here is positively homogeneous, so codes of raw x are the
        normalized codes / input_scale when biases and thresholds are divided by
        input_scale; the reconstruction is then the normalized one / input_scale.
        """
        raw = SparseAutoencoder(self.cfg)
        raw.load_state_dict(self.state_dict())
        raw = raw.to(self.device)
        for tensor in (raw.b_enc, raw.b_dec, raw.threshold):
            tensor /= input_scale
        return raw


def sae_from_weights(cfg: SaeConfig, W_enc, b_enc, W_dec, b_dec, threshold=None) -> SparseAutoencoder:
    """Build an SAE from arrays with shapes (d_in, d_sae), (d_sae,), (d_sae, d_in), (d_in,), (d_sae,)."""
    sae = SparseAutoencoder(cfg)
    expected = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
    given = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if threshold is not None:
        expected["threshold"], given["threshold"] = (cfg.d_sae,), threshold
    with torch.no_grad():
        for name, value in given.items():
            tensor = torch.as_tensor(value).to(torch.float32)
            if tuple(tensor.shape) != expected[name]:
                raise UserError(f"SAE tensor {name} has shape {tuple(tensor.shape)}, expected {expected[name]}; the file is not an SAE of this layout")
            getattr(sae, name).copy_(tensor)
    return sae


def untrained_dictionary(cfg: SaeConfig, b_dec, seed: int = 0) -> SparseAutoencoder:
    """The baseline of what an SAE adds: `cfg.d_sae` random unit directions as its decoder (Gaussian draws,
    normalized, from a CPU generator seeded with `seed`), the encoder their transpose, no encoder bias, and
    `b_dec` (d_in,) (the data's mean) subtracted before encoding; codes are selected as `cfg.architecture` does.

    Nothing is learned: features that match across models through it come from the geometry of the
    activations alone.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    directions = torch.randn(cfg.d_sae, cfg.d_in, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=1, keepdim=True)
    return sae_from_weights(cfg, directions.T.numpy(), np.zeros(cfg.d_sae), directions.numpy(),
                            np.asarray(b_dec, dtype=np.float64))
