"""A stand-in Hugging Face hub: the paper's models and SAE releases under their real ids, tiny and random.

`build_hub_cache(cache)` writes a real huggingface_hub cache layout
(`models--ORG--NAME/refs/main` and `snapshots/<commit>/...`): with
HF_HUB_OFFLINE=1 and HF_HUB_CACHE=cache, every loader of the workflow finds
these files where it would find the downloaded originals.

- Models: GPT-NeoX as EleutherAI/pythia-70m and -160m (6 and 12 blocks),
  Gemma as google/gemma-2b (18 blocks), Gemma2 as google/gemma-2-2b (26 blocks),
  with tiny widths, the real config fields that shape the computation, and
  tokenizers trained in the test (one per family, shared as in the real pairs).
- SAE releases in their own layouts and folder names: EleutherAI sparsify
  (`layers.N/{cfg.json, sae.safetensors}`), SAELens gemma-2b-res-jb (old
  SAELens cfg.json; layer 12 trained on norm-scaled inputs), Gemma Scope
  (`layer_L/width_16k/average_l0_N/params.npz`, with the L0 folders of the real repo).
- `write_dataset_repo(cache, ...)`: a dataset repository as the hub cache holds
  it after `hf_hub_download` (`datasets--ORG--NAME/refs/<revision>`, snapshot
  files linked to `blobs/`), with real Parquet files: the real `datasets` library
  reads a preset's text from it offline, as it would read OpenWebText's Parquet
  conversion on a compute node.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np

COMMIT = "5eedc0ffee5eedc0ffee5eedc0ffee5eedc0ffee"

# Real id -> (architecture, blocks, width, tokenizer family); widths are tiny, block counts real.
STANDIN_MODELS = {
    "EleutherAI/pythia-70m": ("gpt_neox", 6, 32, "pythia"),
    "EleutherAI/pythia-160m": ("gpt_neox", 12, 64, "pythia"),
    "google/gemma-2b": ("gemma", 18, 32, "gemma"),
    "google/gemma-2-2b": ("gemma2", 26, 48, "gemma"),
}

D_SAE = 64  # latents of every stand-in SAE
SPARSIFY_K = 8

# Average L0 folders of google/gemma-scope-2b-pt-res at width_16k (SAELens release gemma-scope-2b-pt-res).
GEMMA_SCOPE_L0S = {
    2: (13, 24, 53, 141, 142, 304),
    6: (19, 36, 70, 144, 301),
    10: (21, 39, 77, 166, 395),
    14: (23, 43, 83, 84, 173, 388),
    18: (23, 40, 74, 138, 280),
    22: (21, 38, 72, 147, 349),
}
# The folders SAELens's canonical release names for those layers.
GEMMA_SCOPE_CANONICAL = {2: 141, 6: 70, 10: 77, 14: 84, 18: 74, 22: 72}

# Folders of jbloom/Gemma-2b-Residual-Stream-SAEs by layer, and the one trained on norm-scaled inputs.
GEMMA_RES_JB_FOLDERS = {
    0: "gemma_2b_blocks.0.hook_resid_post_16384_anthropic",
    6: "gemma_2b_blocks.6.hook_resid_post_16384_anthropic_fast_lr",
    10: "gemma_2b_blocks.10.hook_resid_post_16384",
    12: "gemma_2b_blocks.12.hook_resid_post_16384",
    17: "gemma_2b_blocks.17.hook_resid_post_16384",
}
GEMMA_RES_JB_NORMALIZED = {12: 0.21381938399317255}


def snapshot_folder(cache: Path, repo: str) -> Path:
    """The snapshot folder of repo in a hub cache, with refs/main pointing at it (created if missing)."""
    repo_folder = Path(cache) / f"models--{repo.replace('/', '--')}"
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / "main").write_text(COMMIT)
    snapshot = repo_folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def model_config(architecture: str, n_layers: int, width: int, vocab_size: int):
    """A transformers config of the real model's shape (block count, attention layout), scaled to `width`."""
    from transformers import Gemma2Config, GemmaConfig, GPTNeoXConfig

    common = dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=n_layers,
                  num_attention_heads=4, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if architecture == "gpt_neox":  # Pythia: parallel residual, rotary on a quarter of each head, untied embeddings
        return GPTNeoXConfig(**common, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
                             max_position_embeddings=2048, hidden_act="gelu")
    if architecture == "gemma":  # Gemma 1 2B: multi-query attention
        return GemmaConfig(**common, num_key_value_heads=1, head_dim=width // 4, max_position_embeddings=8192,
                           hidden_activation="gelu_pytorch_tanh")
    if architecture == "gemma2":  # Gemma 2 2B: grouped-query attention, sliding window, logit soft-capping
        return Gemma2Config(**common, num_key_value_heads=2, head_dim=width // 4, max_position_embeddings=8192,
                            sliding_window=4096, query_pre_attn_scalar=width // 4,
                            attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    raise ValueError(architecture)


def _rng(*names) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, names)).encode()))


