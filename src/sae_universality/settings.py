"""Typed settings: the validated config as small frozen dataclasses, one per stage.

`config.check_config` validates the YAML against the schema and fills in its
defaults; the workflow passes each section to its jobs as plain data (Snakemake
reruns a job whose params change, so params stay plain dicts), and each job
turns its section into one of these objects with `from_config`. The library
called directly uses the same objects with the same defaults: a test holds every
default here equal to the schema's, and every field reachable from the config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def from_section(cls: type[T], section: Mapping[str, Any] | None) -> T:
    """An instance of the settings class `cls` from a config section (nested sections become nested settings).

    The section has passed the schema, so an unknown key is a programming error (TypeError), not a user's.
    """
    section = dict(section or {})
    fields = {item.name: item for item in dataclasses.fields(cls)}
    unknown = set(section) - set(fields)
    if unknown:
        raise TypeError(f"{cls.__name__} has no settings {sorted(unknown)}")
    values = {}
    for name, value in section.items():
        nested = _NESTED.get((cls.__name__, name))
        values[name] = from_section(nested, value) if nested is not None else _frozen(value)
    return cls(**values)


def as_settings(cls: type[T], settings) -> T:
    """`settings` itself when already a `cls`, else `cls` built from a config section (a plain mapping)."""
    return settings if isinstance(settings, cls) else from_section(cls, settings)


def _frozen(value):
    # Lists become tuples so that settings objects are hashable and cannot change under a job.
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


@dataclass(frozen=True)
class HfDatasetSettings:
    """A Hugging Face dataset read as text (corpus.source: hf-dataset)."""

    name: str | None = None
    """Hub id of the dataset, e.g. Skylion007/openwebtext."""
    revision: str | None = None
    """Branch, tag or commit; refs/convert/parquet is the hub's Parquet conversion."""
    data_files: tuple[str, ...] = ()
    """Parquet files of the repository to read, in order (none: the dataset's own loader)."""
    config: str | None = None
    """Dataset configuration name."""
    split: str = "train"
    """Split to stream."""
    text_field: str = "text"
    """Field (Parquet column) holding the document text."""


@dataclass(frozen=True)
class CorpusSettings:
    """Which text, cut how (config: corpus)."""

    source: str = "wikipedia-sample"
    """wikipedia-sample, wikipedia-leads, wikipedia, files or hf-dataset."""
    paths: tuple[str, ...] = ()
    """Text, JSONL or Parquet files (source: files)."""
    hf_dataset: HfDatasetSettings = field(default_factory=HfDatasetSettings)
    """The dataset (source: hf-dataset)."""
    n_documents: int | None = None
    """Documents read at most (None: all)."""
    window_chars: int = 1000
    """Characters per context window."""
    windows_per_document: int | None = None
    """Windows taken per document at most (None: all)."""
    token_budget: int | None = 60000
    """Approximate tokens of text in all (None: everything the source holds)."""
    order: str = "shuffle"
    """shuffle or document order of the windows."""
    seed: int = 0
    """Seed of the window shuffle."""


@dataclass(frozen=True)
class ActivationSettings:
    """How residual-stream activations are cached (config: activations)."""

    dtype: str = "float16"
    """Storage dtype of cached activations (the math is always float32)."""
    shards: int = 1
    """Forward-pass jobs per model."""


