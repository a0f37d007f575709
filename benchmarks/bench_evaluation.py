"""Downstream-loss evaluation: one clean pass per model against full passes per (layer, condition), in one run.

Both sides give the same losses (checked here to 1e-4) for the same SAEs on the
same held-out windows of the Wikipedia sample:
- per layer (before issue 22): for every layer, a full forward with the model's
  full logits for the clean loss, another with the layer zero-ablated and one per SAE;
- per model (`downstream_losses_of_layers`): one clean pass for all layers, then
  each zero-ablated and spliced pass replays the recorded block output and
  computes only the blocks after it, the loss head chunked over counted positions.
Prints seconds of each and the ratio (goal: below 1, by about the share of the
blocks skipped). The SAEs are untrained TopK SAEs of the model's width: what an
evaluation costs does not depend on what the SAE learned.

    python benchmarks/bench_evaluation.py [--model smollm2] [--layers 9 15] [--seeds 2] [--windows 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sae_universality.activations.cache import prepare_tokenizer, tokenize_windows
from sae_universality.models.loading import decoder_layers
from sae_universality.models.sources import load_model, prepare_model
from sae_universality.saes.architectures import SaeConfig, SparseAutoencoder
from sae_universality.saes.evaluation import downstream_losses_of_layers
from sae_universality.text.corpus import build_windows

EMBEDDED = {"smollm2": "smollm2-135m-instruct", "gemma3": "gemma3-270m",
            "qwen05": "qwen2.5-coder-0.5b-instruct", "qwen15": "qwen2.5-coder-1.5b-instruct"}


@torch.no_grad()
def full_pass_loss(model, input_ids, attention_mask, block=None, replace=None) -> float:
    """The per-layer way: a whole forward with the model's full logits, block `block`'s output replaced."""
    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        new = replace(hidden).to(hidden.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = decoder_layers(model)[block].register_forward_hook(hook) if replace is not None else None
    try:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    finally:
        if handle is not None:
            handle.remove()
    targets = input_ids[:, 1:].masked_fill(~(attention_mask[:, 1:] * attention_mask[:, :-1]).bool(), -100)
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1)))


def per_layer(model, input_ids, attention_mask, saes_by_layer) -> dict:
    results = {}
    for layer, saes in saes_by_layer.items():
        clean = full_pass_loss(model, input_ids, attention_mask)
        zero = full_pass_loss(model, input_ids, attention_mask, layer, torch.zeros_like)
        results[layer] = [(clean, zero, full_pass_loss(model, input_ids, attention_mask, layer,
                                                       lambda h, s=sae: s(h.float()))) for sae in saes]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", choices=sorted(EMBEDDED))
    parser.add_argument("--layers", type=int, nargs="+", default=[9, 15])
    parser.add_argument("--seeds", type=int, default=2, help="SAEs per layer")
    parser.add_argument("--windows", type=int, default=10, help="loss windows of ~1000 characters (the default run's)")
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()

    folder = Path(tempfile.mkdtemp()) / arguments.model
    prepare_model(arguments.model, {"embedded": EMBEDDED[arguments.model], "layers": arguments.layers}, folder)
    model, tokenizer, _ = load_model(folder / "manifest.json")
    prepare_tokenizer(tokenizer)
    windows = build_windows({"source": "wikipedia-sample", "window_chars": 1000})[:arguments.windows]
    batch = tokenize_windows(tokenizer, windows)
    d_in = model.config.hidden_size
    saes_by_layer = {layer: [SparseAutoencoder(SaeConfig(d_in=d_in, d_sae=2048, k=32), seed=seed)
                             for seed in range(arguments.seeds)] for layer in arguments.layers}
    n_blocks = len(decoder_layers(model))
    print(f"{arguments.model} ({n_blocks} blocks, vocabulary {model.get_output_embeddings().weight.shape[0]:,}), "
          f"layers {arguments.layers}, {arguments.seeds} SAEs per layer, {arguments.windows} windows, "
          f"{int(batch.attention_mask.sum()):,} tokens, {torch.get_num_threads()} threads")
    times = {"per layer": [], "per model": []}
    for _ in range(arguments.repeats):  # alternating, so a change in machine load hits both sides
        start = time.perf_counter()
        old = per_layer(model, batch.input_ids, batch.attention_mask, saes_by_layer)
        times["per layer"].append(time.perf_counter() - start)
        start = time.perf_counter()
        new = downstream_losses_of_layers(model, batch.input_ids, saes_by_layer, batch.attention_mask)
        times["per model"].append(time.perf_counter() - start)
    for layer in arguments.layers:
        for (clean, zero, spliced), row in zip(old[layer], new[layer]):
            assert abs(row["ce_clean"] - clean) < 1e-4 and abs(row["ce_zero"] - zero) < 1e-4, (layer, row, clean, zero)
            assert abs(row["ce_sae"] - spliced) < 1e-4, (layer, row, spliced)
    best = {side: min(seconds) for side, seconds in times.items()}
    print("\n| method | seconds (best of %d) |\n|---|---|" % arguments.repeats)
    for side, seconds in best.items():
        print(f"| {side} | {seconds:.1f} |")
    print(f"\nratio per model / per layer: {best['per model'] / best['per layer']:.2f} (same losses to 1e-4)")


if __name__ == "__main__":
    main()
