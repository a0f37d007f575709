"""Where tensors go: one rule for every stage.

"auto" (or None) means CUDA when present, else the CPU. Kernels that also have a
numpy implementation (feature matching, similarity nulls) use numpy on the CPU,
where it is faster than torch for their sparse and small dense work; they ask
`kernel_device`, which answers None for numpy.
"""

from __future__ import annotations

import os
from pathlib import Path


def cuda_present() -> bool:
    """Whether a CUDA device is usable. Imports torch only where an NVIDIA driver is installed:
    its import alone costs a CPU-only scoring job seconds."""
    if os.name != "nt" and not Path("/proc/driver/nvidia/version").exists():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def torch_device(name: str | None = "auto"):
    """The torch device a setting names: "auto" or None picks CUDA when present, else the CPU."""
    import torch

    if _is_auto(name):
        return torch.device("cuda" if cuda_present() else "cpu")
    return torch.device(name)


def kernel_device(name: str | None = "auto"):
    """For kernels with a numpy path: None (numpy) for "numpy", and for "auto"/None without CUDA;
    otherwise the torch device named ("cpu" runs the torch kernels on the CPU)."""
    if isinstance(name, str) and name == "numpy":
        return None
    if _is_auto(name):
        return torch_device("cuda") if cuda_present() else None
    return torch_device(name)


def _is_auto(name) -> bool:
    return name is None or (isinstance(name, str) and name == "auto")