@dataclass(frozen=True)
class TrainSettings:
    """How one SAE is trained (config: saes.train, with a model's own sae.train on top)."""

    architecture: str = "topk"
    """topk, batchtopk, or relu (with an L1 penalty)."""
    expansion_factor: int = 8
    """Latents per model dimension, when d_sae is not given."""
    d_sae: int | None = None
    """Number of latents (overrides expansion_factor)."""
    k: int = 32
    """Active latents per position (topk, batchtopk)."""
    l1_coefficient: float = 5.0
    """L1 penalty weight (relu)."""
    batch_size: int = 1024
    """Positions per optimizer step."""
    epochs: int = 4
    """Passes over the training positions."""
    lr: float | None = None
    """Adam learning rate; None scales it with width (saes.default_learning_rate)."""
    warmup_steps: int = 1000
    """Linear learning-rate warmup (capped at a tenth of the steps)."""
    decay_fraction: float = 0.2
    """Final fraction of steps over which the learning rate decays linearly to 0."""
    aux_k: int = 512
    """Dead latents used by the AuxK loss per position."""
    aux_coefficient: float = 0.03125
    """Weight of the AuxK loss."""
    dead_after_tokens: int | None = None
    """A latent is dead after this many tokens without firing (None: 10M or one epoch, the smaller)."""
    checkpoint_every: int = 200
    """Steps between checkpoints; a killed job resumes from the last one."""
    log_every: int = 20
    """Steps between points of the training curve (at least 20 points per run)."""


@dataclass(frozen=True)
class SaeSettings:
    """How every (model, layer) gets its SAEs and how they are judged (config: saes)."""

    seeds: tuple[int, ...] = (0,)
    """Seeds of the SAEs trained per (model, layer); the first is compared, a second gives the ceiling."""
    held_out_every: int = 10
    """Every n-th context window is held out from training and used to measure quality."""
    loss_windows: int = 8
    """Held-out windows over which downstream loss recovered is measured (0 = skip)."""
    pre_activations: bool = False
    """Encode ReLU pre-activations before TopK instead of the sparse codes (the paper's Pythia setting)."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """Training settings."""


@dataclass(frozen=True)
class MatchSettings:
    """How features of A and B are paired by activation correlation (config: matching; METHOD.md section 5)."""

    junk_filter: bool = True
    """Drop pairs where either feature's top tokens are mostly whitespace, punctuation or special tokens."""
    junk_fraction: float = 0.5
    """A feature is junk when more than this fraction of its top tokens are junk."""
    shared_token_filter: bool = False
    """The paper's stricter rule: the two features' top tokens must share a normalized string."""
    one_to_one: str = "highest"
    """When several B features pick one A feature: highest, first (the paper's code), hungarian, sinkhorn, or none."""
    n_candidates: int | str = 5
    """hungarian and sinkhorn: the best A features of each B feature the assignment may choose from ('all': the
    whole correlation matrix, as the paper's code)."""
    sinkhorn_regularization: float = 0.05
    """sinkhorn: the entropic regularization of the transport plan (the paper's 0.05)."""
    sinkhorn_iterations: int = 80
    """sinkhorn: Sinkhorn iterations before the plan's argmax (the paper's 80)."""
    threshold: float = 0.1
    """Keep pairs whose correlation is at least this."""
    n_top_tokens: int = 10
    """Top activating positions per feature, for the filters and the examples."""
    chunk_rows: int = 16384
    """Aligned positions read per chunk of the codes files."""
    feature_block: int | None = None
    """A features per pass when the F_A x F_B correlation matrix is too large to hold (None: all at once)."""
    device: str = "auto"
    """auto (CUDA when present, else numpy), cpu (torch on the CPU), cuda, or numpy."""

    @property
    def one_to_one_rule(self) -> str | None:
        """The one-to-one rule, None for none."""
        return None if self.one_to_one in (None, "none") else self.one_to_one


@dataclass(frozen=True)
class SimilaritySettings:
    """How the geometry of matched features is compared (config: similarity; METHOD.md sections 6 and 7)."""

    metrics: tuple[str, ...] = ("heldout_svcca", "rsa", "debiased_cka", "mutual_knn", "procrustes")
    """Metrics to compute."""
    svcca_variance: float = 0.99
    """In-sample svcca keeps the fewest SVD components explaining this fraction of variance."""
    svcca_components: int | None = None
    """SVCCA components per side (None: chosen by variance, or by nested cross-validation when held out)."""
    svcca_folds: int = 5
    """Folds of held-out SVCCA."""
    knn_k: int = 10
    """Neighbours of mutual kNN."""
    n_permutations: int = 1000
    """Pairings drawn for each score's null."""
    bootstrap_draws: int = 200
    """Half-samples of each score's interval."""
    bootstrap_level: float = 0.95
    """Coverage of the interval."""
    p_adjust: str = "holm"
    """Correction of p-values across the layer pairs of a metric: holm or bh."""
    significance: float = 0.05
    """Adjusted p below which a score is significant."""
    random_subset_draws: int = 10
    """Draws of the paper's random-subset baseline."""
    min_pairs: int = 20
    """Fewest kept pairs a score is computed on."""
    seed: int = 0
    """Seed of the permutations, half-samples, folds and random subsets."""


