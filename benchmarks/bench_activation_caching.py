"""Activation caching throughput against a bare truncated forward pass, in one run.

Both sides process the same windows of the Wikipedia sample with the same
model, batch size and threads:
- bare: tokenized in advance, the model's blocks cut after the deepest layer,
  a plain forward pass, nothing kept;
- cache: `cache_activations` end to end (tokenization with offsets, hooks,
  early stop, position filtering, float16 conversion, NaN checks, HDF5 writes).
Prints tokens/s of each and the overhead ratio (goal: cache <= 1.10 x bare).

    python benchmarks/bench_activation_caching.py [--windows 48] [--model resources/models/smollm2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sae_universality.activations.cache import CacheFiles, cache_activations, prepare_tokenizer, tokenize_windows
from sae_universality.models.loading import decoder_layers
from sae_universality.models.sources import load_model, prepare_model
from sae_universality.settings import ActivationSettings
from sae_universality.text.corpus import build_windows


def bare_forward(model, batches, deepest: int) -> float:
    """Seconds for a plain forward through blocks 0..deepest (the rest removed)."""
    blocks = decoder_layers(model)
    parent = model.base_model
    kept = torch.nn.ModuleList(list(blocks)[: deepest + 1])
    original = blocks
    parent.layers = kept
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        return time.perf_counter() - start
    finally:
        parent.layers = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=48, help="context windows of ~1000 characters")
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 9, 15, 21])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="resources/models/smollm2", help="a prepared model folder (made if missing)")
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()

    torch.set_num_threads(torch.get_num_threads())
    model_dir = Path(arguments.model)
    if not (model_dir / "manifest.json").is_file():
        prepare_model("smollm2", {"embedded": "smollm2-135m-instruct", "layers": arguments.layers}, model_dir)
    model, tokenizer, manifest = load_model(model_dir / "manifest.json")
    prepare_tokenizer(tokenizer)
    windows = build_windows({"source": "wikipedia-sample", "window_chars": 1000, "token_budget": None,
                             "windows_per_document": None, "order": "shuffle", "seed": 0})[: arguments.windows]
    batches = [tokenize_windows(tokenizer, windows[i:i + arguments.batch_size])
               for i in range(0, len(windows), arguments.batch_size)]
    n_tokens = int(sum(batch.attention_mask.sum() for batch in batches))
    deepest = max(arguments.layers)

    bare_times, cache_times = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(arguments.repeats):  # alternate so drift hits both sides alike
            bare_times.append(bare_forward(model, batches, deepest))
            start = time.perf_counter()
            files = CacheFiles({layer: Path(scratch) / f"r{repeat}_layer{layer}.h5" for layer in arguments.layers},
                               manifest["name"])
            cache_activations(model, tokenizer, windows, files, ActivationSettings(dtype="float16"),
                              batch_size=arguments.batch_size, progress=False)
            cache_times.append(time.perf_counter() - start)
    bare, cache = min(bare_times), min(cache_times)
    print(f"model {manifest['name']} ({manifest['architecture']}, {manifest['n_layers']} blocks, d={manifest['d_model']}), "
          f"layers {arguments.layers}, {len(windows)} windows, {n_tokens} tokens, batch {arguments.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"bare truncated forward: {bare:7.2f} s  {n_tokens / bare:8.0f} tokens/s")
    print(f"activation caching:     {cache:7.2f} s  {n_tokens / cache:8.0f} tokens/s")
    print(f"overhead ratio cache/bare: {cache / bare:.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
