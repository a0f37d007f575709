"""The cards stage: per SAE, what each decoder direction does to the output; per layer pair, a card for each of
the best, the median, the most surprising and a seeded random sample of kept pairs, with an index page."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_directory, atomic_path, open_hdf5

N_BEST, N_SURPRISING, N_RANDOM = 3, 3, 4
"""Cards per layer pair: the best, the most surprising (highly correlated, no shared top token), a random sample;
and the median kept pair."""
N_TOP_CONTEXTS, N_OUTPUT_TOKENS = 5, 10
CONTEXT_BEFORE, CONTEXT_AFTER = 12, 3
"""Tokens shown before and after a context's position (within its window)."""


def write_output_tokens(sae_dir: str | Path, manifest_path: str | Path, out_path: str | Path,
                        k: int = N_OUTPUT_TOKENS) -> None:
    """The k tokens every latent of an SAE promotes and suppresses (`output_tokens.output_token_effects`) -> .npz."""
    from ..devices import torch_device
    from ..models.sources import load_model
    from ..similarity.stage import decoder_rows
    from .output_tokens import output_token_effects

    model, _, _ = load_model(manifest_path, device=torch_device())
    tokens = output_token_effects(model, decoder_rows(sae_dir), k=k)
    with atomic_path(out_path, suffix=".npz") as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, promoted_ids=tokens.promoted_ids, promoted_effects=tokens.promoted_effects,
                     suppressed_ids=tokens.suppressed_ids, suppressed_effects=tokens.suppressed_effects)


