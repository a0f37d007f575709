"""What a trained SAE is worth: reconstruction on held-out positions, and the downstream loss with it spliced in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .architectures import SparseAutoencoder


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, batches: Iterable) -> dict:
    """Reconstruction quality over streamed raw batches (n, d_in).

    Returns fvu (sum ||x - x_hat||^2 / sum ||x - mean x||^2, mean over all
    positions), explained_variance (1 - fvu), mean_l0 (active latents per
    position), dead_fraction (latents that never fired) and n_positions.
    """
    return evaluate_saes([sae], batches)[0]


@torch.no_grad()
def evaluate_saes(saes: Sequence[SparseAutoencoder], batches: Iterable) -> list[dict]:
    """`evaluate_sae` for several SAEs of one layer in one pass over the batches: one dict per SAE, in order.

    The seeds of a layer are evaluated on the same held-out positions; reading
    them once serves all of them.
    """
    if len({sae.cfg.d_in for sae in saes}) > 1:
        raise UserError(f"SAEs of one layer must share d_in; got {sorted({sae.cfg.d_in for sae in saes})}")
    sum_x = torch.zeros(saes[0].cfg.d_in, dtype=torch.float64)
    sum_square_norm = 0.0
    n_positions = 0
    squared_errors = [0.0] * len(saes)
    n_active = [0] * len(saes)
    fired = [torch.zeros(sae.cfg.d_sae, dtype=torch.bool) for sae in saes]
    for batch in batches:
        x = torch.as_tensor(batch).to(torch.float32)
        x64 = x.double()
        sum_x += x64.sum(dim=0)
        sum_square_norm += float(x64.pow(2).sum())
        n_positions += len(x)
        for index, sae in enumerate(saes):
            x_device = x.to(sae.device)
            active = sae.encode_sparse(x_device)
            residual = x_device - sae.decode_sparse(active)
            squared_errors[index] += float(residual.double().pow(2).sum())
            nonzero = active.values > 0
            n_active[index] += int(nonzero.sum())
            fired[index][active.latents[nonzero].cpu()] = True
    if n_positions == 0:
        raise UserError("no positions to evaluate the SAE on; check the held-out split")
    total_variance = sum_square_norm - float(sum_x.pow(2).sum()) / n_positions
    results = []
    for squared_error, active_count, fired_latents in zip(squared_errors, n_active, fired):
        fvu = squared_error / total_variance if total_variance > 0 else float("nan")
        results.append({"fvu": fvu, "explained_variance": 1 - fvu, "mean_l0": active_count / n_positions,
                        "dead_fraction": float((~fired_latents).float().mean()), "n_positions": n_positions})
    return results


def _mean_next_token_loss(model, input_ids: Tensor, attention_mask: Tensor) -> float:
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    # Targets shifted onto the logits, instead of slicing the logits: with a 262k-token
    # vocabulary a copy of the (batch, seq, vocab) logits costs as much as the loss.
    counted = torch.zeros_like(attention_mask, dtype=torch.bool)
    counted[:, :-1] = (attention_mask[:, 1:] * attention_mask[:, :-1]).bool()
    targets = torch.full_like(input_ids, -100)
    targets[:, :-1] = input_ids[:, 1:]
    targets[~counted] = -100
    losses = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), reduction="sum", ignore_index=-100)
    return float(losses / counted.sum())


def splice_loss_recovered(model, input_ids: Tensor, layer: int, sae: SparseAutoencoder,
                          attention_mask: Tensor | None = None, splice_mask: Tensor | None = None) -> dict:
    """Next-token loss with the SAE's reconstruction spliced into the residual stream.

    The output of block `layer` (hidden_states[layer + 1] in transformers) is
    replaced by sae(output), then by zeros (zero ablation), at positions where
    splice_mask (batch, seq) is True (default: everywhere).
    Returns ce_clean, ce_sae, ce_zero, fraction_recovered =
    (ce_zero - ce_sae) / (ce_zero - ce_clean), and loss_tokens (predicted tokens the losses average).
    """
    return downstream_losses(model, input_ids, layer, [sae], attention_mask, splice_mask)[0]


@torch.no_grad()
def downstream_losses(model, input_ids: Tensor, layer: int, saes: Sequence[SparseAutoencoder],
                      attention_mask: Tensor | None = None, splice_mask: Tensor | None = None) -> list[dict]:
    """`splice_loss_recovered` for several SAEs of one layer: one dict per SAE, in order.

    The clean and zero-ablation passes do not depend on the SAE, so they run
    once; each SAE costs one more forward pass. Several SAEs per layer are the
    rule here (the ceiling control trains two seeds), and on models with large
    vocabularies the passes dominate an evaluation job.
    """
    from ..models.loading import decoder_layers

    blocks = decoder_layers(model)
    if not 0 <= layer < len(blocks):
        raise UserError(f"layer {layer} is out of range: the model has blocks 0..{len(blocks) - 1}")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    mask = torch.ones_like(input_ids, dtype=torch.bool) if splice_mask is None else splice_mask.bool()

    def replace_with(make_replacement):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            spliced = torch.where(mask[..., None], make_replacement(hidden).to(hidden.dtype), hidden)
            return (spliced, *output[1:]) if isinstance(output, tuple) else spliced
        return hook

    def spliced_loss(make_replacement) -> float:
        handle = blocks[layer].register_forward_hook(replace_with(make_replacement))
        try:
            return _mean_next_token_loss(model, input_ids, attention_mask)
        finally:
            handle.remove()

    ce_clean = _mean_next_token_loss(model, input_ids, attention_mask)
    ce_zero = spliced_loss(torch.zeros_like)
    # Predicted tokens behind each loss: a few hundred make fraction_recovered noise.
    loss_tokens = int((attention_mask[:, 1:] * attention_mask[:, :-1]).sum())
    gap = ce_zero - ce_clean
    results = []
    for sae in saes:
        sae = sae.to(input_ids.device)
        ce_sae = spliced_loss(lambda hidden, sae=sae: sae(hidden.float()))
        results.append({"ce_clean": ce_clean, "ce_sae": ce_sae, "ce_zero": ce_zero,
                        "fraction_recovered": (ce_zero - ce_sae) / gap if gap != 0 else float("nan"),
                        "loss_tokens": loss_tokens})
    return results


SHARED_COSINE = 0.7
"""Decoder cosine above which two SAEs' latents count as the same (Paulo & Belrose 2025)."""


def seed_stability(W_dec_a, W_dec_b, threshold: float = SHARED_COSINE) -> dict:
    """How far two SAEs' dictionaries are the same, as the literature reports it.

    The latents of A and B (rows of W_dec, (d_sae, d_in) each, any scale) are paired one to one by the
    assignment that maximizes the summed cosine of their decoder directions (Hungarian). Returns
    `decoder_cosine_mean` (mean cosine of the assigned pairs; Song et al. 2025 report about 0.8 for TopK
    SAEs) and `fraction_shared` (the fraction of A's latents whose assigned cosine is at least `threshold`;
    Paulo & Belrose 2025 find about 30% at 0.7). Zero rows (blanked latents) have cosine 0 with everything.
    """
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    def unit_rows(matrix):
        matrix = np.asarray(matrix, dtype=np.float64)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)

    cosine = unit_rows(W_dec_a) @ unit_rows(W_dec_b).T
    rows, columns = linear_sum_assignment(cosine, maximize=True)
    assigned = cosine[rows, columns]
    return {"decoder_cosine_mean": float(assigned.mean()),
            "fraction_shared": float((assigned >= threshold).sum() / cosine.shape[0])}
