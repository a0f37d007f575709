"""What a feature does to the model's next-token predictions: its first-order effect at every position of a sample of
text, and its exact effect on a sample of (position, feature) items to validate that estimate.

Removing feature f at position t means subtracting its decoder contribution a_f(t) d_f from the residual stream
at the output of its layer's block and running the rest of the model. Its effect is the change in the summed
next-token loss of the window prefix it is in: positive where the feature helped the model predict (removing it
raises the loss), negative where it hurt. To first order (attribution patching: Nanda 2023; Syed et al. 2023;
Marks et al. 2024's sparse feature circuits) that change is

    effect_f(t) = -a_f(t) * (d_f . dL/dh(t)),

one backward pass per batch of windows giving dL/dh at every position and layer, for every feature of every SAE
of those layers at once. The exact change needs one pass of the blocks after the layer per item; it is computed
for a sample, and the agreement of the two is reported (`agreement`).

Windows are cut to their first `prefix_chars` characters (the tokens of the full window's tokenization that end
there): the model is causal, so the cut changes no activation, only how much later text counts in the loss, and it
makes a pass short enough to run on CPU for every kept pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class PrefixBatch:
    """Window prefixes as model input, right-padded."""

    input_ids: "torch.Tensor"
    """(windows, seq) token ids, the full window's tokenization cut at the prefix."""
    attention_mask: "torch.Tensor"
    window_index: np.ndarray
    """(windows,) the corpus window of each row."""
    lengths: np.ndarray
    """(windows,) tokens in each prefix (specials included)."""


def prefix_batch(tokenizer, windows, prefix_chars: int) -> PrefixBatch:
    """The first `prefix_chars` characters of each window as model input: the full window is tokenized as the
    activation cache tokenized it, then cut after the last token ending within the prefix (a special token at
    the start stays), so every kept position is a position of the cache with the same activations."""
    import torch

    from ..activations.cache import prepare_tokenizer, tokenize_windows

    prepare_tokenizer(tokenizer)
    rows, lengths = [], []
    for window in windows:
        batch = tokenize_windows(tokenizer, [window])
        ends = batch.char_end[0] - window.char_start
        text_bearing = batch.keep[0]
        inside = np.flatnonzero(text_bearing & (ends <= prefix_chars))
        if not len(inside):
            raise UserError(f"causal.prefix_chars: {prefix_chars} characters hold no whole token of window "
                            f"{window.window_index}; raise it")
        length = int(inside[-1]) + 1
        rows.append(batch.input_ids[0, :length])
        lengths.append(length)
    width = max(lengths)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, :len(row)] = row
        attention_mask[index, :len(row)] = 1
    return PrefixBatch(input_ids, attention_mask, np.array([w.window_index for w in windows], dtype=np.int64),
                       np.array(lengths, dtype=np.int64))


def row_losses(model, last_hidden, input_ids, attention_mask):
    """(batch,) summed next-token cross-entropy of each row, differentiable (the head on the counted positions
    only; Gemma's final logit soft-capping applied as its forward does)."""
    import torch

    from ..saes.evaluation import _predicted_positions

    counted = _predicted_positions(attention_mask)
    targets = input_ids[:, 1:][counted[:, :-1]]
    logits = model.get_output_embeddings()(last_hidden[counted])
    if logits.dtype in (torch.float16, torch.bfloat16):  # the softmax in at least float32
        logits = logits.float()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    row_of = torch.nonzero(counted)[:, 0]
    return torch.zeros(len(input_ids), dtype=losses.dtype, device=losses.device).index_add(0, row_of, losses)


@dataclass
class GradientPass:
    """One forward and backward pass over a batch of prefixes."""

    hidden: dict
    """layer -> (batch, seq, d) the block's output (detached)."""
    gradient: dict
    """layer -> (batch, seq, d) d(summed loss of the row)/d(block output)."""
    losses: np.ndarray
    """(batch,) each row's summed next-token loss."""


