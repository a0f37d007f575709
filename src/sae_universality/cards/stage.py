"""The cards stage: per SAE, what each decoder direction does to the output; per layer pair, a card for each of
the best, the median, the most surprising and a seeded random sample of kept pairs, with an index page."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
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
N_BOTH, N_ONE_ONLY = 4, 3
"""Aligned positions a card shows both features on: where both fire most, and where only one of them fires."""
N_MAP_TOKENS = 5
"""Tokens the map's hover shows per feature (fires on, promotes)."""
REPORT_PAGE_BYTES = 1_500_000
"""The Snakemake report shows an HTML result in an iframe whose source is a base64 data URL, and Chromium loads
no URL longer than 2 MB: a page above this size (2 MB as base64) opens from disk but stays blank in the report."""


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
    layout: Path | None = None
    """The map layout of its SAE's features (`cards.layout`); None: no linked map."""


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
        from ..saes.codes import feature_columns

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

    def promoted_tokens(self, n: int = N_MAP_TOKENS) -> list:
        """Per feature of the SAE, the first n tokens its decoder direction promotes (the map's hover)."""
        ids = self.output["promoted_ids"][:, :n]
        text = {int(token): self.decode(token) for token in np.unique(ids)}
        return [[text[int(token)] for token in row] for row in ids]

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


def candidate_ranks(a: _Side, b: _Side, pairs) -> dict:
    """(feature_a, feature_b) -> the A feature's rank among every A feature by correlation with the B feature over
    the aligned positions (1 = the B feature's most correlated), None where the pair's correlation is undefined.
    One pass over A's codes against the chosen B features' columns."""
    from ..matching.correlation import pearson_correlation
    from ..saes.codes import iter_code_chunks

    features_b = sorted({feature_b for _, feature_b in pairs})
    if not features_b:
        return {}
    columns_b = np.column_stack([b.activations(feature, b.files.rows) for feature in features_b])
    chunk_rows = 16_384

    def chunks():
        return zip(iter_code_chunks(a.files.codes, a.files.rows, chunk_rows),
                   (columns_b[start:start + chunk_rows] for start in range(0, len(columns_b), chunk_rows)))

    correlation = pearson_correlation(chunks, dtype=np.float64)  # (F_A, chosen B)
    ranks = {}
    for feature_a, feature_b in pairs:
        column = correlation[:, features_b.index(feature_b)]
        own = column[feature_a]
        ranks[(feature_a, feature_b)] = (None if not np.isfinite(own)
                                         else 1 + int(np.sum(column[np.isfinite(column)] > own)))
    return ranks


def same_text(a: _Side, b: _Side, feature_a: int, feature_b: int) -> dict:
    """Both features at the same aligned positions (`PairCard.same_text`): where both fire most (by the product of
    each one's activation over its own peak), where A fires most while B is silent, and the reverse."""
    values_a, values_b = a.activations(feature_a, a.files.rows), b.activations(feature_b, b.files.rows)

    def strongest(score, n):
        order = np.argsort(-score, kind="stable")[:n]
        return order[score[order] > 0]

    peak_a, peak_b = max(values_a.max(initial=0.0), 1e-12), max(values_b.max(initial=0.0), 1e-12)
    chosen = {"Where both fire": strongest(values_a / peak_a * values_b / peak_b, N_BOTH),
              "Where only A fires": strongest(np.where(values_b > 0, 0.0, values_a), N_ONE_ONLY),
              "Where only B fires": strongest(np.where(values_a > 0, 0.0, values_b), N_ONE_ONLY)}
    return {heading: list(zip(a.contexts(feature_a, a.files.rows[positions]),
                              b.contexts(feature_b, b.files.rows[positions])))
            for heading, positions in chosen.items()}


def _function(path: str | Path | None) -> dict:
    """(feature_a, feature_b) -> (effect correlation, output overlap) of a kept pair, from the causal check."""
    if path is None:
        return {}
    table = pd.read_csv(path, sep="\t")
    return {(int(row.feature_a), int(row.feature_b)): (float(row.effect_correlation), float(row.output_overlap))
            for row in table.itertuples()}


