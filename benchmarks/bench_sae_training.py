"""Training throughput of a TopK SAE against this machine's float32 matmul rate.

Counts 6 * d_in * d_sae FLOPs per token (forward + backward of a dense encoder
and decoder) and compares the achieved rate with torch.mm of the encoder's shape
measured in the same run; the goal is a ratio >= 0.5. Also times a dense
reference step (codes scattered into an (n, d_sae) matrix, autograd throughout)
to show what the sparse decoder and sparse gradients buy.

    python benchmarks/bench_sae_training.py            # d_in=768, d_sae=16384, k=32, batch 4096
    python benchmarks/bench_sae_training.py --quick    # d_in=256, d_sae=4096, batch 1024
"""

import argparse
import time
from dataclasses import replace

import torch

from sae_universality.saes.architectures import SaeConfig, SparseAutoencoder
from sae_universality.saes.training import ONE_PASS, SaeTrainer, TrainConfig


def seconds_per_call(function, repeats: int) -> float:
    function()  # warm up
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def dense_reference_step(sae: SparseAutoencoder, optimizer, x: torch.Tensor, k: int) -> None:
    """The straightforward TopK step: dense codes, dense decoder, autograd everywhere."""
    pre = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    values, indices = pre.topk(k, dim=1, sorted=False)
    codes = torch.zeros_like(pre).scatter(1, indices, values)
    residual = x - (codes @ sae.W_dec + sae.b_dec)
    loss = residual.pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (d_in=256, d_sae=4096, batch 1024)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps")
    parser.add_argument("--aux", action="store_true", help="also time steps with every latent dead (AuxK at its most expensive)")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense reference step")
    args = parser.parse_args()
    d_in, d_sae, batch, k = (256, 4096, 1024, 32) if args.quick else (768, 16384, 4096, 32)
    print(f"d_in={d_in} d_sae={d_sae} k={k} batch={batch} threads={torch.get_num_threads()}")

    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(batch, d_in, generator=generator) * 4 + 1 for _ in range(2)]
    encoder_input, encoder_weight = batches[0], torch.randn(d_in, d_sae, generator=generator)
    matmul_seconds = seconds_per_call(lambda: torch.mm(encoder_input, encoder_weight), repeats=5)
    matmul_rate = 2 * batch * d_in * d_sae / matmul_seconds
    print(f"float32 matmul ({batch}x{d_in} @ {d_in}x{d_sae}): {matmul_seconds * 1e3:.0f} ms, {matmul_rate / 1e9:.1f} GFLOP/s")

    flops_per_token = 6 * d_in * d_sae
    cfg = TrainConfig(n_steps=10_000, device="cpu")
    trainer = SaeTrainer(SaeConfig(d_in=d_in, d_sae=d_sae, k=k), cfg)
    trainer.initialize(batches[:1])
    step_seconds = seconds_per_call(lambda: trainer.step(batches[trainer.step_index % 2]), repeats=args.steps)
    tokens_per_second = batch / step_seconds
    achieved = tokens_per_second * flops_per_token
    print(f"sparse TopK step: {step_seconds:.2f} s, {tokens_per_second:,.0f} tokens/s, "
          f"{achieved / 1e9:.1f} GFLOP/s (6*d_in*d_sae per token), ratio to matmul {achieved / matmul_rate:.2f} (goal >= 0.5)")

    if args.aux:
        every_latent_dead = replace(ONE_PASS, dead_after_tokens=0)
        aux_trainer = SaeTrainer(SaeConfig(d_in=d_in, d_sae=d_sae, k=k), TrainConfig(n_steps=10_000, settings=every_latent_dead, device="cpu"))
        aux_trainer.initialize(batches[:1])
        aux_seconds = seconds_per_call(lambda: aux_trainer.step(batches[0]), repeats=max(1, args.steps // 2))
        aux_rate = batch / aux_seconds * flops_per_token
        print(f"  with every latent dead (AuxK, aux_k=512): {aux_seconds:.2f} s/step, ratio to matmul {aux_rate / matmul_rate:.2f}")

    if not args.no_dense:
        sae = SparseAutoencoder(SaeConfig(d_in=d_in, d_sae=d_sae, k=k))
        optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4)
        dense_seconds = seconds_per_call(lambda: dense_reference_step(sae, optimizer, batches[0], k), repeats=2)
        dense_rate = batch / dense_seconds * flops_per_token
        print(f"dense reference step: {dense_seconds:.2f} s, {batch / dense_seconds:,.0f} tokens/s, ratio to matmul "
              f"{dense_rate / matmul_rate:.2f}; sparse step is {dense_seconds / step_seconds:.1f}x faster")


if __name__ == "__main__":
    main()
