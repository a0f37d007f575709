"""Shared fixtures: real text, real tokenizers trained here, tiny random models saved to disk.

The tiny models are real transformers architectures (GPT-NeoX as Pythia,
Gemma, Gemma2, Llama) with random weights, saved as ordinary Hugging Face
model folders, so every code path that loads a model from a folder is the one
a real run uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker (make test runs two): BLAS and torch threads that wait for a core another
    # worker holds cost 4-8x on the large similarity tests. Snakemake jobs set their own from the rule's threads.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """Dequantized models go to this session's own cache, never the user's (~/.cache/sae-universality)."""
    folder = tmp_path_factory.mktemp("model_cache")
    previous = os.environ.get("SAE_UNIVERSALITY_CACHE")
    os.environ["SAE_UNIVERSALITY_CACHE"] = str(folder)  # snakemake subprocesses inherit it
    yield folder
    if previous is None:
        os.environ.pop("SAE_UNIVERSALITY_CACHE", None)
    else:
        os.environ["SAE_UNIVERSALITY_CACHE"] = previous

REPO = Path(__file__).resolve().parents[1]

TEXT = (
    "The albedo of a surface is the fraction of sunlight it reflects. Fresh snow reflects most of the light "
    "that falls on it, while the ocean absorbs nearly all of it. In January and February the northern "
    "hemisphere is covered by more snow, so its albedo rises. Scientists in France, Japan and Brazil measure "
    "albedo with satellites; teachers and students use simple light meters. Café owners in São Paulo "
    "don't care — naïve as that may be! Numbers like 3.14159 and 2,718 appear too.\n\n"
    "Anarchism is a political philosophy that is sceptical of authority. Its history spans centuries, "
    "from ancient Greece to the present day. Many people felt hope, anger and joy when they read about it."
)


def documents() -> list[str]:
    """A few real-text documents with punctuation, digits, accents and paragraph breaks."""
    paragraphs = TEXT.split("\n\n")
    return paragraphs + [" ".join(reversed(paragraphs[0].split(". ")))]


def train_tokenizer(vocab_size: int, kind: str):
    """A fast tokenizer trained on TEXT: 'bytelevel' (GPT-2/Pythia style) or 'metaspace' (SentencePiece style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    if kind == "bytelevel":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        alphabet = sorted(set(TEXT.replace(" ", "▁")))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet)
    tokenizer.train_from_iterator(documents() * 5, trainer)
    bos = tokenizer.token_to_id("<bos>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    if kind == "bytelevel":
        # ByteLevel offsets include the leading space; trim them like GPT-2's tokenizer does.
        tokenizer.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)]),
        ])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_config(architecture: str, vocab_size: int):
    from transformers import Gemma2Config, GemmaConfig, GPTNeoXConfig, LlamaConfig

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, max_position_embeddings=512)
    if architecture == "gpt_neox":
        return GPTNeoXConfig(**common)
    if architecture == "gemma":
        return GemmaConfig(**common, num_key_value_heads=2, head_dim=8)
    if architecture == "gemma2":
        return Gemma2Config(**common, num_key_value_heads=2, head_dim=8, sliding_window=16)
    if architecture == "llama":
        return LlamaConfig(**common, num_key_value_heads=2)
    raise ValueError(architecture)


