"""Save SAEs in SAELens's layout; load SAEs published in four layouts.

`save_sae(sae, folder)` writes `cfg.json` + `sae_weights.safetensors` as SAELens
does (W_enc (d_in, d_sae), W_dec (d_sae, d_in), b_enc, b_dec, and threshold for
JumpReLU). `load_sae(format, path=..., repo=..., id=...)` reads:

- "saelens": a folder with cfg.json + sae_weights.safetensors (architectures
  standard = ReLU, topk, jumprelu), e.g. release gemma-2b-res-jb. In the hub
  repos of SAELENS_RELEASES, id may be SAELens's sae_id
  ("blocks.12.hook_resid_post"): it names the folder as SAELens's release
  directory does, and an SAE trained on normalized inputs gets the release's
  norm scaling factor folded into its weights, as SAE.from_pretrained does.
- "sparsify": EleutherAI sparsify, a folder per hookpoint (id "layers.N") with
  cfg.json (d_in, k, num_latents, expansion_factor, ...) + sae.safetensors
  (encoder.weight (d_sae, d_in), encoder.bias, W_dec (d_sae, d_in), b_dec).
- "gemma_scope": a folder with params.npz (W_enc, W_dec, b_enc, b_dec, threshold;
  JumpReLU, b_dec not subtracted from the input), id like
  "layer_12/width_16k/average_l0_82", or "layer_12/width_16k/canonical" for
  the folder of that layer and width whose average L0 is closest to 100 (on
  google/gemma-scope-2b-pt-res this is, for every layer at width 16k, the
  folder SAELens's release gemma-scope-2b-pt-res-canonical names).
- "dictionary_learning": a folder with ae.pt (a state dict) + config.json whose
  trainer.dict_class is AutoEncoder (ReLU), AutoEncoderTopK, BatchTopKSAE or
  JumpReluAutoEncoder.

With `repo`, files come from the Hugging Face hub (only the files needed, via
allow_patterns), or from its local cache when HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sae_universality.errors import UserError
from sae_universality.io import hub_offline, read_checked
from sae_universality.saes.architectures import ARCHITECTURES, FROM_SAELENS, SaeConfig, SparseAutoencoder, sae_from_weights

FORMATS = ("saelens", "sparsify", "gemma_scope", "dictionary_learning")
SAELENS_WEIGHTS = "sae_weights.safetensors"
CANONICAL_L0 = 100

# SAELens's release directory (sae_lens/pretrained_saes.yaml) for the releases Lan et al. used:
# hub repo -> {SAELens sae_id: (folder in the repo, activation norm scaling factor SAELens folds in, or None)}.
SAELENS_RELEASES = {
    "jbloom/Gemma-2b-Residual-Stream-SAEs": {  # release gemma-2b-res-jb
        "blocks.0.hook_resid_post": ("gemma_2b_blocks.0.hook_resid_post_16384_anthropic", None),
        "blocks.6.hook_resid_post": ("gemma_2b_blocks.6.hook_resid_post_16384_anthropic_fast_lr", None),
        "blocks.10.hook_resid_post": ("gemma_2b_blocks.10.hook_resid_post_16384", None),
        "blocks.12.hook_resid_post": ("gemma_2b_blocks.12.hook_resid_post_16384", 0.21381938399317255),
        "blocks.17.hook_resid_post": ("gemma_2b_blocks.17.hook_resid_post_16384", None),
    },
}
# Folder name -> norm scaling factor, so a local copy of a release folds it in too.
NORM_SCALING_FACTORS = {folder: factor for release in SAELENS_RELEASES.values()
                        for folder, factor in release.values() if factor is not None}


def _write_atomically(path: Path, write) -> None:
    """Call write(temporary_path), then rename the result onto path."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_sae(sae: SparseAutoencoder, folder: str | Path) -> Path:
    """Write sae to folder in SAELens's layout; returns the folder.

    An architecture SAELens has no name for is saved as the one its record says
    (`Architecture.saved_as`): a BatchTopK SAE as "jumprelu" with its inference
    threshold, as SAELens does, since at inference it is a JumpReLU with one
    shared threshold.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = sae.cfg
    saved = ARCHITECTURES[cfg.architecture]
    if saved.saved_as is not None:
        saved = ARCHITECTURES[saved.saved_as]
    tensors = {name: getattr(sae, name).detach().to("cpu", torch.float32).contiguous() for name in ("W_enc", "W_dec", "b_enc", "b_dec")}
    if saved.saves_threshold:
        tensors["threshold"] = sae.threshold.detach().to("cpu", torch.float32).contiguous()
    saelens_cfg = {
        "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input, "normalize_activations": "none",
        "reshape_activations": "none", "metadata": {"model_name": cfg.model_name, "hook_name": cfg.hook_name},
        "architecture": saved.saelens_name,
        **saved.saelens_fields(cfg),
    }
    _write_atomically(folder / SAELENS_WEIGHTS, lambda path: save_file(tensors, str(path)))
    _write_atomically(folder / "cfg.json", lambda path: path.write_text(json.dumps(saelens_cfg, indent=2) + "\n"))
    return folder


def load_sae(format: str, path: str | Path | None = None, repo: str | None = None, id: str | None = None,
             expected_d_in: int | None = None, cache_dir: str | Path | None = None,
             norm_scaling_factor: float | None = None) -> SparseAutoencoder:
    """Load a pretrained SAE as a float32 CPU `SparseAutoencoder`.

    format: one of FORMATS. path: a local folder; id, when given, is a subfolder
    of it. repo: a Hugging Face repo id to fetch from instead (id = subfolder,
    e.g. "layers.3" for sparsify, or a SAELens sae_id of SAELENS_RELEASES).
    expected_d_in: the model width the SAE must read. norm_scaling_factor: for a
    SAELens SAE trained on inputs scaled by this constant (normalize_activations
    "expected_average_only_in"), folded into the weights so the SAE reads raw
    activations; default: the factor SAELens's release directory gives its folder.
    """
    if format not in FORMATS:
        raise UserError(f"unknown SAE format {format!r}; use one of {', '.join(FORMATS)}")
    if (path is None) == (repo is None):
        raise UserError("give exactly one of path (a local folder) or repo (a Hugging Face repo id) to load an SAE")
    if format == "saelens" and id is not None:
        id = saelens_release_folder(id, repo=repo, path=path)
    if format == "gemma_scope" and id is not None and id.endswith("/canonical"):
        id = pick_canonical_gemma_scope(id, path=path, repo=repo, cache_dir=cache_dir)
    needed = {"saelens": ["cfg.json", SAELENS_WEIGHTS], "sparsify": ["cfg.json", "sae.safetensors"],
              "gemma_scope": ["params.npz"], "dictionary_learning": ["ae.pt", "config.json"]}[format]
    folder = _local_folder(path, id) if path is not None else _hub_folder(repo, id, needed, cache_dir)
    missing = [name for name in needed if not (folder / name).exists()]
    if format == "dictionary_learning" and missing == ["config.json"]:
        missing = []  # the state dict alone tells the architecture
    if missing:
        raise UserError(f"{folder} has no {', '.join(missing)}; is it a {format} SAE folder?")
    if format == "saelens":
        sae = _load_saelens(folder, norm_scaling_factor or NORM_SCALING_FACTORS.get(folder.name))
    else:
        sae = {"sparsify": _load_sparsify, "gemma_scope": _load_gemma_scope,
               "dictionary_learning": _load_dictionary_learning}[format](folder)
    if expected_d_in is not None and sae.cfg.d_in != expected_d_in:
        raise UserError(f"the SAE in {folder} reads d_in={sae.cfg.d_in} but the model's hidden size is {expected_d_in}; pick the SAE trained for this model and layer")
    return sae


def _local_folder(path: str | Path, subfolder: str | None) -> Path:
    folder = Path(path) / subfolder if subfolder else Path(path)
    if not folder.is_dir():
        raise UserError(f"SAE folder {folder} does not exist; check the path and id")
    return folder


def _hub_folder(repo: str, subfolder: str | None, needed: list[str], cache_dir) -> Path:
    """Download (or find in the cache) the needed files of repo/subfolder; returns that folder."""
    from huggingface_hub import snapshot_download

    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    patterns = [prefix + name for name in needed]
    where = f"{repo}/{prefix}{{{','.join(needed)}}}"
    try:
        root = snapshot_download(repo, allow_patterns=patterns, cache_dir=cache_dir, local_files_only=hub_offline())
    except Exception as error:  # huggingface_hub raises many types for "not cached and not reachable"
        raise UserError(f"cannot get {where} from the Hugging Face hub ({type(error).__name__}); run once with network access or give a local path") from None
    folder = Path(root) / prefix
    if not (folder / needed[0]).exists():
        raise UserError(f"{where} is not in the Hugging Face cache or repo; run once with network access or give a local path")
    return folder


def saelens_release_folder(sae_id: str, repo: str | None = None, path: str | Path | None = None) -> str:
    """The folder holding SAELens sae_id in repo's release (SAELENS_RELEASES); any other id is a folder already.

    With a local path, a sae_id that is not a folder there is looked up in every
    release, and its folder used when the copy holds it.
    """
    if repo is not None:
        return SAELENS_RELEASES.get(repo, {}).get(sae_id, (sae_id,))[0]
    if (Path(path) / sae_id).is_dir():
        return sae_id
    for release in SAELENS_RELEASES.values():
        folder = release.get(sae_id, (None,))[0]
        if folder is not None and (Path(path) / folder).is_dir():
            return folder
    return sae_id


def pick_canonical_gemma_scope(id: str, path=None, repo=None, cache_dir=None) -> str:
    """Turn "layer_L/width_W/canonical" into the average_l0_N folder with N closest to 100 (ties: smaller N).

    The candidates are the folders present under path, or listed by the hub (in
    the local cache when offline).
    """
    base = id[: -len("/canonical")]
    if path is not None:
        candidates = [p.name for p in (Path(path) / base).glob("average_l0_*") if p.is_dir()]
    else:
        candidates = _hub_subfolders(repo, base, cache_dir)
    l0s = sorted(int(match.group(1)) for name in candidates if (match := re.fullmatch(r"average_l0_(\d+)", name)))
    if not l0s:
        raise UserError(f"no average_l0_* folders under {base} in {path or repo}; check layer and width, or give the full id")
    best = min(l0s, key=lambda l0: (abs(l0 - CANONICAL_L0), l0))
    return f"{base}/average_l0_{best}"


def _hub_subfolders(repo: str, base: str, cache_dir) -> list[str]:
    from huggingface_hub import list_repo_files, snapshot_download

    try:
        if hub_offline():
            root = Path(snapshot_download(repo, allow_patterns=[f"{base}/*/params.npz"], cache_dir=cache_dir, local_files_only=True))
            return [p.name for p in (root / base).glob("average_l0_*")]
        files = list_repo_files(repo)
    except Exception as error:
        raise UserError(f"cannot list {repo}/{base} on the Hugging Face hub ({type(error).__name__}); run once with network access or give a local path") from None
    return sorted({f.split("/")[-2] for f in files if f.startswith(base + "/") and f.endswith("/params.npz")})


def _load_saelens(folder: Path, norm_scaling_factor: float | None = None) -> SparseAutoencoder:
    raw = read_checked(folder / "cfg.json", lambda path: json.loads(path.read_text()))
    architecture = raw.get("architecture", "standard")
    activation = raw.get("activation_fn_str", raw.get("activation_fn", "relu"))
    if architecture == "standard" and activation == "topk":
        architecture = "topk"  # older SAELens configs name TopK through the activation function
    if architecture not in FROM_SAELENS:
        raise UserError(f"SAELens architecture {architecture!r} in {folder} is not supported; use {', '.join(FROM_SAELENS)} SAEs")
    normalization = raw.get("normalize_activations")
    # Older SAELens wrote a bool: true meant scaling inputs by one constant ("expected_average_only_in").
    normalization = {True: "expected_average_only_in", False: "none", None: "none"}.get(normalization, normalization)
    if normalization not in ("none", "expected_average_only_in") or (normalization != "none" and norm_scaling_factor is None):
        raise UserError(f"{folder} uses normalize_activations={raw['normalize_activations']!r}; only SAEs that read raw "
                        "activations ('none'), or constant-scaled inputs with a known norm scaling factor, are supported")
    if raw.get("rescale_acts_by_decoder_norm"):
        raise UserError(f"{folder} sets rescale_acts_by_decoder_norm; fold the decoder norms into the weights first")
    k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k") or 32
    metadata = raw.get("metadata") or {}
    tensors = read_checked(folder / SAELENS_WEIGHTS, lambda path: load_file(str(path)))
    d_in, d_sae = tensors["W_enc"].shape
    cfg = SaeConfig(d_in=int(raw.get("d_in", d_in)), d_sae=int(raw.get("d_sae", d_sae)),
                    architecture=FROM_SAELENS[architecture], k=int(k),
                    apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
                    l1_coefficient=float(raw.get("l1_coefficient", SaeConfig.l1_coefficient)),
                    model_name=metadata.get("model_name", raw.get("model_name", "")) or "",
                    hook_name=metadata.get("hook_name", raw.get("hook_name", raw.get("hook_point", ""))) or "")
    W_enc, b_dec = tensors["W_enc"].float(), tensors["b_dec"].float()
    W_dec = tensors["W_dec"].float()
    if "scaling_factor" in tensors:
        W_dec = tensors["scaling_factor"].float()[:, None] * W_dec  # finetuning scale multiplies codes before decoding
    if normalization == "expected_average_only_in":
        # It encodes x * s and reconstructs x * s: scaling W_enc by s and W_dec, b_dec by 1/s reads and returns raw x.
        scale = float(norm_scaling_factor)
        W_enc, W_dec, b_dec = W_enc * scale, W_dec / scale, b_dec / scale
    return sae_from_weights(cfg, W_enc, tensors["b_enc"], W_dec, b_dec, tensors.get("threshold"))


def _load_sparsify(folder: Path) -> SparseAutoencoder:
    raw = json.loads((folder / "cfg.json").read_text())
    if raw.get("transcode") or raw.get("skip_connection"):
        raise UserError(f"{folder} is a transcoder or has a skip connection; only plain sparsify SAEs are supported")
    if raw.get("activation", "topk") != "topk":
        raise UserError(f"{folder} uses activation {raw['activation']!r}; only topk sparsify SAEs are supported")
    tensors = load_file(str(folder / "sae.safetensors"))
    d_sae, d_in = tensors["encoder.weight"].shape
    cfg = SaeConfig(d_in=int(raw.get("d_in", d_in)), d_sae=d_sae, architecture="topk", k=int(raw["k"]))
    return sae_from_weights(cfg, tensors["encoder.weight"].float().T, tensors["encoder.bias"], tensors["W_dec"], tensors["b_dec"])


def _load_gemma_scope(folder: Path) -> SparseAutoencoder:
    with np.load(folder / "params.npz") as params:
        arrays = {name: params[name] for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}
    d_in, d_sae = arrays["W_enc"].shape
    cfg = SaeConfig(d_in=d_in, d_sae=d_sae, architecture="jumprelu", apply_b_dec_to_input=False)
    return sae_from_weights(cfg, **{name: torch.from_numpy(np.asarray(a, dtype=np.float32)) for name, a in arrays.items()})


def _load_dictionary_learning(folder: Path) -> SparseAutoencoder:
    state = torch.load(folder / "ae.pt", map_location="cpu", weights_only=True)
    config_path = folder / "config.json"
    trainer = json.loads(config_path.read_text()).get("trainer", {}) if config_path.exists() else {}
    dict_class = trainer.get("dict_class") or ("JumpReluAutoEncoder" if "W_enc" in state else "AutoEncoderTopK" if "k" in state else "AutoEncoder")
    state = {name: value.float() if value.is_floating_point() else value for name, value in state.items()}
    if dict_class == "AutoEncoder":
        d_sae, d_in = state["encoder.weight"].shape
        cfg = SaeConfig(d_in=d_in, d_sae=d_sae, architecture="relu")
        return sae_from_weights(cfg, state["encoder.weight"].T, state["encoder.bias"], state["decoder.weight"].T, state["bias"])
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        d_sae, d_in = state["encoder.weight"].shape
        k = int(state["k"]) if "k" in state else int(trainer["k"])
        threshold = float(state.get("threshold", torch.tensor(-1.0)))
        if dict_class == "BatchTopKSAE" and threshold >= 0:
            # inference: ReLU'd pre-activations above one shared threshold
            cfg = SaeConfig(d_in=d_in, d_sae=d_sae, architecture="jumprelu", k=k)
            return sae_from_weights(cfg, state["encoder.weight"].T, state["encoder.bias"], state["decoder.weight"].T,
                                    state["b_dec"], torch.full((d_sae,), threshold))
        cfg = SaeConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=k)
        return sae_from_weights(cfg, state["encoder.weight"].T, state["encoder.bias"], state["decoder.weight"].T, state["b_dec"])
    if dict_class == "JumpReluAutoEncoder":
        d_in, d_sae = state["W_enc"].shape
        # its codes are scaled by decoder row norms; moving the norms into the encoder gives the same codes and output
        norms = state["W_dec"].norm(dim=1)
        cfg = SaeConfig(d_in=d_in, d_sae=d_sae, architecture="jumprelu", apply_b_dec_to_input=False)
        return sae_from_weights(cfg, state["W_enc"] * norms, state["b_enc"] * norms, state["W_dec"] / norms[:, None],
                                state["b_dec"], state["threshold"] * norms)
    raise UserError(f"dictionary_learning class {dict_class!r} in {folder} is not supported; use AutoEncoder, AutoEncoderTopK, BatchTopKSAE or JumpReluAutoEncoder")
