"""The tokens a feature's decoder direction promotes and suppresses: the direction through the model's final norm
and unembedding (the logit lens of a decoder row, as SAEDashboard and Neuronpedia show it).

A feature adds `activation x direction` to the residual stream. Read directly by the output head, that
direction raises some tokens' logits and lowers others'. The final norm is applied as the model applies it
(RMSNorm's gain, Gemma's 1 + gain, LayerNorm's centring and gain) but without its bias, which is the same
for every direction: per-direction scale factors do not change which tokens come first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError

FINAL_NORMS = ("norm", "final_layer_norm", "ln_f")
"""Attribute names of the final norm on the decoder of a causal LM (Llama, Qwen2, Gemma; GPT-NeoX; GPT-2)."""


@dataclass(frozen=True)
class OutputTokens:
    """Per direction, its top promoted and suppressed tokens: (directions, k) ids and logit effects each."""

    promoted_ids: np.ndarray
    promoted_effects: np.ndarray
    """Largest first."""
    suppressed_ids: np.ndarray
    suppressed_effects: np.ndarray
    """Most negative first."""


def final_norm(model):
    """The final norm module of a causal LM's decoder; UserError for an architecture without a known one."""
    base = model.base_model
    for name in FINAL_NORMS:
        module = getattr(base, name, None)
        if module is not None:
            return module
    raise UserError(f"cannot find the final norm of a {type(model).__name__}; "
                    f"looked for {', '.join(FINAL_NORMS)} on its decoder")


def output_token_effects(model, directions: np.ndarray, k: int = 10, block: int = 256) -> OutputTokens:
    """The k tokens each row of `directions` (n, d_model) promotes and suppresses most through the model's
    final norm (without its bias) and unembedding; computed `block` directions at a time, so the
    (block, vocabulary) logits are the largest array (262k tokens: 256 MB in float32 at block 256)."""
    import torch

    norm = final_norm(model)
    head = model.get_output_embeddings()
    bias = getattr(norm, "bias", None)
    directions = np.asarray(directions, dtype=np.float32)
    n, vocabulary = len(directions), head.weight.shape[0]
    k = min(k, vocabulary)
    result = [np.empty((n, k), dtype=dtype) for dtype in (np.int64, np.float32, np.int64, np.float32)]
    with torch.no_grad():
        for start in range(0, n, block):
            rows = torch.as_tensor(directions[start:start + block], device=head.weight.device)
            normed = norm(rows.to(head.weight.dtype))
            if bias is not None:
                normed = normed - bias
            logits = (normed @ head.weight.T).float()
            top = torch.topk(logits, k, dim=1)
            bottom = torch.topk(-logits, k, dim=1)
            chunk = slice(start, start + len(rows))
            result[0][chunk], result[1][chunk] = top.indices.cpu().numpy(), top.values.cpu().numpy()
            result[2][chunk], result[3][chunk] = bottom.indices.cpu().numpy(), -bottom.values.cpu().numpy()
    return OutputTokens(*result)