def random_sae_weights(d_in: int, *names, threshold: bool = False) -> dict[str, np.ndarray]:
    """Float32 W_enc (d_in, D_SAE), b_enc, W_dec (D_SAE, d_in) with unit rows, b_dec; seeded by `names`."""
    rng = _rng(*names)
    W_dec = rng.normal(size=(D_SAE, d_in))
    weights = {
        "W_enc": rng.normal(size=(d_in, D_SAE)) / np.sqrt(d_in),
        "b_enc": rng.normal(scale=0.1, size=D_SAE),
        "W_dec": W_dec / np.linalg.norm(W_dec, axis=1, keepdims=True),
        "b_dec": rng.normal(scale=0.1, size=d_in),
    }
    if threshold:
        weights["threshold"] = rng.uniform(0.05, 0.3, size=D_SAE)
    return {name: value.astype(np.float32) for name, value in weights.items()}


def write_sparsify_release(snapshot: Path, d_in: int, n_layers: int, repo: str) -> dict:
    """EleutherAI sparsify: a folder per hookpoint layers.N with cfg.json and sae.safetensors."""
    from safetensors.numpy import save_file

    written = {}
    for layer in range(n_layers):
        weights = random_sae_weights(d_in, repo, layer)
        folder = snapshot / f"layers.{layer}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cfg.json").write_text(json.dumps({
            "expansion_factor": D_SAE // d_in, "normalize_decoder": True, "num_latents": D_SAE, "k": SPARSIFY_K,
            "multi_topk": False, "skip_connection": False, "d_in": d_in}))
        save_file({"encoder.weight": np.ascontiguousarray(weights["W_enc"].T), "encoder.bias": weights["b_enc"],
                   "W_dec": weights["W_dec"], "b_dec": weights["b_dec"]}, str(folder / "sae.safetensors"))
        written[layer] = weights
    return written


def write_gemma_res_jb_release(snapshot: Path, d_in: int, repo: str) -> dict:
    """SAELens (2024 layout) gemma-2b-res-jb: cfg.json with hook_point etc., sae_weights and sparsity safetensors."""
    from safetensors.numpy import save_file

    written = {}
    for layer, folder_name in GEMMA_RES_JB_FOLDERS.items():
        weights = random_sae_weights(d_in, repo, layer)
        folder = snapshot / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cfg.json").write_text(json.dumps({
            "model_name": "gemma-2b", "hook_point": f"blocks.{layer}.hook_resid_post", "hook_point_layer": layer,
            "d_in": d_in, "d_sae": D_SAE, "expansion_factor": D_SAE // d_in, "apply_b_dec_to_input": True,
            "normalize_activations": layer in GEMMA_RES_JB_NORMALIZED, "dtype": "torch.float32",
            "dataset_path": "HuggingFaceFW/fineweb", "context_size": 1024, "sae_lens_version": "2.1.3"}))
        save_file({**weights, "scaling_factor": np.ones(D_SAE, dtype=np.float32)},
                  str(folder / "sae_weights.safetensors"))
        save_file({"sparsity": np.full(D_SAE, -3.0, dtype=np.float32)}, str(folder / "sparsity.safetensors"))
        written[layer] = weights
    return written


def write_gemma_scope_release(snapshot: Path, d_in: int, repo: str) -> dict:
    """Gemma Scope: layer_L/width_16k/average_l0_N/params.npz (JumpReLU), every L0 folder of each stand-in layer."""
    written = {}
    for layer, l0s in GEMMA_SCOPE_L0S.items():
        for l0 in l0s:
            weights = random_sae_weights(d_in, repo, layer, l0, threshold=True)
            folder = snapshot / f"layer_{layer}" / "width_16k" / f"average_l0_{l0}"
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / "params.npz", **weights)
            written[(layer, l0)] = weights
    return written