@dataclass(frozen=True)
class ControlSettings:
    """The lexical and document controls (config: controls; matching/controls.py)."""

    enabled: bool = True
    """Run the controls for every real model pair."""
    min_bigram_count: int = 5
    """A (previous, current) token pair gets its own mean when this frequent in a half of the windows."""
    residual_streams: bool = False
    """Also compare the raw residual streams of every layer pair (similarity/residual.py)."""
    residual_positions: int = 8192
    """Aligned positions (whole windows, drawn at random) the residual streams are compared on."""
    residual_draws: int = 10
    """Half-samples of the windows behind each residual score's interval."""


@dataclass(frozen=True)
class CausalSettings:
    """The causal check of matched pairs (config: causal; causal/)."""

    enabled: bool = True
    """Run it for every real model pair."""
    windows: int = 48
    """Windows (drawn at random, the same for every model) whose prefixes the effects are measured on."""
    prefix_chars: int = 300
    """Characters of each window that count: about 60-80 tokens, one short pass per window."""
    exact_items: int = 32
    """(position, feature) items per layer whose exact effect checks the first-order estimate: half drawn at
    random among the firing ones, half the largest estimates."""
    windows_per_pass: int = 8
    """Windows per forward and backward pass (memory: the loss head's logits for all their positions)."""
    null_draws: int = 1000
    """Random pairings behind each layer pair's null (a fifth of them, at least 10, behind the context-only and
    ceiling nulls, which only set a reference level)."""
    bootstrap_draws: int = 50
    """Resamples of the sample's windows behind each layer pair's interval."""
    seed: int = 0
    """Draws the windows, the exact items, the null's pairings and the bootstrap's resamples."""


@dataclass(frozen=True)
class SemanticSettings:
    """Semantic subspaces (config: semantic; METHOD.md section 8)."""

    enabled: bool = True
    """Rematch and score features within keyword categories."""
    categories_file: str | None = None
    """YAML file {category: [keywords]} replacing the shipped categories (None: the shipped list)."""
    extra_categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Categories added to (or replacing by name) those of the file."""


# Sections that are settings of their own inside another section.
_NESTED = {("CorpusSettings", "hf_dataset"): HfDatasetSettings, ("SaeSettings", "train"): TrainSettings}

@dataclass(frozen=True)
class CardSettings:
    """Feature cards and linked maps (config: cards): which pairs get cards besides those chosen from the kept
    pairs, and how the maps place features."""

    pairs: tuple = ()
    """Pairs a user names, each {a, b, layer_a, layer_b, feature_a, feature_b}: a card of kind "named" in that
    layer pair's folder, matched or not."""
    map_layout: str = "umap"
    """How the linked map places each SAE's decoder directions (cards.layout.LAYOUTS): umap or pca."""
    map_neighbors: int = 15
    """UMAP's n_neighbors: how local the picture is."""
    map_min_dist: float = 0.1
    """UMAP's min_dist: how tightly neighbours pack."""
    map_seed: int = 0
    """UMAP's random_state."""


# Each settings class and the config section it reads.

SECTIONS = {
    "corpus": CorpusSettings,
    "corpus.hf_dataset": HfDatasetSettings,
    "activations": ActivationSettings,
    "saes": SaeSettings,
    "saes.train": TrainSettings,
    "matching": MatchSettings,
    "similarity": SimilaritySettings,
    "semantic": SemanticSettings,
    "controls": ControlSettings,
    "cards": CardSettings,
    "causal": CausalSettings,
}
