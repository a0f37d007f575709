"""The matching stage of the workflow, per (model pair, layer of A, layer of B).

Reads the two models' feature codes at their aligned positions, finds each
feature's top activating tokens, pairs features by correlation and filters
the pairs (the matching package holds the math). Writes:
- the match table: feature_b, feature_a, correlation, a column per filter,
  and the top tokens of both features;
- a one-row summary: features alive, pairs after each filter, mean max
  correlation before and after filtering;
- examples (JSON): top contexts of the best and the most surprising kept
  pairs, for the browsable page.

`control_layer_pair` is the controls' job (controls.py): the same matching on
codes with token identity or the document taken out, beside the full result.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..io import atomic_path, open_hdf5, write_tsv
from .categories import CategorySide, semantic_pairs
from .controls import (KEY_BIGRAM, KEY_DOCUMENT, KEY_TOKEN, fit_residualizer, paired_correlations, position_keys,
                       residual_chunks, within_document_roll)
from .table import match_features, summarize_matches
from .top_activations import LazyContexts, top_activations, top_tokens
from ..settings import MatchSettings
from ..tokens import shares_a_token

N_EXAMPLE_PAIRS = 40  # pairs of each kind shown on the browsable page


@dataclass(frozen=True)
class Side:
    """One side of a comparison: an SAE's codes and where their positions came from."""

    codes: Path
    """Feature codes of the SAE (results/codes/...h5), one row per cached position."""
    cache: Path
    """The activation cache those codes encode: its token ids and windows give the contexts."""
    manifest: Path
    """The prepared model, whose tokenizer decodes the contexts."""
    rows: np.ndarray
    """Rows of the codes to read, aligned with the other side's rows (row i pairs with row i)."""


@dataclass(frozen=True)
class MatchOutputs:
    """Files one matching job writes."""

    table: Path
    summary: Path
    examples: Path
    semantic: Path | None = None
    """Semantic rematching within keyword categories (None: not asked for)."""


