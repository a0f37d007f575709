"""The floor control: a model with every parameter tensor redrawn from its own distribution.

A `rerandomized` model entry (see models/sources.py) is a copy of another
configured model passed through `rerandomize_parameters`, token embeddings
kept: features tied to token identity survive, which the floor control measures.
"""

from __future__ import annotations

import re

# Parameters of normalization layers (RMSNorm and LayerNorm gains and biases, q/k norms; GPT-2's ln_1, ln_f).
_NORM = re.compile(r"norm|(^|\.)ln_")


def is_norm_parameter(name: str) -> bool:
    """True for the parameters of a normalization layer, by the names transformers gives them."""
    return bool(_NORM.search(name.lower()))


def rerandomize_parameters(model, seed: int, keep_norms: bool = False):
    """Redraw the parameters of a torch `nn.Module` in place, keeping the token embeddings; returns `model`.

    Every floating-point parameter tensor, in `model.named_parameters()` order, is
    replaced by independent Gaussian draws with that tensor's own mean and
    standard deviation (over all its elements, computed in float64 on the CPU;
    the standard deviation is torch's default, with Bessel's correction, as the
    paper's code has it). What is kept, bit-exactly:
    - the token embeddings, `model.get_input_embeddings().weight`: features tied
      to token identity survive, which is what the floor control measures. An
      output head tied to them (the same tensor, e.g. Gemma, SmolLM2) is kept
      with them; an untied head (e.g. Pythia's) and position embeddings are
      redrawn like any other matrix. (The paper's rerandomized_model.py keeps
      every parameter whose name contains "embed", so it also keeps those two.)
    - tensors of one element, and constant tensors (standard deviation 0, or not
      finite): a Gaussian with std 0 is the constant itself.
    - buffers (rotary frequencies, causal masks): they are not learned.
    - with `keep_norms`, the normalization layers' parameters (`is_norm_parameter`):
      the variant that keeps each layer's scale, so that a block's output is not
      rescaled by redrawn gains (the paper's code redraws them too, the default).
    Draws come from one CPU `torch.Generator` seeded with `seed`, tensor after
    tensor, in float64, then cast to the tensor's dtype and copied to its device:
    the same seed gives bit-identical weights, whether the model is on CPU or GPU.
    """
    import torch

    embedding = model.get_input_embeddings().weight
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            # named_parameters lists a tied tensor once; the storage check also catches a tie by sharing.
            if parameter is embedding or parameter.data_ptr() == embedding.data_ptr():
                continue
            if keep_norms and is_norm_parameter(name):
                continue
            if not parameter.is_floating_point() or parameter.numel() < 2:
                continue
            values = parameter.detach().to(device="cpu", dtype=torch.float64)
            mean, std = values.mean(), values.std()
            if not (torch.isfinite(std) and std > 0):
                continue
            draws = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.copy_((draws * std + mean).to(parameter.dtype))
    return model