def loss_gradients(model, input_ids, attention_mask, layers: Sequence[int]) -> GradientPass:
    """Each row's summed next-token loss and its gradient with respect to the output of each block in `layers`.

    The rows are independent (no attention across rows), so the gradient of the batch's total loss at a row's
    positions is the gradient of that row's loss. The lowest layer's output becomes a leaf that requires grad;
    the higher layers' outputs keep their grad; nothing upstream of the lowest layer is differentiated.
    """
    import torch

    from ..models.loading import decoder_layers

    blocks = decoder_layers(model)
    layers = sorted(set(int(layer) for layer in layers))
    for layer in layers:
        if not 0 <= layer < len(blocks):
            raise UserError(f"layer {layer} is out of range: the model has blocks 0..{len(blocks) - 1}")
    outputs = {}

    def hook(layer):
        def replace(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if layer == layers[0]:
                hidden = hidden.detach().requires_grad_(True)
            else:
                hidden.retain_grad()
            outputs[layer] = hidden
            return ((hidden,) + tuple(output[1:])) if isinstance(output, tuple) else hidden
        return replace

    requires = [parameter.requires_grad for parameter in model.parameters()]
    model.requires_grad_(False)
    handles = [blocks[layer].register_forward_hook(hook(layer)) for layer in layers]
    try:
        with torch.enable_grad():
            last = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            losses = row_losses(model, last.last_hidden_state, input_ids, attention_mask)
            losses.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
        for parameter, flag in zip(model.parameters(), requires):
            parameter.requires_grad_(flag)
    return GradientPass({layer: outputs[layer].detach() for layer in layers},
                        {layer: outputs[layer].grad.detach() for layer in layers},
                        losses.detach().double().cpu().numpy())


def first_order_effects(codes, gradients: np.ndarray, decoder: np.ndarray):
    """effect_f(t) = -a_f(t) (d_f . g(t)) for every nonzero code: `codes` (positions, features) scipy.sparse,
    `gradients` (positions, d) the loss gradient at each position, `decoder` (features, d) -> the same sparsity
    as `codes` (CSR), float64."""
    import scipy.sparse

    codes = scipy.sparse.csr_matrix(codes, dtype=np.float64)
    gradients, decoder = np.asarray(gradients, dtype=np.float64), np.asarray(decoder, dtype=np.float64)
    rows = np.repeat(np.arange(codes.shape[0]), np.diff(codes.indptr))
    # Only the (position, feature) entries that fire: a gather of decoder rows, not a (positions, features) product.
    projections = np.einsum("ij,ij->i", gradients[rows], decoder[codes.indices])
    return scipy.sparse.csr_matrix((-codes.data * projections, codes.indices.copy(), codes.indptr.copy()),
                                   shape=codes.shape)


def exact_effects(model, input_ids, attention_mask, layer: int, hidden, items: Sequence[tuple[int, np.ndarray]],
                  items_per_pass: int = 16) -> np.ndarray:
    """The exact effect of removing a contribution at one position, per item: each item (position, vector)
    subtracts `vector` from `hidden` (1, seq, d), the block output of `layer` for the one window `input_ids`
    (1, seq), at `position`; the blocks after `layer` run (the ones before are replayed: they add nothing) and
    the window's summed next-token loss is compared with the same replay unchanged. Returns (items,) float64."""
    import torch

    from ..models.loading import decoder_layers
    from ..saes.evaluation import _Replay

    blocks = decoder_layers(model)
    as_tuple = _block_returns_tuple(model, blocks[layer], input_ids, attention_mask)
    variants = [None, *items]
    losses = []
    with torch.no_grad():
        for start in range(0, len(variants), items_per_pass):
            group = variants[start:start + items_per_pass]
            spliced = hidden.expand(len(group), -1, -1).clone()
            for index, item in enumerate(group):
                if item is not None:
                    position, vector = item
                    spliced[index, position] -= torch.as_tensor(vector, dtype=spliced.dtype, device=spliced.device)
            ids, mask = input_ids.expand(len(group), -1), attention_mask.expand(len(group), -1)
            originals = [blocks[index] for index in range(layer + 1)]
            try:
                for index in range(layer + 1):
                    blocks[index] = _Replay(spliced, as_tuple)
                last = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                losses.append(row_losses(model, last, ids, mask).double().cpu().numpy())
            finally:
                for index, block in enumerate(originals):
                    blocks[index] = block
    losses = np.concatenate(losses)
    return losses[1:] - losses[0]


def _block_returns_tuple(model, block, input_ids, attention_mask) -> bool:
    """Whether a decoder block returns a tuple (older transformers) or a tensor, seen on one short pass."""
    import torch

    seen = {}

    def record(module, inputs, output):
        seen["tuple"] = isinstance(output, tuple)

    handle = block.register_forward_hook(record)
    try:
        with torch.no_grad():
            model.base_model(input_ids=input_ids[:, :2], attention_mask=attention_mask[:, :2], use_cache=False)
    finally:
        handle.remove()
    return seen["tuple"]


def agreement(first_order: np.ndarray, exact: np.ndarray) -> dict:
    """How well the first-order estimate predicts the exact effect over sampled items: Pearson correlation, the
    least-squares slope of exact on first-order through the origin, the share of items whose signs agree (among
    those where either is nonzero), and the median absolute error relative to the exact effects' spread."""
    first_order, exact = np.asarray(first_order, dtype=np.float64), np.asarray(exact, dtype=np.float64)
    n = len(exact)
    if n < 3 or first_order.std() == 0 or exact.std() == 0:
        return {"n_items": n, "pearson": np.nan, "slope": np.nan, "sign_agreement": np.nan,
                "relative_median_error": np.nan}
    moving = (first_order != 0) | (exact != 0)
    return {"n_items": n, "pearson": float(np.corrcoef(first_order, exact)[0, 1]),
            "slope": float(first_order @ exact / (first_order @ first_order)),
            "sign_agreement": float(np.mean(np.sign(first_order[moving]) == np.sign(exact[moving]))),
            "relative_median_error": float(np.median(np.abs(first_order - exact)) / np.std(exact))}