def build_hub_cache(cache: Path) -> dict:
    """Write every stand-in model and SAE release into `cache`; return what was written.

    Returns {"models": {repo: (architecture, n_layers, width)}, "saes": {repo: weights by layer
    (Gemma Scope: by (layer, l0))}}; weights are float32 numpy arrays in SAELens orientation.
    """
    from conftest import train_tokenizer
    import torch
    from transformers import AutoModelForCausalLM

    tokenizers = {"pythia": train_tokenizer(300, "bytelevel"), "gemma": train_tokenizer(420, "metaspace")}
    models = {}
    for index, (repo, (architecture, n_layers, width, family)) in enumerate(STANDIN_MODELS.items()):
        tokenizer = tokenizers[family]
        torch.manual_seed(index)
        model = AutoModelForCausalLM.from_config(model_config(architecture, n_layers, width, len(tokenizer)))
        snapshot = snapshot_folder(cache, repo)
        model.save_pretrained(snapshot)
        tokenizer.save_pretrained(snapshot)
        models[repo] = (architecture, n_layers, width)
    width = {repo: spec[2] for repo, spec in STANDIN_MODELS.items()}
    saes = {
        "EleutherAI/sae-pythia-70m-32k": write_sparsify_release(
            snapshot_folder(cache, "EleutherAI/sae-pythia-70m-32k"), width["EleutherAI/pythia-70m"], 6,
            "EleutherAI/sae-pythia-70m-32k"),
        "EleutherAI/sae-pythia-160m-32k": write_sparsify_release(
            snapshot_folder(cache, "EleutherAI/sae-pythia-160m-32k"), width["EleutherAI/pythia-160m"], 12,
            "EleutherAI/sae-pythia-160m-32k"),
        "jbloom/Gemma-2b-Residual-Stream-SAEs": write_gemma_res_jb_release(
            snapshot_folder(cache, "jbloom/Gemma-2b-Residual-Stream-SAEs"), width["google/gemma-2b"],
            "jbloom/Gemma-2b-Residual-Stream-SAEs"),
        "google/gemma-scope-2b-pt-res": write_gemma_scope_release(
            snapshot_folder(cache, "google/gemma-scope-2b-pt-res"), width["google/gemma-2-2b"],
            "google/gemma-scope-2b-pt-res"),
    }
    return {"models": models, "saes": saes}


def standin_documents(n_documents: int, min_chars: int = 1400) -> list[str]:
    """`n_documents` different real-text documents of at least `min_chars` characters (sentences of conftest.TEXT, reordered)."""
    from conftest import TEXT

    sentences = [s.strip() for s in TEXT.replace("\n\n", " ").split(". ") if s.strip()]
    documents = []
    for index in range(n_documents):
        order = _rng("document", index).permutation(len(sentences))
        text = ""
        while len(text) < min_chars:
            text += ". ".join(sentences[i] for i in order) + ". "
            order = np.roll(order, 1)
        documents.append(f"Document {index}. " + text.strip())
    return documents


# The revision the presets read OpenWebText at (the hub's Parquet conversion) and the file they name.
OPENWEBTEXT = "Skylion007/openwebtext"
PARQUET_REVISION = "refs/convert/parquet"
PARQUET_FILE = "plain_text/partial-train/0000.parquet"
PARQUET_COMMIT = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    # Small row groups: a streaming reader that stops early reads only the first of them.
    pq.write_table(pa.table(columns), path, row_group_size=64)
    return path


def write_dataset_repo(cache: Path, repo: str, files: dict[str, dict[str, list]], revision: str = PARQUET_REVISION,
                       commit: str = PARQUET_COMMIT) -> Path:
    """A dataset repository in the hub cache layout `hf_hub_download` leaves: the ref file of `revision`
    (a branch name with slashes is a nested path), and each file under `snapshots/<commit>/` as a link to
    its blob. `files` maps a repository path to Parquet columns, or to a str for a text file. Returns the
    snapshot folder."""
    import hashlib

    repo_folder = Path(cache) / f"datasets--{repo.replace('/', '--')}"
    ref = repo_folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    snapshot = repo_folder / "snapshots" / commit
    for name, content in files.items():
        scratch = repo_folder / "scratch" / name
        if isinstance(content, str):
            scratch.parent.mkdir(parents=True, exist_ok=True)
            scratch.write_text(content)
        else:
            write_parquet(scratch, content)
        blob = repo_folder / "blobs" / hashlib.sha256(scratch.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        scratch.replace(blob)
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(Path(*[".."] * (len(Path(name).parts) + 1), "blobs", blob.name))
    shutil.rmtree(repo_folder / "scratch")
    return snapshot