def _context_only(path: str | Path | None) -> dict:
    """(feature_a, feature_b) -> the kept pair's context-only correlation, from the controls' per-pair table."""
    if path is None:
        return {}
    table = pd.read_csv(path, sep="\t")
    if "context_only" not in table:
        return {}
    return {(int(row.feature_a), int(row.feature_b)): float(row.context_only) for row in table.itertuples()}


def _map_sections(table: pd.DataFrame, side_a: _Side, side_b: _Side, tokens_a: dict, tokens_b: dict,
                  links: list, options: MapOptions) -> list[str]:
    """The linked map of the layer pair (`linked_map.map_section`) once per card-link table in `links` ({(feature_a,
    feature_b): where its card is}: the folder's pages, the report page's anchors), or "" each where a side has
    no layout. Layouts, tokens and categories are read and worked out once for all of them."""
    import dataclasses

    from ..tokens import shares_a_token
    from .linked_map import MapPair, MapSide, map_section

    if side_a.files.layout is None or side_b.files.layout is None:
        return [""] * len(links)

    def map_side(side, tokens):
        layout = pd.read_csv(side.files.layout, sep="\t").sort_values("feature")[["x", "y"]].to_numpy()
        return MapSide(f"{side.model} layer {side.layer}", layout,
                       {feature: values[:N_MAP_TOKENS] for feature, values in tokens.items()}, side.promoted_tokens())

    kept = table[table["kept"].astype(bool)]
    features = [(int(row.final_a), int(row.feature_b)) for row in kept.itertuples()]
    categories = pair_categories(features, tokens_a, tokens_b, options.categories)
    pairs = [MapPair(feature_a, feature_b, float(correlation), shares_a_token(tokens_a[feature_a], tokens_b[feature_b]),
                     category=category)
             for (feature_a, feature_b), correlation, category in zip(features, kept["final_correlation"], categories)]
    map_a, map_b = map_side(side_a, tokens_a), map_side(side_b, tokens_b)
    return [map_section(map_a, map_b, [dataclasses.replace(pair, card=card_of.get((pair.feature_a, pair.feature_b)))
                                       for pair in pairs], options.threshold)
            for card_of in links]


@dataclass(frozen=True)
class PairFiles:
    """What a layer pair's cards read besides each side's files."""

    matches: Path
    """The match table."""
    control_pairs: Path | None = None
    """The controls' per-pair table (the cards' context-only correlations); None where the controls do not run."""
    function_pairs: Path | None = None
    """The causal check's per-pair table (effect correlation, output overlap); None where it does not run."""


@dataclass(frozen=True)
class MapOptions:
    """How the linked map colours its points."""

    threshold: float = 0.0
    """The matching's threshold, where the correlation scale starts."""
    categories: dict = field(default_factory=dict)
    """{category: keywords} (the semantic rematch's): a kept pair's category is its A feature's top token's, else
    its B feature's; empty: no category colouring."""


def pair_categories(pairs, tokens_a: dict, tokens_b: dict, categories: dict) -> list:
    """Per (feature_a, feature_b), the semantic category of A's top token, else of B's, else None (a keyword of
    several categories: the first by name)."""
    from ..matching.categories import assign_categories

    if not categories:
        return [None] * len(pairs)

    def category_of(tokens, features):
        members = assign_categories([tokens.get(feature, [None])[:1] or [None] for feature in features], None,
                                    categories)
        found = {}
        for name in sorted(members):
            for index in members[name]:
                found.setdefault(int(index), name)
        return [found.get(index) for index in range(len(features))]

    of_a = category_of(tokens_a, [feature_a for feature_a, _ in pairs])
    of_b = category_of(tokens_b, [feature_b for _, feature_b in pairs])
    return [first or second for first, second in zip(of_a, of_b)]


@dataclass(frozen=True)
class CardOutputs:
    folder: Path
    """One page per card, the map (map.html, linking to those pages), an index and cards.json."""
    page: Path
    """The report's page: the map and every card."""