def aligned_rows(alignment_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of A and rows of B at the same text positions (two models with two tokenizers)."""
    with open_hdf5(alignment_path) as alignment:
        return alignment["rows_a"][:], alignment["rows_b"][:]


def all_rows(codes_path: str | Path) -> np.ndarray:
    """Every row of a codes file: two SAEs of one model and layer encode the same positions."""
    with open_hdf5(codes_path) as codes:
        return np.arange(int(codes.attrs["n_positions"]), dtype=np.int64)


def _aligned_chunks(a: Side, b: Side, chunk_rows: int):
    from ..saes.codes import iter_code_chunks

    def chunks():
        return zip(iter_code_chunks(a.codes, a.rows, chunk_rows), iter_code_chunks(b.codes, b.rows, chunk_rows))

    return chunks


def feature_top_tokens(side: Side, n_top: int, chunk_rows: int):
    """Per feature: top activating token strings and contexts over the side's (aligned) rows."""
    from ..saes.codes import iter_code_chunks
    from ..models.loading import token_decoder

    top_rows, _ = top_activations(iter_code_chunks(side.codes, side.rows, chunk_rows), n_top=n_top)
    with open_hdf5(side.cache) as cache:
        token_ids, window_index = cache["token_ids"][:], cache["window_index"][:]
    # Rows of the aligned sequence -> rows of the cache, where contexts are contiguous.
    cache_rows = np.where(top_rows >= 0, side.rows[np.maximum(top_rows, 0)], -1)
    decode = token_decoder(side.manifest)
    return top_tokens(cache_rows, token_ids, decode), LazyContexts(cache_rows, token_ids, decode, group=window_index)


def match_layer_pair(a: Side, b: Side, outputs: MatchOutputs, *, settings: MatchSettings, labels: dict,
                     categories: dict | None = None) -> dict:
    """Match the features of one (pair, layer_a, layer_b); write table, summary and examples.

    With `outputs.semantic`, also rematch features within each semantic category
    of `categories` (METHOD.md section 8) and write those pairs.
    """
    if len(a.rows) != len(b.rows) or not len(a.rows):
        raise UserError(f"{a.codes} and {b.codes}: {len(a.rows)} and {len(b.rows)} aligned positions; "
                        "the alignment must pair at least one position: rerun align_positions with more text")
    tokens_a, contexts_a = feature_top_tokens(a, settings.n_top_tokens, settings.chunk_rows)
    tokens_b, contexts_b = feature_top_tokens(b, settings.n_top_tokens, settings.chunk_rows)
    chunks = _aligned_chunks(a, b, settings.chunk_rows)
    table = match_features(chunks, top_tokens_a=tokens_a, top_tokens_b=tokens_b, settings=settings)
    summary = {**labels, **summarize_matches(table)}
    table["top_tokens_b"] = [" | ".join(tokens_b[feature]) for feature in table["feature_b"]]
    table["top_tokens_a"] = [" | ".join(tokens_a[feature]) for feature in table["final_a"]]
    write_tsv(table, outputs.table)
    write_tsv(pd.DataFrame([summary]), outputs.summary)
    if outputs.semantic is not None:
        semantic = semantic_pairs(chunks, CategorySide(tokens_a, contexts_a), CategorySide(tokens_b, contexts_b),
                                  categories or {}, settings)
        write_tsv(semantic, outputs.semantic)
    examples = example_pairs(table, tokens_a, tokens_b, contexts_a, contexts_b)
    with atomic_path(outputs.examples, suffix=".json") as temporary:
        temporary.write_text(json.dumps({**labels, **examples}, ensure_ascii=False))
    return summary


CONTROLS = {
    "full": "the codes as they are (the pipeline's result)",
    "context_only": "each feature minus its mean for the current token of its own model (cross-fitted)",
    "context_only_bigram": "each feature minus its mean for the (previous, current) token pair where frequent, "
                           "else for the current token (cross-fitted)",
    "document_demeaned": "each feature minus its mean over its document (cross-fitted)",
    "document_shifted": "B's positions rolled half a document along within each document: topic kept, "
                        "position pairing broken",
}
"""The controls `control_layer_pair` reports, in its row order, each with what it does to the codes."""

CONTROL_COLUMNS = ["control", "n_kept_full", "kept_full_mean_correlation", "kept_full_above_threshold",
                   "n_kept_rematched", "rematched_mean_correlation", "what"]


@dataclass(frozen=True)
class ControlOutputs:
    """Files one controls job writes."""

    summary: Path
    """One row per control (CONTROL_COLUMNS)."""
    context_only_table: Path
    """The match table of the context-only codes, as the full one (scored by the similarity stage)."""
    controls: tuple[str, ...] = tuple(CONTROLS)[1:]
    """The controls to compute beside the full row (the seed-to-seed ceiling needs only context_only)."""
    pairs: Path | None = None
    """Per kept pair, its correlation on the codes of each control (the feature cards read it); None: not written."""


def _shifted_chunks(a: Side, b: Side, order: np.ndarray, chunk_rows: int):
    """Aligned chunks with B's rows taken in `order` (a roll within documents). B's codes are read once into
    memory: rows rolled across shuffled windows are spread over the whole file, so reading them chunk by
    chunk would read the file again for every chunk."""
    import scipy.sparse

    from ..saes.codes import iter_code_chunks

    codes_b = scipy.sparse.vstack(list(iter_code_chunks(b.codes, b.rows, chunk_rows)), format="csr")[order]

    def chunks():
        starts = range(0, codes_b.shape[0], chunk_rows)
        return zip(iter_code_chunks(a.codes, a.rows, chunk_rows),
                   (codes_b[start:start + chunk_rows] for start in starts))

    return chunks


def _side_keys(side: Side):
    with open_hdf5(side.cache) as cache:
        return position_keys(cache["token_ids"][:], cache["window_index"][:], cache["doc_index"][:], side.rows)


def control_layer_pair(a: Side, b: Side, full_table: str | Path, outputs: ControlOutputs, *,
                       settings: MatchSettings, labels: dict, min_bigram_count: int = 5) -> pd.DataFrame:
    """The controls of one (pair, layer_a, layer_b): how the full result fares once token identity or the
    document is taken out of the codes.

    Per control (CONTROLS): the full pipeline's kept pairs' correlation on the
    controlled codes (and the fraction still at or above the threshold), and the
    matching rerun on the controlled codes with the same settings (pairs kept and
    their mean correlation) where that is cheap or needed: for the context-only codes, whose match table is
    written for scoring, and for the document shift; the full result's rematch is its own table, and the two
    dense controls that are not scored (bigram, document means) report the kept pairs only.
    """
    full = pd.read_csv(full_table, sep="\t", usecols=["feature_b", "final_a", "final_correlation", "kept"])
    kept = full[full["kept"].astype(bool)]
    features_a, features_b = kept["final_a"].to_numpy(np.int64), kept["feature_b"].to_numpy(np.int64)
    tokens_a, _ = feature_top_tokens(a, settings.n_top_tokens, settings.chunk_rows)
    tokens_b, _ = feature_top_tokens(b, settings.n_top_tokens, settings.chunk_rows)
    keys_a, keys_b = _side_keys(a), _side_keys(b)
    chunks = _aligned_chunks(a, b, settings.chunk_rows)

    def fitted(side, keys, wanted):
        # Means are fitted on one side's codes alone; the bigram means fall back to the token means fitted once.
        from ..saes.codes import iter_code_chunks

        def blocks():
            return iter_code_chunks(side.codes, side.rows, settings.chunk_rows)

        token = fit_residualizer(blocks, keys, KEY_TOKEN)
        return {KEY_TOKEN: token,
                KEY_BIGRAM: (fit_residualizer(blocks, keys, KEY_BIGRAM, min_bigram_count, token)
                             if "context_only_bigram" in wanted else None),
                KEY_DOCUMENT: fit_residualizer(blocks, keys, KEY_DOCUMENT) if "document_demeaned" in wanted else None}

    if set(outputs.controls) - set(CONTROLS):
        raise ValueError(f"unknown controls {sorted(set(outputs.controls) - set(CONTROLS))}; known: {list(CONTROLS)}")
    fitted_a, fitted_b = fitted(a, keys_a, outputs.controls), fitted(b, keys_b, outputs.controls)
    # Which codes each control reads, how it residualizes them, and whether the matching is rerun on them: the
    # dense controls cost a full pass of F_A x F_B products each, so only the context-only one (scored later)
    # and the cheap sparse shift are rematched. The full codes need no pass: the full table holds their result.
    variants = {"context_only": lambda: (chunks, (fitted_a[KEY_TOKEN], fitted_b[KEY_TOKEN]), True),
                "context_only_bigram": lambda: (chunks, (fitted_a[KEY_BIGRAM], fitted_b[KEY_BIGRAM]), False),
                "document_demeaned": lambda: (chunks, (fitted_a[KEY_DOCUMENT], fitted_b[KEY_DOCUMENT]), False),
                "document_shifted": lambda: (_shifted_chunks(a, b, within_document_roll(keys_b.document),
                                                             settings.chunk_rows), (None, None), True)}
    rows = [{**labels, "control": "full", "n_kept_full": len(features_a),
             "kept_full_mean_correlation": float(kept["final_correlation"].mean()) if len(kept) else np.nan,
             "kept_full_above_threshold": 1.0 if len(kept) else np.nan, "n_kept_rematched": len(kept),
             "rematched_mean_correlation": float(kept["final_correlation"].mean()) if len(kept) else np.nan,
             "what": CONTROLS["full"]}]
    per_pair = pd.DataFrame({"feature_a": features_a, "feature_b": features_b,
                             "full": kept["final_correlation"].to_numpy(np.float64)})
    for control in (name for name in variants if name in outputs.controls):
        source, (residualizer_a, residualizer_b), rematch = variants[control]()
        kept_columns = residual_chunks(source, residualizer_a, residualizer_b, features_a, features_b)
        correlation = paired_correlations(kept_columns, np.arange(len(features_a)), np.arange(len(features_b)))
        per_pair[control] = correlation
        rematched = pd.Series(dtype=float)
        if rematch:
            table = match_features(residual_chunks(source, residualizer_a, residualizer_b),
                                   top_tokens_a=tokens_a, top_tokens_b=tokens_b, settings=settings)
            rematched = table.loc[table["kept"], "final_correlation"]
            if control == "context_only":
                table["top_tokens_b"] = [" | ".join(tokens_b[feature]) for feature in table["feature_b"]]
                table["top_tokens_a"] = [" | ".join(tokens_a[feature]) for feature in table["final_a"]]
                write_tsv(table, outputs.context_only_table)
        rows.append({**labels, "control": control, "n_kept_full": len(features_a),
                     "kept_full_mean_correlation": float(np.nanmean(correlation)) if len(correlation) else np.nan,
                     "kept_full_above_threshold": (float(np.mean(correlation >= settings.threshold))
                                                   if len(correlation) else np.nan),
                     "n_kept_rematched": int(len(rematched)) if rematch else np.nan,
                     "rematched_mean_correlation": float(rematched.mean()) if len(rematched) else np.nan,
                     "what": CONTROLS[control]})
    summary = pd.DataFrame(rows, columns=[*labels, *CONTROL_COLUMNS])
    write_tsv(summary, outputs.summary)
    if outputs.pairs is not None:
        write_tsv(per_pair, outputs.pairs)
    return summary


def example_pairs(table, tokens_a, tokens_b, contexts_a, contexts_b) -> dict:
    """The best kept pairs, and the most surprising: highly correlated yet sharing no top token."""
    kept = table[table["kept"]].sort_values("final_correlation", ascending=False, kind="stable")  # ties: lowest B first

    def describe(row):
        a, b = int(row.final_a), int(row.feature_b)
        return {"feature_a": a, "feature_b": b, "correlation": float(row.final_correlation),
                "tokens_a": tokens_a[a], "tokens_b": tokens_b[b],
                "contexts_a": contexts_a[a][:5], "contexts_b": contexts_b[b][:5]}

    surprising = [row for row in kept.itertuples()
                  if not shares_a_token(tokens_a[int(row.final_a)], tokens_b[int(row.feature_b)])]
    return {"best": [describe(row) for row in kept.head(N_EXAMPLE_PAIRS).itertuples()],
            "surprising": [describe(row) for row in surprising[:N_EXAMPLE_PAIRS]]}


def write_pairs_page(example_files: list[str | Path], out_path: str | Path, title: str) -> None:
    """A self-contained HTML page: per layer pair, the best and the most surprising matches side by side."""
    sections = []
    for path in example_files:
        examples = json.loads(Path(path).read_text())
        heading = f"{examples['model_a']} layer {examples['layer_a']} &harr; {examples['model_b']} layer {examples['layer_b']}"
        for kind, caption in (("best", "Best matched pairs (highest correlation after filtering)"),
                              ("surprising", "Most surprising: highly correlated, yet no top token in common")):
            rows = "".join(_pair_row(pair) for pair in examples[kind]) or "<tr><td colspan=3>none</td></tr>"
            sections.append(f"<h2>{heading}</h2><h3>{caption}</h3><table><tr><th>correlation</th>"
                            f"<th>A feature: top contexts</th><th>B feature: top contexts</th></tr>{rows}</table>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}}mark{{background:#ffd54f}}
ul{{margin:0;padding-left:1.2em}}</style></head><body><h1>{html.escape(title)}</h1>
<p>Contexts show the activating token highlighted. Pairs are one-to-one, after the non-concept filter and the
correlation threshold. Read a row as: does the A feature fire on the same kind of text as the B feature?</p>
{''.join(sections)}</body></html>"""
    with atomic_path(out_path, suffix=".html") as temporary:
        temporary.write_text(page, encoding="utf-8")


def _pair_row(pair: dict) -> str:
    def contexts(items):
        return "<ul>" + "".join(f"<li>{_highlight(text)}</li>" for text in items) + "</ul>"

    return (f"<tr><td>{pair['correlation']:.3f}<br>A#{pair['feature_a']}<br>B#{pair['feature_b']}</td>"
            f"<td>{contexts(pair['contexts_a'])}</td><td>{contexts(pair['contexts_b'])}</td></tr>")


def _highlight(context: str) -> str:
    escaped = html.escape(context)
    return escaped.replace("[[", "<mark>", 1).replace("]]", "</mark>", 1)
