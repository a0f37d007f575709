"""The matching stage of the workflow, per (model pair, layer of A, layer of B).

Reads the two models' feature codes at their aligned positions, finds each
feature's top activating tokens, pairs features by correlation and filters
the pairs (matching.py holds the math). Writes:
- the match table: feature_b, feature_a, correlation, a column per filter,
  and the top tokens of both features;
- a one-row summary: features alive, pairs after each filter, mean max
  correlation before and after filtering;
- examples (JSON): top contexts of the best and the most surprising kept
  pairs, for the browsable page.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_path, open_hdf5
from .matching import LazyContexts, match_features, summarize_matches, top_activations, top_tokens
from .semantic import semantic_pairs
from .tokens import shares_a_token

N_EXAMPLE_PAIRS = 40  # pairs of each kind shown on the browsable page


def read_alignment(path: str | Path | None, codes_a: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Aligned rows of A and B; with no alignment file (two SAEs of one model) every row pairs with itself."""
    if path is None:
        with open_hdf5(codes_a) as codes:
            rows = np.arange(int(codes.attrs["n_positions"]), dtype=np.int64)
        return rows, rows
    with open_hdf5(path) as alignment:
        return alignment["rows_a"][:], alignment["rows_b"][:]


def _aligned_chunks(codes_a, codes_b, rows_a, rows_b, chunk_rows):
    from .codes import iter_code_chunks

    def chunks():
        return zip(iter_code_chunks(codes_a, rows_a, chunk_rows), iter_code_chunks(codes_b, rows_b, chunk_rows))

    return chunks


def feature_top_tokens(codes_path, rows, cache_path, manifest_path, n_top: int, chunk_rows: int):
    """Per feature: top activating token strings and contexts over the given (aligned) rows."""
    from .codes import iter_code_chunks

    top_rows, _ = top_activations(iter_code_chunks(codes_path, rows, chunk_rows), n_top=n_top)
    with open_hdf5(cache_path) as cache:
        token_ids, window_index = cache["token_ids"][:], cache["window_index"][:]
    # Rows of the aligned sequence -> rows of the cache, where contexts are contiguous.
    cache_rows = np.where(top_rows >= 0, rows[np.maximum(top_rows, 0)], -1)
    from .models import token_decoder

    decode = token_decoder(manifest_path)
    return top_tokens(cache_rows, token_ids, decode), LazyContexts(cache_rows, token_ids, decode, group=window_index)


def match_layer_pair(
    codes_a, codes_b, alignment_path, cache_a, cache_b, manifest_a, manifest_b,
    out_table, out_summary, out_examples, *, settings: dict, labels: dict,
    categories: dict | None = None, out_semantic=None,
) -> dict:
    """Match the features of one (pair, layer_a, layer_b); write table, summary and examples.

    With `categories` and `out_semantic`, also rematch features within each
    semantic category (METHOD.md section 8) and write those pairs.
    """
    rows_a, rows_b = read_alignment(alignment_path, codes_a)
    chunk_rows = settings["chunk_rows"]
    n_top = settings["n_top_tokens"]
    tokens_a, contexts_a = feature_top_tokens(codes_a, rows_a, cache_a, manifest_a, n_top, chunk_rows)
    tokens_b, contexts_b = feature_top_tokens(codes_b, rows_b, cache_b, manifest_b, n_top, chunk_rows)
    chunks = _aligned_chunks(codes_a, codes_b, rows_a, rows_b, chunk_rows)
    table = match_features(
        chunks,
        top_tokens_a=tokens_a,
        top_tokens_b=tokens_b,
        junk_filter=settings["junk_filter"],
        shared_token_filter=settings["shared_token_filter"],
        one_to_one=settings["one_to_one"],
        threshold=settings["threshold"],
        n_top_tokens=n_top,
        feature_block=settings["feature_block"],
        device=settings["device"],
    )
    summary = {**labels, **summarize_matches(table)}
    table["top_tokens_b"] = [" | ".join(tokens_b[b]) for b in table["feature_b"]]
    table["top_tokens_a"] = [" | ".join(tokens_a[a]) for a in table["final_a"]]
    with atomic_path(out_table, suffix=".tsv") as temporary:
        table.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    with atomic_path(out_summary, suffix=".tsv") as temporary:
        pd.DataFrame([summary]).to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    if out_semantic is not None:
        semantic = semantic_pairs(chunks, tokens_a, contexts_a, tokens_b, contexts_b, categories or {},
                                  settings["threshold"])
        with atomic_path(out_semantic, suffix=".tsv") as temporary:
            semantic.to_csv(temporary, sep="\t", index=False, float_format="%.6g")
    examples = example_pairs(table, tokens_a, tokens_b, contexts_a, contexts_b)
    with atomic_path(out_examples, suffix=".json") as temporary:
        temporary.write_text(json.dumps({**labels, **examples}, ensure_ascii=False))
    return summary


def example_pairs(table, tokens_a, tokens_b, contexts_a, contexts_b) -> dict:
    """The best kept pairs, and the most surprising: highly correlated yet sharing no top token."""
    kept = table[table["kept"]].sort_values("final_correlation", ascending=False)

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