def write_cards(pair: PairFiles, a: SideFiles, b: SideFiles, outputs: CardOutputs, labels: dict, *, named=(),
                options: MapOptions = MapOptions()) -> list:
    """Cards for a layer pair's chosen pairs (`choose_pairs`) and the `named` (feature_a, feature_b) pairs, and the
    layer pair's linked map (where both sides have a layout), coloured as `options` say."""
    import html

    from .page import PairCard, card_anchor, card_html, cards_page, map_page

    table = pd.read_csv(pair.matches, sep="\t", keep_default_na=False)
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
    ranks = candidate_ranks(side_a, side_b, [(item[1], item[2]) for item in chosen])
    context_only = _context_only(pair.control_pairs)
    function = _function(pair.function_pairs)
    written, cards = [], []
    for kind, feature_a, feature_b, correlation in chosen:
        row = rows_by_pair.get((feature_a, feature_b))
        filters = ({"matched": False} if row is None else  # a named pair the matching did not pair
                   {"non-concept filter": bool(row.passes_non_concept), "one-to-one": bool(row.passes_one_to_one),
                    "threshold": bool(row.passes_threshold)})
        cards.append(PairCard(side_a.card_side(feature_a), side_b.card_side(feature_b), correlation, kind,
                              rank_among_candidates=ranks.get((feature_a, feature_b)), filters=filters,
                              context_only_correlation=context_only.get((feature_a, feature_b)),
                              effect_correlation=function.get((feature_a, feature_b), (None, None))[0],
                              output_overlap=function.get((feature_a, feature_b), (None, None))[1],
                              same_text=same_text(side_a, side_b, feature_a, feature_b)))
        written.append({"kind": kind, "feature_a": feature_a, "feature_b": feature_b,
                        "correlation": correlation if np.isfinite(correlation) else None,
                        "rank_among_candidates": ranks.get((feature_a, feature_b)),
                        "context_only_correlation": context_only.get((feature_a, feature_b)),
                        "effect_correlation": function.get((feature_a, feature_b), (None, None))[0],
                        "file": f"{kind}-a{feature_a}-b{feature_b}.html"})
    title = (f"{labels['model_a']} layer {labels['layer_a']} / {labels['model_b']} layer {labels['layer_b']}: "
             "feature cards")
    # Each pair's first card is where the map links it: a page in the folder, an anchor on the report's page.
    files, anchors = {}, {}
    for item, card in zip(written, cards):
        files.setdefault((item["feature_a"], item["feature_b"]), item["file"])
        anchors.setdefault((item["feature_a"], item["feature_b"]), "#" + card_anchor(card))
    with atomic_directory(outputs.folder) as folder:
        for item, card in zip(written, cards):
            (Path(folder) / item["file"]).write_text(card_html(card), encoding="utf-8")
        folder_map, report_map = _map_sections(table, side_a, side_b, tokens_a, tokens_b, [files, anchors], options)
        items = "".join(f'<li><a href="{html.escape(item["file"])}">{item["kind"]}: A {item["feature_a"]}, '
                        f'B {item["feature_b"]} (correlation {_formatted(item["correlation"])})</a></li>'
                        for item in written)
        map_link = '<p><a href="map.html">the linked map of both feature spaces</a></p>' if folder_map else ""
        (Path(folder) / "index.html").write_text(
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
            f"<body><h1>{html.escape(title)}</h1>{map_link}<ul>{items}</ul></body></html>\n", encoding="utf-8")
        if folder_map:
            (Path(folder) / "map.html").write_text(map_page(title.replace("feature cards", "linked map"), folder_map),
                                                   encoding="utf-8")
        (Path(folder) / "cards.json").write_text(json.dumps({**labels, "cards": written}, indent=1))
    page = cards_page(title.replace("feature cards", "linked map and feature cards"), cards, report_map)
    if len(page.encode("utf-8")) > REPORT_PAGE_BYTES:
        print(f"warning: {outputs.page} is {len(page.encode('utf-8')):,} bytes, above {REPORT_PAGE_BYTES:,}: it opens "
              "from disk, but the Snakemake report (a data URL, at most 2 MB in Chromium) may show it blank; open it "
              "from results/cards/ instead", file=sys.stderr)
    with atomic_path(outputs.page, suffix=".html") as temporary:
        temporary.write_text(page, encoding="utf-8")
    print(f"{len(written)} cards" + (", a linked map" if report_map else ""), file=sys.stderr)
    return written
