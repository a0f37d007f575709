"""Semantic categories (METHOD.md section 8): which features are about a topic, and their rematch.

A feature belongs to a category when its top activating token is one of the
category's keywords, read as a whole word in its top context. Within each
category the A and B features are rematched by correlation with the configured
matching rules (`MatchSettings`); `similarity.semantic` scores the kept pairs.
This module holds the keyword lists, the assignment and the rematching.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..settings import MatchSettings
from ..tokens import marked_as_text, normalize_token
from .table import match_features


@dataclass(frozen=True)
class CategorySide:
    """One side's features as the category assignment reads them."""

    top_tokens: Sequence
    """Per feature, its top activating token strings, best first."""
    contexts: Sequence | None
    """Per feature, the texts around those activations (None: no word check)."""


def _validate_categories(categories, source: str) -> dict[str, list[str]]:
    """{category: [unique lowercase single words]} or a UserError naming `source`."""
    if not isinstance(categories, Mapping):
        raise UserError(f"{source} must map category names to lists of words, got {type(categories).__name__}")
    validated = {}
    for name, words in categories.items():
        if not isinstance(name, str) or not name:
            raise UserError(f"{source}: category names must be non-empty strings, got {name!r}")
        if isinstance(words, str) or not isinstance(words, Sequence):
            raise UserError(f"{source}: category {name!r} must be a list of words, got {type(words).__name__}")
        cleaned = []
        for word in words:
            if not isinstance(word, str) or not word.strip() or len(word.split()) != 1:
                raise UserError(f"{source}: category {name!r} has {word!r}; keywords must be single words")
            cleaned.append(word.strip().lower())
        validated[name] = list(dict.fromkeys(cleaned))
    return validated


def load_categories(path: str | Path | None = None, extra: Mapping[str, Sequence[str]] | None = None
                    ) -> dict[str, list[str]]:
    """Keyword lists of the semantic categories.

    Args:
        path: a YAML file mapping category -> list of words; None reads the shipped
            `sae_universality/matching/semantic_categories.yaml`.
        extra: user categories added on top; a name already present replaces that list.
    Returns:
        {category: lowercase words}, shipped (or `path`) categories first.
    """
    import yaml

    if path is None:
        source = "shipped semantic_categories.yaml"
        text = (importlib.resources.files("sae_universality.matching") / "semantic_categories.yaml").read_text(
            encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise UserError(f"cannot read semantic categories file {path}: {error.strerror}; check the path") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{source} is not valid YAML ({str(error).splitlines()[0]}); fix its syntax") from None
    categories = _validate_categories(loaded if loaded is not None else {}, source)
    if extra:
        categories.update(_validate_categories(extra, "extra categories"))
    return categories


def _first(entry) -> str | None:
    """The entry itself when a string, else its first element (None when empty or missing)."""
    if entry is None or isinstance(entry, str):
        return entry
    return entry[0] if len(entry) else None


def assign_categories(top_tokens: Sequence, contexts: Sequence | None,
                      categories: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """Features whose top activating token is a category keyword that reads as a word in its context.

    Args:
        top_tokens: per feature, its top activating token string, or a list of its top
            tokens ordered by activation (the first is used); None/empty: no token.
        contexts: per feature, the text around that top activation (a string, or a
            list aligned with top_tokens, first used); None skips the context check.
            The normalized token must appear there as a whole word, which rejects
            subword pieces (e.g. "jan" cut from "janitor").
        categories: {category: keywords}, e.g. from `load_categories()`.
    Returns:
        {category: sorted int64 feature indices}, every category present (maybe empty).
        A keyword listed under several categories puts the feature in each.
    """
    if contexts is not None and len(contexts) != len(top_tokens):
        raise ValueError(f"got {len(contexts)} contexts for {len(top_tokens)} features; pass one per feature")
    categories = _validate_categories(categories, "categories")
    categories_of_word: dict[str, list[str]] = {}
    for name, words in categories.items():
        for word in words:
            categories_of_word.setdefault(word, []).append(name)
    members: dict[str, list[int]] = {name: [] for name in categories}
    for feature, entry in enumerate(top_tokens):
        token = _first(entry)
        if token is None:
            continue
        word = normalize_token(token)
        if word not in categories_of_word:
            continue
        if contexts is not None:
            context = marked_as_text(_first(contexts[feature]) or "").lower()
            if not re.search(rf"(?<!\w){re.escape(word)}(?!\w)", context):
                continue
        for name in categories_of_word[word]:
            members[name].append(feature)
    return {name: np.asarray(indices, dtype=np.int64) for name, indices in members.items()}


def semantic_pairs(chunks, side_a: CategorySide, side_b: CategorySide, categories: dict,
                   settings: MatchSettings) -> pd.DataFrame:
    """Within each category, rematch its A and B features by correlation with the matching `settings`.

    A feature is in a category when its top token is one of the category's
    keywords, read as a word in its top context. Returns one row per B feature
    of the category that varies and has a varying A feature of the category,
    with its best such A feature (feature indices of the whole SAEs), `kept`
    after one-to-one and the threshold. A category left with no row (no
    feature on one side, or none that fires) gets one placeholder row (feature
    -1), so it is reported with its counts; the counts include features that
    never fire.

    `chunks()` yields aligned (codes of A, codes of B) blocks of the whole SAEs.
    The rematch applies the configured one-to-one rule and threshold. The
    non-concept filters are left to the category assignment, which already asks
    each feature's top token to be a keyword read as a word: a second test on the
    same top tokens would only drop keyword features whose later top tokens are
    punctuation, which is not what a category is about.
    """
    settings = dataclasses.replace(settings, junk_filter=False, shared_token_filter=False)
    members_a = assign_categories(side_a.top_tokens, side_a.contexts, categories)
    members_b = assign_categories(side_b.top_tokens, side_b.contexts, categories)
    frames = []
    for category in categories:
        features_a, features_b = members_a[category], members_b[category]
        counts = {"category": category, "n_features_a": len(features_a), "n_features_b": len(features_b)}
        if len(features_a) == 0 or len(features_b) == 0:
            frames.append(pd.DataFrame([{**counts, "feature_a": -1, "feature_b": -1, "correlation": np.nan, "kept": False}]))
            continue

        def category_chunks(features_a=features_a, features_b=features_b):
            return ((block_a[:, features_a], block_b[:, features_b]) for block_a, block_b in chunks())

        table = match_features(category_chunks, settings=settings)
        if table.empty:
            frames.append(pd.DataFrame([{**counts, "feature_a": -1, "feature_b": -1, "correlation": np.nan, "kept": False}]))
            continue
        frames.append(pd.DataFrame({
            **counts,
            "feature_a": features_a[table["final_a"].to_numpy()],
            "feature_b": features_b[table["feature_b"].to_numpy()],
            "correlation": table["final_correlation"].to_numpy(),
            "kept": table["kept"].to_numpy(),
        }))
    columns = ["category", "n_features_a", "n_features_b", "feature_a", "feature_b", "correlation", "kept"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