def save_tiny_model(folder: Path, architecture: str, tokenizer, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(architecture, len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizers_pair():
    """Two different real tokenizers of the same text: token boundaries differ, some coincide."""
    return train_tokenizer(300, "bytelevel"), train_tokenizer(420, "metaspace")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tokenizers_pair):
    """{architecture: model folder}: GPT-NeoX, Gemma, Gemma2 share one tokenizer; Llama has another."""
    root = tmp_path_factory.mktemp("tiny_models")
    shared, other = tokenizers_pair
    folders = {}
    for seed, architecture in enumerate(("gpt_neox", "gemma", "gemma2")):
        folders[architecture] = save_tiny_model(root / architecture, architecture, shared, seed)
    folders["llama"] = save_tiny_model(root / "llama", "llama", other, 3)
    return folders


@pytest.fixture(scope="session")
def windows():
    from sae_universality.text.corpus import select_windows

    return select_windows(documents(), window_chars=180, token_budget=None, windows_per_document=None,
                          order="first", seed=0)


def write_tiny_experiment(workdir: Path, model_folders: dict, floor: bool = False) -> Path:
    """Write the tiny end-to-end experiment (config + corpus files) into `workdir`; return the config path.

    Two tiny models with different tokenizers (GPT-NeoX and Llama), real text,
    two activation shards: every rule of the workflow runs, in seconds. `floor` adds the
    floor control (a re-randomized copy of llama against neox, through every rule).
    """
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    corpus_files = []
    for index, document in enumerate(documents()):
        path = workdir / f"doc{index}.txt"
        path.write_text(document)
        corpus_files.append(str(path))
    config = {
        "models": {
            "neox": {"path": str(model_folders["gpt_neox"]), "layers": [0, 2]},
            "llama": {"path": str(model_folders["llama"]), "layers": [1], "batch_size": 2},
        },
        "pairs": [{"a": "neox", "b": "llama", "floor": floor}],
        "corpus": {"source": "files", "paths": corpus_files, "window_chars": 150, "token_budget": None, "order": "first"},
        "activations": {"dtype": "float32", "shards": 2},
        "saes": {
            "seeds": [0, 1], "held_out_every": 3, "loss_windows": 2,
            "train": {"expansion_factor": 2, "k": 4, "batch_size": 32, "epochs": 2, "checkpoint_every": 5, "aux_k": 8},
        },
        "similarity": {"n_permutations": 200, "random_subset_draws": 3, "min_pairs": 5, "bootstrap_draws": 20},
        # The raw residual streams too (off by default): the tiny streams take no time.
        "controls": {"residual_streams": True, "residual_draws": 4},
        # The maps by PCA: umap-learn's first call compiles for about 25 s per job, longer than the whole tiny run
        # takes; tests/test_cards.py tests the UMAP layout itself.
        "cards": {"map_layout": "pca"},
    }
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def tiny_causal_lm(architecture: str, n_layers: int = 2, vocab_size: int = 50, seed: int = 0):
    """An in-memory tiny random causal LM (llama, gemma3 or gpt_neox), in eval mode: for the tests of code that
    takes a model object (output tokens, causal effects)."""
    import torch
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                              LlamaForCausalLM)

    torch.manual_seed(seed)
    shape = dict(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=n_layers,
                 num_attention_heads=2, max_position_embeddings=32)
    build = {"llama": lambda: LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False, **shape)),
             "gemma3": lambda: Gemma3ForCausalLM(Gemma3TextConfig(num_key_value_heads=1, head_dim=8, **shape)),
             "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(**shape))}
    return build[architecture]().eval()


def perturbation_gradient(model, ids, layer: int, position: int):
    """d(summed next-token loss of the one row `ids`)/d(output of block `layer` at `position`), by autograd on a
    zero perturbation added there in a plain forward, the loss in float64 from the model's own logits: the
    reference the causal effects are checked against."""
    import torch

    from sae_universality.models.loading import decoder_layers

    delta = torch.zeros(model.config.hidden_size, dtype=torch.float64, requires_grad=True)

    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        shift = torch.zeros_like(hidden)
        shift[0, position] = 1.0
        hidden = hidden + shift * delta
        return ((hidden,) + tuple(output[1:])) if isinstance(output, tuple) else hidden

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        logits = model(input_ids=ids).logits[0].double()
        loss = -torch.log_softmax(logits[:-1], dim=-1)[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum()
        loss.backward()
    finally:
        handle.remove()
    return delta.grad.numpy()
