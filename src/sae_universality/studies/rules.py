"""How much the one-to-one rule moves the result: one layer pair of a finished run, matched and scored again
under every rule.

The paper's code matches features three ways (greedy argmax, Hungarian over the whole correlation matrix,
Sinkhorn optimal transport then the plan's argmax); the project's default keeps, per A feature, its best
correlated B feature. This study re-matches one layer pair of a finished run with each rule (and, for the
global rules, with each B feature's best 5 A features or the whole matrix), with the run's other matching
settings, and scores the kept pairs with the run's similarity settings. Per variant and metric: the kept
pairs, their mean correlation, how many keep the partner the run's own rule gave them, and the score with
its null, interval and excess.

    python -m sae_universality.studies.rules RUN --layers 9 10 --out docs/figures/default/rules.tsv
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..io import write_tsv

VARIANTS = (("highest", 5), ("first", 5), ("hungarian", 5), ("hungarian", "all"), ("sinkhorn", 5),
            ("sinkhorn", "all"))
"""(rule, n_candidates) compared; n_candidates matters only to the global rules."""


def compare_rules(run: Path, pair: str, layer_a: int, layer_b: int, variants=VARIANTS) -> pd.DataFrame:
    """One row per (variant, metric) for one layer pair of the finished run in `run` (see the module)."""
    import yaml

    from ..config import check_config
    from ..matching.stage import Side, _aligned_chunks, aligned_rows, feature_top_tokens
    from ..matching.table import kept_pairs, match_features
    from ..settings import MatchSettings, SimilaritySettings, from_section
    from ..similarity.stage import decoder_rows, score_pairs

    config = check_config(yaml.safe_load((run / "config.yaml").read_text()))
    model_a, model_b = pair.split("--")
    paths = {"codes_a": run / f"results/codes/{model_a}/layer{layer_a}/seed0.h5",
             "codes_b": run / f"results/codes/{model_b}/layer{layer_b}/seed0.h5",
             "alignment": run / f"results/alignment/{pair}.h5"}
    for name, path in paths.items():
        if not path.is_file():
            raise UserError(f"{path} is missing ({name}); run the workflow in {run} up to the matching of "
                            f"{pair} layers {layer_a} / {layer_b} first")
    rows_a, rows_b = aligned_rows(paths["alignment"])
    a = Side(paths["codes_a"], run / f"results/activations/{model_a}/layer{layer_a}.h5",
             run / f"resources/models/{model_a}/manifest.json", rows_a)
    b = Side(paths["codes_b"], run / f"results/activations/{model_b}/layer{layer_b}.h5",
             run / f"resources/models/{model_b}/manifest.json", rows_b)
    base = from_section(MatchSettings, config["matching"])
    similarity = from_section(SimilaritySettings, config["similarity"])
    tokens_a, _ = feature_top_tokens(a, base.n_top_tokens, base.chunk_rows)
    tokens_b, _ = feature_top_tokens(b, base.n_top_tokens, base.chunk_rows)
    chunks = _aligned_chunks(a, b, base.chunk_rows)
    W_a = decoder_rows(run / f"results/saes/{model_a}/layer{layer_a}/seed0")
    W_b = decoder_rows(run / f"results/saes/{model_b}/layer{layer_b}/seed0")

    @functools.cache
    def matched(rule, n_candidates):
        # Cached: the run's own rule is usually one of the variants, and a matching pass reads the codes again.
        settings = dataclasses.replace(base, one_to_one=rule, n_candidates=n_candidates)
        return match_features(chunks, top_tokens_a=tokens_a, top_tokens_b=tokens_b, settings=settings)

    own_a, own_b = kept_pairs(matched(base.one_to_one, base.n_candidates))
    own_partner = dict(zip(own_b.tolist(), own_a.tolist()))
    rows = []
    for rule, n_candidates in variants:
        table = matched(rule, n_candidates)
        feature_a, feature_b = kept_pairs(table)
        kept = table[table["kept"]]
        same = sum(own_partner.get(b_feature) == a_feature for a_feature, b_feature in zip(feature_a, feature_b))
        scores = score_pairs(W_a, W_b, feature_a, feature_b, similarity)
        for score in scores.to_dict("records"):
            rows.append({"model_a": model_a, "model_b": model_b, "layer_a": layer_a, "layer_b": layer_b,
                         "rule": rule, "n_candidates": str(n_candidates) if rule in ("hungarian", "sinkhorn") else "",
                         "run_rule": base.one_to_one, "kept": len(feature_a),
                         "mean_correlation": float(kept["final_correlation"].mean()) if len(kept) else np.nan,
                         "same_partner_as_run_rule": int(same), **score,
                         "excess_ci_low": score["ci_low"] - score["null_mean"],
                         "excess_ci_high": score["ci_high"] - score["null_mean"]})
        print(f"{rule} ({n_candidates}): {len(feature_a)} kept, {same} with the run rule's partner", file=sys.stderr)
    return pd.DataFrame(rows)


def rules_command(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sae_universality.studies.rules", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder")
    parser.add_argument("--pair", default="smollm2--gemma3", help="model pair as in results/similarity/")
    parser.add_argument("--layers", type=int, nargs=2, metavar=("LAYER_A", "LAYER_B"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="the TSV to write")
    arguments = parser.parse_args(argv)
    try:
        table = compare_rules(arguments.run, arguments.pair, *arguments.layers)
    except UserError as error:
        print(f"sae-universality: {error}", file=sys.stderr)
        return 1
    write_tsv(table, arguments.out)
    return 0


if __name__ == "__main__":
    sys.exit(rules_command())
