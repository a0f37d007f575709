"""What a trained SAE is worth: reconstruction on held-out positions, and the downstream loss with it spliced in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
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


LOSS_CHUNK_POSITIONS = 512
"""Positions whose logits exist at once: (512, vocabulary) floats, 0.5 GB at Gemma-3's 262k tokens."""


def _predicted_positions(attention_mask: Tensor) -> Tensor:
    """(batch, seq) True where the next token is real text: the positions whose loss is counted."""
    counted = torch.zeros_like(attention_mask, dtype=torch.bool)
    counted[:, :-1] = (attention_mask[:, 1:] * attention_mask[:, :-1]).bool()
    return counted


@torch.no_grad()
def next_token_loss_sum(model, last_hidden: Tensor, input_ids: Tensor, attention_mask: Tensor,
                        chunk_positions: int = LOSS_CHUNK_POSITIONS) -> tuple[float, int]:
    """Summed next-token cross-entropy from the final (normed) hidden states, and how many tokens it sums.

    The output head runs only on the positions whose next token is counted, in
    chunks with a log-sum-exp each: the full (batch, seq, vocabulary) logits,
    their float copy and their log-softmax are never held at once (with
    151,936- and 262,144-way heads they would be the largest tensors of the job).
    Gemma-2/3's final logit soft-capping is applied as the model's own forward does.
    """
    counted = _predicted_positions(attention_mask)
    hidden = last_hidden[counted]
    targets = input_ids[:, 1:][counted[:, :-1]]
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    total = 0.0
    for start in range(0, len(hidden), chunk_positions):
        logits = head(hidden[start:start + chunk_positions]).float()
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        chosen = logits.gather(1, targets[start:start + chunk_positions, None])[:, 0]
        total += float((torch.logsumexp(logits, dim=1) - chosen).double().sum())
    return total, int(counted.sum())


class _Replay(torch.nn.Module):
    """Stands in for a block during a spliced pass: returns a fixed output instead of computing one.

    Blocks up to the spliced one are replaced by replays of the spliced output,
    so the pass computes only the blocks after it (their inputs are what the
    clean pass and the splice made them; the blocks before add nothing).
    """

    def __init__(self, hidden: Tensor, as_tuple: bool):
        super().__init__()
        self.hidden, self.as_tuple = hidden, as_tuple

    def forward(self, *args, **kwargs):
        return (self.hidden,) if self.as_tuple else self.hidden


def _last_hidden(model, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    return model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


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


def downstream_losses(model, input_ids: Tensor, layer: int, saes: Sequence[SparseAutoencoder],
                      attention_mask: Tensor | None = None, splice_mask: Tensor | None = None) -> list[dict]:
    """`splice_loss_recovered` for several SAEs of one layer: one dict per SAE, in order."""
    return downstream_losses_of_layers(model, input_ids, {layer: saes}, attention_mask, splice_mask)[layer]


@torch.no_grad()
def downstream_losses_of_layers(model, input_ids: Tensor, saes_by_layer: Mapping[int, Sequence[SparseAutoencoder]],
                                attention_mask: Tensor | None = None, splice_mask: Tensor | None = None,
                                windows_per_pass: int = 8) -> dict[int, list[dict]]:
    """`downstream_losses` for the SAEs of several layers of one model: layer -> one dict per SAE, in order.

    One clean pass serves every layer: it records each layer's block output and
    gives ce_clean. Each zero-ablation and SAE pass then replays that output,
    spliced, and computes only the blocks after the layer, with the loss head
    chunked (`next_token_loss_sum`). Against one full pass per (layer, clean,
    zero, SAE) this does about a third of the work at the default's layers
    (benchmarks/bench_evaluation.py). Windows (rows of input_ids) go through in
    groups of `windows_per_pass`, the losses summed over them.
    """
    from ..models.loading import decoder_layers

    blocks = decoder_layers(model)
    for layer in saes_by_layer:
        if not 0 <= layer < len(blocks):
            raise UserError(f"layer {layer} is out of range: the model has blocks 0..{len(blocks) - 1}")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    splice_mask = torch.ones_like(input_ids, dtype=torch.bool) if splice_mask is None else splice_mask.bool()
    saes_by_layer = {layer: [sae.to(input_ids.device) for sae in saes] for layer, saes in saes_by_layer.items()}
    clean_sum, zero_sums, sae_sums, n_tokens = 0.0, dict.fromkeys(saes_by_layer, 0.0), {}, 0
    for layer, saes in saes_by_layer.items():
        sae_sums[layer] = [0.0] * len(saes)
    for start in range(0, len(input_ids), windows_per_pass):
        rows = slice(start, start + windows_per_pass)
        ids, mask, splice = input_ids[rows], attention_mask[rows], splice_mask[rows]
        recorded, as_tuple = {}, {}

        def record(layer):
            def hook(module, inputs, output):
                as_tuple[layer] = isinstance(output, tuple)
                recorded[layer] = output[0] if as_tuple[layer] else output
            return hook

        handles = [blocks[layer].register_forward_hook(record(layer)) for layer in saes_by_layer]
        try:
            loss, tokens = next_token_loss_sum(model, _last_hidden(model, ids, mask), ids, mask)
        finally:
            for handle in handles:
                handle.remove()
        clean_sum += loss
        n_tokens += tokens

        def spliced_loss(layer, replacement: Tensor) -> float:
            hidden = recorded[layer]
            spliced = torch.where(splice[..., None], replacement.to(hidden.dtype), hidden)
            originals = [blocks[index] for index in range(layer + 1)]
            try:
                for index in range(layer + 1):
                    blocks[index] = _Replay(spliced, as_tuple[layer])
                return next_token_loss_sum(model, _last_hidden(model, ids, mask), ids, mask)[0]
            finally:
                for index, block in enumerate(originals):
                    blocks[index] = block

        for layer, saes in saes_by_layer.items():
            zero_sums[layer] += spliced_loss(layer, torch.zeros_like(recorded[layer]))
            for index, sae in enumerate(saes):
                sae_sums[layer][index] += spliced_loss(layer, sae(recorded[layer].float()))
    if n_tokens == 0:
        raise UserError("no predicted tokens to measure the downstream loss on; the loss windows are empty")
    ce_clean = clean_sum / n_tokens
    results = {}
    for layer, saes in saes_by_layer.items():
        ce_zero = zero_sums[layer] / n_tokens
        gap = ce_zero - ce_clean
        results[layer] = []
        for summed in sae_sums[layer]:
            ce_sae = summed / n_tokens
            results[layer].append({"ce_clean": ce_clean, "ce_sae": ce_sae, "ce_zero": ce_zero,
                                   "fraction_recovered": (ce_zero - ce_sae) / gap if gap != 0 else float("nan"),
                                   "loss_tokens": n_tokens})
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