def choose_pairs(table: pd.DataFrame, tokens_a, tokens_b, seed: int = 0) -> list[tuple[str, int, int, float]]:
    """(kind, feature_a, feature_b, correlation) of the pairs that get cards, from a match table's kept rows."""
    from ..tokens import shares_a_token

    kept = table[table["kept"]].sort_values("final_correlation", ascending=False, kind="stable")
    rows = list(kept.itertuples())
    if not rows:
        return []
    chosen, seen = [], set()

    def add(kind, row):
        key = (int(row.final_a), int(row.feature_b))
        if key not in seen:
            seen.add(key)
            chosen.append((kind, key[0], key[1], float(row.final_correlation)))

    for row in rows[:N_BEST]:
        add("best", row)
    add("median", rows[len(rows) // 2])
    surprising = [row for row in rows if not shares_a_token(tokens_a[int(row.final_a)], tokens_b[int(row.feature_b)])]
    for row in surprising[:N_SURPRISING]:
        add("surprising", row)
    for index in np.sort(np.random.default_rng(seed).choice(len(rows), min(N_RANDOM, len(rows)), replace=False)):
        add("random", rows[int(index)])
    return chosen


@dataclass(frozen=True)
class SideFiles:
    """What one side of a layer pair's cards reads."""

    codes: Path
    cache: Path
    manifest: Path
    output_tokens: Path
    rows: np.ndarray
    """The aligned rows of this side's cache (row i pairs with the other side's row i)."""


class _Side:
    """One side's data, read once for all of a layer pair's cards."""

    def __init__(self, files: SideFiles, model: str, layer: int):
        from ..models.loading import token_decoder

        self.files, self.model, self.layer = files, model, layer
        with open_hdf5(files.cache) as cache:
            self.token_ids, self.window = cache["token_ids"][:], cache["window_index"][:]
        decode = token_decoder(files.manifest)
        self.decode = lambda token: decode([int(token)])
        with np.load(files.output_tokens) as tokens:
            self.output = {name: tokens[name] for name in tokens.files}

    def load(self, features) -> None:
        """Read the activations of `features` at every cached position, in one pass over the codes file: the
        cards' profiles (aligned rows) and contexts (any rows) all come from these columns."""
        from .activations import feature_columns

        with open_hdf5(self.files.codes) as codes:
            n_positions = int(codes.attrs["n_positions"])
        features = sorted(set(features))
        self.column_of = {feature: index for index, feature in enumerate(features)}
        self.columns = feature_columns(self.files.codes, np.arange(n_positions), features)

    def activations(self, feature: int, cache_rows) -> np.ndarray:
        return self.columns[np.asarray(cache_rows, dtype=np.int64), self.column_of[feature]]

    def contexts(self, feature: int, cache_rows) -> list:
        """Per cache row, its context: (token text, this feature's activation) pairs."""
        contexts = []
        for row in cache_rows:
            start, stop = max(0, row - CONTEXT_BEFORE), min(len(self.window), row + CONTEXT_AFTER + 1)
            span = np.arange(start, stop)
            span = span[self.window[span] == self.window[row]]
            contexts.append([(self.decode(self.token_ids[position]), float(value))
                             for position, value in zip(span, self.activations(feature, span))])
        return contexts

    def card_side(self, feature: int):
        from .activations import activation_profile
        from .page import CardSide

        values = self.activations(feature, self.files.rows)
        profile = activation_profile(values)
        top = np.argsort(-values, kind="stable")[:N_TOP_CONTEXTS]
        top = top[values[top] > 0]
        quantile_rows = [self.files.rows[sample] for sample in profile.quantile_samples]

        def listed(kind):
            ids, effects = self.output[f"{kind}_ids"][feature], self.output[f"{kind}_effects"][feature]
            return [(self.decode(token), float(effect)) for token, effect in zip(ids, effects)]

        return CardSide(self.model, self.layer, feature, profile, self.contexts(feature, self.files.rows[top]),
                        [self.contexts(feature, rows) for rows in quantile_rows], listed("promoted"),
                        listed("suppressed"))


def _check_named(a: SideFiles, b: SideFiles, named) -> None:
    """A named feature out of its SAE's range is one line."""
    from ..errors import UserError

    for index, side, files in ((0, "a", a), (1, "b", b)):
        with open_hdf5(files.codes) as codes:
            n_features = int(codes.attrs["n_features"])
        for pair in named:
            if not 0 <= int(pair[index]) < n_features:
                raise UserError(f"cards.pairs: feature_{side} {pair[index]} is out of range; {files.codes} has "
                                f"features 0..{n_features - 1}")


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, NaN where a side never varies."""
    return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")


def _formatted(correlation) -> str:
    return "undefined" if correlation is None else f"{correlation:.3f}"


def write_cards(matches_path: str | Path, a: SideFiles, b: SideFiles, out_dir: str | Path, labels: dict,
                out_page: str | Path, named=()) -> list:
    """Cards for a layer pair's chosen pairs (`choose_pairs`) and the `named` (feature_a, feature_b) pairs: one
    page each and an index, into the folder `out_dir`, and all of them on the one page `out_page` (the report's)."""
    import html

    from .page import PairCard, card_html, cards_page

    table = pd.read_csv(matches_path, sep="\t", keep_default_na=False)
    side_a = _Side(a, labels["model_a"], labels["layer_a"])
    side_b = _Side(b, labels["model_b"], labels["layer_b"])

    def top_tokens(column):
        return {int(feature): [token for token in str(text).split(" | ") if token]
                for feature, text in zip(table["final_a" if column == "a" else "feature_b"], table[f"top_tokens_{column}"])}

    tokens_a, tokens_b = top_tokens("a"), top_tokens("b")
    chosen = choose_pairs(table, tokens_a, tokens_b)
    _check_named(a, b, named)
    side_a.load([int(pair[0]) for pair in named] + [item[1] for item in chosen])
    side_b.load([int(pair[1]) for pair in named] + [item[2] for item in chosen])
    for feature_a, feature_b in named:
        chosen.append(("named", int(feature_a), int(feature_b),
                       _correlation(side_a.activations(int(feature_a), a.rows),
                                    side_b.activations(int(feature_b), b.rows))))
    rows_by_pair = {(int(row.final_a), int(row.feature_b)): row for row in table.itertuples()}
    written, cards = [], []
    with atomic_directory(out_dir) as folder:
        for kind, feature_a, feature_b, correlation in chosen:
            row = rows_by_pair.get((feature_a, feature_b))
            if row is None:  # a named pair the matching did not pair
                filters, rank = {"matched": False}, None
            else:
                filters = {"non-concept filter": bool(row.passes_non_concept),
                           "one-to-one": bool(row.passes_one_to_one), "threshold": bool(row.passes_threshold)}
                rank = 1 if int(row.feature_a) == feature_a else None
            card = PairCard(side_a.card_side(feature_a), side_b.card_side(feature_b), correlation, kind,
                            rank_among_candidates=rank, filters=filters)
            name = f"{kind}-a{feature_a}-b{feature_b}.html"
            (Path(folder) / name).write_text(card_html(card), encoding="utf-8")
            cards.append(card)
            written.append({"kind": kind, "feature_a": feature_a, "feature_b": feature_b,
                            "correlation": correlation if np.isfinite(correlation) else None, "file": name})
        title = (f"{labels['model_a']} layer {labels['layer_a']} / {labels['model_b']} layer {labels['layer_b']}: "
                 "feature cards")
        items = "".join(f'<li><a href="{html.escape(item["file"])}">{item["kind"]}: A {item["feature_a"]}, '
                        f'B {item["feature_b"]} (correlation {_formatted(item["correlation"])})</a></li>'
                        for item in written)
        (Path(folder) / "index.html").write_text(
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
            f"<body><h1>{html.escape(title)}</h1><ul>{items}</ul></body></html>\n", encoding="utf-8")
        (Path(folder) / "cards.json").write_text(json.dumps({**labels, "cards": written}, indent=1))
    with atomic_path(out_page, suffix=".html") as temporary:
        temporary.write_text(cards_page(title, cards), encoding="utf-8")
    print(f"{len(written)} cards", file=sys.stderr)
    return written
