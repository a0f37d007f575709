"""Numbers in the docs written by code from the committed tables, so they cannot drift from them.

A generated block in a Markdown file sits between two comments:

    <!-- generated: NAME -->
    ...
    <!-- end generated: NAME -->

and holds exactly what `BLOCKS[NAME]` makes from the tables it names (paths
relative to the repository). `python -m sae_universality.report.docs` rewrites
every block of docs/results.md; `--check` only says which differ (the tests run
it), so a table regenerated without its prose, or prose edited by hand, fails.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .verdict import _number, _scored_cells, control_paragraph, excess_intervals_apart

REPOSITORY = Path(__file__).resolve().parents[3]
RESULTS = REPOSITORY / "docs" / "results.md"
README = REPOSITORY / "README.md"
DOCUMENTS = (RESULTS, README)
"""The files whose generated blocks `python -m sae_universality.report.docs` rewrites (or checks)."""
SIGNIFICANCE = 0.05



def controls_table(controls: pd.DataFrame, variants: dict, significance: float = SIGNIFICANCE) -> str:
    """A Markdown table: per layer pair, the kept pairs' mean correlation under every control, what the
    context-only codes give when matched and scored again, and what untrained dictionaries give (where the
    tables have them). `variants`: {"context_only": scores beside the full, "untrained": ...}."""
    untrained, lexical = variants.get("untrained"), variants.get("lexical")
    header = ("| layer pair | kept pairs | full | context only (at threshold) | context only, bigram | "
              "document demeaned | document shifted | context-only pairs matched again | significant metrics "
              "(context only) | context-only excess / full excess, lowest and highest metric |")
    with_ceiling = "normalized" in variants["context_only"]
    if with_ceiling:
        header += " context only: fraction of its own ceiling, lowest and highest metric |"
    if untrained is not None:
        header += " untrained dictionaries: pairs kept | significant metrics (untrained) |"
    if lexical is not None:
        header += (" lexical floor: pairs kept | significant metrics (lexical) | metrics whose full excess lies "
                   "above the floor's (intervals apart) |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for (layer_a, layer_b), here in controls.groupby(["layer_a", "layer_b"], sort=True):
        here = here.set_index("control")
        kept = here["kept_full_mean_correlation"].astype(float)
        scored = _scored_cells(variants["context_only"], layer_a, layer_b)
        surviving = scored["excess_surviving"].astype(float) if len(scored) else pd.Series(dtype=float)
        share = f"{surviving.min():.2f}-{surviving.max():.2f}" if np.isfinite(surviving).any() else "n/a"
        cells = [f"{layer_a} / {layer_b}", str(int(here.loc["full", "n_kept_full"])), _number(kept["full"]),
                 f"{_number(kept['context_only'])} ({here.loc['context_only', 'kept_full_above_threshold']:.0%})",
                 _number(kept["context_only_bigram"]), _number(kept["document_demeaned"]),
                 _number(kept["document_shifted"]), str(int(here.loc["context_only", "n_kept_rematched"])),
                 _significant_of(scored, significance), share]
        if with_ceiling:
            fraction = scored["normalized"].astype(float) if len(scored) else pd.Series(dtype=float)
            cells.append(f"{fraction.min():.2f}-{fraction.max():.2f}" if np.isfinite(fraction).any() else "n/a")
        if untrained is not None:
            cells += [str(int(here.loc["untrained_dictionary", "n_kept_rematched"])),
                      _significant_of(_scored_cells(untrained, layer_a, layer_b), significance)]
        if lexical is not None:
            floor = _scored_cells(lexical, layer_a, layer_b)
            apart = excess_intervals_apart(floor).sum() if len(floor) else 0
            cells += [str(int(here.loc["lexical_floor", "n_kept_rematched"])), _significant_of(floor, significance),
                      f"{int(apart)} of {len(floor)}" if len(floor) else "not scored"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)



def _significant_of(scored: pd.DataFrame, significance: float) -> str:
    if not len(scored):
        return "not scored"
    return f"{int((scored['p_adjusted'].astype(float) < significance).sum())} of {len(scored)}"


def controls_block(folder: str) -> Callable[[], str]:
    """The block of a run's controls: its table, then the verdict's paragraph on them, from `folder`'s TSVs."""

    def make() -> str:
        root = REPOSITORY / folder
        controls = pd.read_csv(root / "controls.tsv", sep="\t")
        variants = {"context_only": pd.read_csv(root / "context_only_scores.tsv", sep="\t")}
        for name in ("untrained", "lexical"):
            if (root / f"{name}_scores.tsv").is_file():
                variants[name] = pd.read_csv(root / f"{name}_scores.tsv", sep="\t")
        model_a, model_b = controls["model_a"].iloc[0], controls["model_b"].iloc[0]
        paragraph = control_paragraph(controls, variants, SIGNIFICANCE, model_a, model_b)
        return (controls_table(controls, variants) + "\n\nThe verdict's reading of these tables:\n\n"
                + "\n".join(f"> {line}" if line else ">" for line in paragraph.splitlines()))

    return make


RESIDUAL_COMPARISONS = (("aligned", "aligned"), ("token_means", "per-token means"),
                        ("document_shifted", "B rolled within documents"))


def _residual_wide(residual: pd.DataFrame) -> pd.DataFrame:
    """residual_streams.tsv with one row per (layer pair, measure) and a column per comparison's observed score."""
    return residual.pivot_table(index=["layer_a", "layer_b", "metric"], columns="comparison", values="observed")


def residual_block(folder: str) -> Callable[[], str]:
    """The raw residual streams compared before any SAE, per layer pair and measure, from `folder`'s
    residual_streams.tsv: each comparison's score with its half-sample interval."""

    def make() -> str:
        residual = pd.read_csv(REPOSITORY / folder / "residual_streams.tsv", sep="\t")
        header = "| layer pair | measure | " + " | ".join(label for _, label in RESIDUAL_COMPARISONS) + " |"
        lines = [f"{int(residual['n_positions'].max()):,} aligned positions at most per layer pair "
                 f"({int(residual['n_windows'].max()):,} whole windows), each score with its 95% half-sample interval "
                 "over windows:", "", header, "|" + "---|" * (2 + len(RESIDUAL_COMPARISONS))]
        for (layer_a, layer_b, metric), here in residual.groupby(["layer_a", "layer_b", "metric"], sort=False):
            value = here.set_index("comparison")
            cells = [f"{_number(value.loc[name, 'observed'])} [{_number(value.loc[name, 'ci_low'])}, "
                     f"{_number(value.loc[name, 'ci_high'])}]" if name in value.index else "n/a"
                     for name, _ in RESIDUAL_COMPARISONS]
            lines.append(f"| {layer_a} / {layer_b} | {METRIC_NAMES.get(metric, metric)} | " + " | ".join(cells) + " |")
        wide = _residual_wide(residual)
        higher = int((wide["token_means"] > wide["aligned"]).sum())
        reading = (": what each model's activation is on average for the current token is more alike across the "
                   "models than the activations themselves." if higher == len(wide) else ".")
        lines += ["", f"In {higher} of {len(wide)} cells the per-token means alone score higher than the aligned "
                      f"streams{reading}"]
        for metric, rolled in wide["document_shifted"].groupby(level="metric"):
            lines[-1] += (f" With B rolled within documents {METRIC_NAMES.get(metric, metric)} gives "
                          f"{_range(rolled, 3)}.")
        return "\n".join(lines)

    return make


def _control_summary(folder: Path) -> dict:
    """What the controls' tables of one run say in a few numbers, for comparing runs."""
    controls = pd.read_csv(folder / "controls.tsv", sep="\t")
    context_only = pd.read_csv(folder / "context_only_scores.tsv", sep="\t")
    lexical = pd.read_csv(folder / "lexical_scores.tsv", sep="\t")
    run = pd.read_csv(folder / "run.tsv", sep="\t").iloc[0]
    full = controls[controls["control"] == "full"].set_index(["layer_a", "layer_b"])
    token = controls[controls["control"] == "context_only"].set_index(["layer_a", "layer_b"])
    significant_cells = (context_only["p_adjusted"] < SIGNIFICANCE).groupby(
        [context_only["layer_a"], context_only["layer_b"]]).any()
    return {"tokens": float(run["training_tokens"]),
            "kept": full["n_kept_full"].astype(int),
            "left": token["kept_full_mean_correlation"] / full["kept_full_mean_correlation"],
            "context_significant": int(significant_cells.sum()), "layer_pairs": len(significant_cells),
            "context_fraction": context_only["normalized"].astype(float),
            "lexical_share": lexical["excess_surviving"].astype(float),
            "lexical_significant": int((lexical["p_adjusted"] < SIGNIFICANCE).sum()), "lexical_scores": len(lexical),
            "clear": int(excess_intervals_apart(lexical).sum())}


def _moves(before, after) -> str:
    """'rise', 'fall' or 'stay' for two ranges: rise when after's lowest is above before's highest, and so on."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if np.nanmin(after) > np.nanmax(before):
        return "rise"
    if np.nanmax(after) < np.nanmin(before):
        return "fall"
    return "overlap"


def controls_comparison_block(default: str, whole: str) -> Callable[[], str]:
    """The controls at the default size against the whole sample, in bullets whose words follow the numbers."""

    def make() -> str:
        small, large = _control_summary(REPOSITORY / default), _control_summary(REPOSITORY / whole)
        sizes = f"{_thousands(small['tokens'])} and {_thousands(large['tokens'])} training tokens per SAE"
        kept_move = {"rise": "more", "fall": "fewer", "overlap": "about as many"}[_moves(small["kept"], large["kept"])]
        left_move = {"rise": "a larger share", "fall": "a smaller share", "overlap": "a share in the same range"}[
            _moves(small["left"], large["left"])]
        lines = [
            f"- Kept pairs ({sizes}): {_range(small['kept'], 0)} at the default size, {_range(large['kept'], 0)} on "
            f"the whole sample: {kept_move}.",
            f"- Without the current token the kept pairs keep {_range(small['left'])} of their mean correlation at "
            f"the default size and {_range(large['left'])} on the whole sample: {left_move}.",
            f"- Matched again, the context-only codes are significant at {small['context_significant']} of "
            f"{small['layer_pairs']} layer pairs at the default size and {large['context_significant']} of "
            f"{large['layer_pairs']} on the whole sample; they reach {_range(small['context_fraction'])} of their own "
            f"seed-to-seed ceiling at the default size and {_range(large['context_fraction'])} on the whole sample.",
            f"- The lexical floor is significant in {small['lexical_significant']} of {small['lexical_scores']} scores "
            f"at the default size and {large['lexical_significant']} of {large['lexical_scores']} on the whole "
            f"sample, with an excess of {_range(small['lexical_share'])} and {_range(large['lexical_share'])} of the "
            f"full result's; the full result's excess stands clear of the floor's (intervals apart) in "
            f"{small['clear']} of {small['lexical_scores']} and {large['clear']} of {large['lexical_scores']} scores.",
        ]
        return "\n".join(lines)

    return make


def function_block(folder: str) -> Callable[[], str]:
    """A run's causal check: per layer pair its functional agreement (function.tsv) in a table, then how the
    first-order estimate fared against exact ablation (causal_agreement.tsv)."""

    def make() -> str:
        table = pd.read_csv(REPOSITORY / folder / "function.tsv", sep="\t")
        agreement = pd.read_csv(REPOSITORY / folder / "causal_agreement.tsv", sep="\t")
        lines = ["| layers | effect correlation [95%] | random pairings | adjusted p | seed-to-seed ceiling | fraction "
                 "of the ceiling | without the current token | activation correlation, same positions | pairs that "
                 "agree on their own | promoted strings overlap (random) |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for row in table.itertuples():
            lines.append(f"| {row.layer_a} / {row.layer_b} | {_number(row.effect_mean)} [{_number(row.ci_low)}, "
                         f"{_number(row.ci_high)}] | {_number(row.null_mean)} | {_number(row.p_adjusted, 2)} | "
                         f"{_number(row.ceiling)} | {_number(row.fraction_of_ceiling, 2)} | "
                         f"{_number(row.context_only_mean)} | {_number(row.activation_mean)} | "
                         f"{row.share_agreeing:.0%} of {row.n_pairs} | {_number(row.output_overlap_mean)} "
                         f"({_number(row.output_overlap_null)}) |")
        kinds = {kind: agreement[agreement["kind"] == kind] for kind in ("random", "largest")}
        lines += ["", f"{int(table['n_positions'].max()):,} aligned positions of {int(table['n_windows'].max())} "
                      f"window prefixes; {int((table['above_chance']).sum())} of {len(table)} layer pairs above random "
                      "pairings. The first-order estimate against exact ablation, per (model, layer): on items drawn "
                      f"at random correlation {_range(kinds['random']['pearson'])} (slope "
                      f"{_range(kinds['random']['slope'])}); on the largest estimates correlation "
                      f"{_range(kinds['largest']['pearson'])} (slope {_range(kinds['largest']['slope'])})."]
        return "\n".join(lines)

    return make


def _function_summary(folder: Path) -> dict:
    table = pd.read_csv(folder / "function.tsv", sep="\t")
    return {"effect": table["effect_mean"], "ceiling": table["ceiling"], "fraction": table["fraction_of_ceiling"],
            "share": table["share_agreeing"], "activation": table["activation_mean"],
            "above": int(table["above_chance"].sum()), "cells": len(table),
            "seed_stability": pd.read_csv(folder / "quality.tsv", sep="\t")["decoder_cosine_mean"].dropna()}


def function_comparison_block(default: str, whole: str) -> Callable[[], str]:
    """The causal check at the default size against the whole sample, in bullets whose words follow the numbers."""

    def make() -> str:
        small, large = _function_summary(REPOSITORY / default), _function_summary(REPOSITORY / whole)
        words = {"rise": "higher on the whole sample", "fall": "lower on the whole sample",
                 "overlap": "the two ranges overlap"}

        def bullet(label, key, digits=3):
            return (f"- {label}: {_range(small[key], digits)} at the default size, {_range(large[key], digits)} on "
                    f"the whole sample; {words[_moves(small[key], large[key])]}.")

        return "\n".join([
            f"- Layer pairs above random pairings: {small['above']} of {small['cells']} at the default size, "
            f"{large['above']} of {large['cells']} on the whole sample.",
            bullet("The kept pairs' mean effect correlation", "effect"),
            bullet("The seed-to-seed ceiling of the same measure", "ceiling"),
            bullet("The fraction of that ceiling", "fraction", 2),
            bullet("The share of pairs that agree on their own", "share", 2),
            bullet("The same pairs' activation correlation on the same positions", "activation"),
            bullet("The second seed's decoder directions against the first's (mean cosine of the pairs, Hungarian)",
                   "seed_stability"),
        ])

    return make


def cards_words_block(folder: str) -> Callable[[], str]:
    """Three of a run's feature cards in words (cards.tsv), each described once: a lexical pair (the strongest whose
    features share a top token), a contextual one (the card whose correlation survives best without the current
    token) and a surprising one (highly correlated, no top token shared)."""

    def make() -> str:
        cards = pd.read_csv(REPOSITORY / folder / "cards.tsv", sep="\t", keep_default_na=False)
        cards = cards[cards["kind"] != "named"]
        for column in ("correlation", "context_only_correlation", "effect_correlation"):
            cards[column] = pd.to_numeric(cards[column], errors="coerce")
        lexical = cards[cards["shares_token"].astype(str) == "True"].sort_values("correlation", ascending=False)
        contextual = cards.assign(kept=cards["context_only_correlation"] / cards["correlation"]).sort_values(
            "kept", ascending=False)
        surprising = cards[cards["kind"] == "surprising"]
        chosen = [("A lexical pair", lexical), ("A contextual pair", contextual), ("A surprising pair", surprising)]
        lines, described = [], set()

        def tokens(text):  # its three most frequent top tokens, most frequent first
            counts = pd.Series([token.strip() or repr(token) for token in str(text).split(" | ")]).value_counts(sort=True)
            return ", ".join(f"`{token}`" for token in counts.index[:3])

        for label, rows in chosen:
            rows = rows[[(row.feature_a, row.feature_b, row.layer_a, row.layer_b) not in described
                         for row in rows.itertuples()]]
            if not len(rows):
                continue
            row = rows.iloc[0]
            described.add((row.feature_a, row.feature_b, row.layer_a, row.layer_b))
            tokens_a, tokens_b = tokens(row.top_tokens_a), tokens(row.top_tokens_b)
            lines.append(
                f"- **{label}** ({row.kind} card, layers {row.layer_a} / {row.layer_b}, features {row.feature_a} / "
                f"{row.feature_b}): A fires most on {tokens_a}, B on {tokens_b}; correlation {_number(row.correlation)}, "
                f"{_number(row.context_only_correlation)} without the current token, and their effects on the "
                f"next-token loss correlate at {_number(row.effect_correlation)}.")
        return "\n".join(lines)

    return make


def rules_block(folder: str) -> Callable[[], str]:
    """One layer pair matched and scored under every one-to-one rule (`studies/rules.py`, `folder`/rules.tsv)."""

    def make() -> str:
        table = pd.read_csv(REPOSITORY / folder / "rules.tsv", sep="\t", keep_default_na=False,
                            na_values={column: [""] for column in ("mean_correlation",)})
        first = table.iloc[0]
        metrics = list(dict.fromkeys(table["metric"]))
        lines = [f"{first['model_a']} layer {first['layer_a']} / {first['model_b']} layer {first['layer_b']}, the "
                 f"matched under every rule with the run's other matching settings (its own rule: "
                 f"`{first['run_rule']}`). Cells: excess over chance [95% interval], * where p < 0.05 (one layer "
                 "pair, so nothing to adjust over):", "",
                 "| rule | candidates | kept pairs | mean correlation | same partner as the run's rule | "
                 + " | ".join(METRIC_NAMES.get(metric, metric) for metric in metrics) + " |",
                 "|" + "---|" * (5 + len(metrics))]
        for (rule, candidates), rows in table.groupby(["rule", "n_candidates"], sort=False):
            rows = rows.set_index("metric")
            head = rows.iloc[0]
            cells = [f"{_number(rows.loc[metric, 'excess'])}{'*' if rows.loc[metric, 'p'] < SIGNIFICANCE else ''} "
                     f"[{_number(rows.loc[metric, 'excess_ci_low'])}, {_number(rows.loc[metric, 'excess_ci_high'])}]"
                     for metric in metrics]
            lines.append(f"| {rule} | {candidates or 'n/a'} | {int(head['kept'])} | {head['mean_correlation']:.3f} | "
                         f"{int(head['same_partner_as_run_rule'])} | " + " | ".join(cells) + " |")
        overlap = sum(table[table["metric"] == metric]["excess_ci_low"].max()
                      <= table[table["metric"] == metric]["excess_ci_high"].min() for metric in metrics)
        significant = int(table.groupby(["rule", "n_candidates"])["p"].apply(lambda p: (p < SIGNIFICANCE).all()).sum())
        variants = table.groupby(["rule", "n_candidates"]).ngroups
        lines += ["", f"{significant} of {variants} rules give pairs above chance on every metric; the kept pairs "
                      f"run from {int(table['kept'].min())} to {int(table['kept'].max())}. The intervals of all "
                      f"{variants} rules share a common range on {overlap} of {len(metrics)} metrics."]
        return "\n".join(lines)

    return make


def seed_stability_block(folder: str) -> Callable[[], str]:
    """The block of a run's seed stability: per (model, layer), the second seed against the first by activation
    and by decoder direction, from `folder`'s quality.tsv and ceiling_matching.tsv."""

    def make() -> str:
        root = REPOSITORY / folder
        quality = pd.read_csv(root / "quality.tsv", sep="\t")
        matching = pd.read_csv(root / "ceiling_matching.tsv", sep="\t")
        lines = ["| model | layer | best-match activation correlation | mean decoder cosine (Hungarian) | "
                 "latents at cosine >= 0.7 |", "|---|---|---|---|---|"]
        second = quality[quality["fraction_shared"].notna()]
        for row in second.itertuples():
            found = matching[(matching["model_a"] == row.model) & (matching["layer_a"] == row.layer)]
            correlation = _number(float(found["mean_max_correlation"].iloc[0]), 2) if len(found) else "n/a"
            lines.append(f"| {row.model} | {row.layer} | {correlation} | {_number(row.decoder_cosine_mean, 2)} | "
                         f"{row.fraction_shared:.2%} |")
        return "\n".join(lines)

    return make


METRIC_NAMES = {"rsa": "RSA", "debiased_cka": "debiased CKA", "mutual_knn": "mutual kNN", "procrustes": "Procrustes",
                "heldout_svcca": "held-out SVCCA"}


def _thousands(tokens: float) -> str:
    return f"{tokens / 1000:.0f}k"


def _series(values, digits: int = 2, percent: bool = False) -> str:
    return ", ".join("n/a" if not np.isfinite(value) else f"{value:.{digits}%}" if percent else f"{value:.{digits}f}"
                     for value in np.asarray(values, dtype=float))


def _trend(values) -> str:
    """How a sequence moves (its defined values), in a word a sentence can carry: rises, falls, or moves (neither)."""
    values = np.asarray(values, dtype=float)
    steps = np.diff(values[np.isfinite(values)])
    return "rises" if (steps > 0).all() else "falls" if (steps < 0).all() else "moves"


def _metrics_of(summary: pd.DataFrame) -> list[str]:
    return [column.removeprefix("cross_").removesuffix("_significant") for column in summary
            if column.startswith("cross_") and column.endswith("_significant")]


def _budgets(summary: pd.DataFrame) -> tuple[int, pd.DataFrame]:
    """(the study's narrowest SAE width, its variants in order of training tokens): the budget axis."""
    width = int(summary["d_sae"].min())
    return width, summary[summary["d_sae"] == width].sort_values("training_tokens").reset_index(drop=True)


def _same_text(budgets: pd.DataFrame, tokens: float) -> pd.Series:
    """The budget whose training tokens are closest to `tokens`: what a wider variant is compared with."""
    return budgets.iloc[(budgets["training_tokens"] - tokens).abs().argmin()]


def _fraction_falls(before: pd.Series, after: pd.Series, metrics: list[str]) -> list[str]:
    """The metrics whose largest fraction of the seed-to-seed ceiling is smaller `after` than `before`."""
    return [metric for metric in metrics
            if after[f"cross_{metric}_best_normalized"] < before[f"cross_{metric}_best_normalized"]]


def _keeping_up(falls: list, metrics: list) -> str:
    """Whether the two models keep up with the seeds, in the words the tables allow."""
    if len(falls) == len(metrics):
        return "the two models do not keep up with the seeds"
    return f"the two models keep up on {len(metrics) - len(falls)} of {len(metrics)} metrics"


def scaling_findings(prefix: str) -> Callable[[], str]:
    """The scaling study's findings in words, every number from its committed tables at `prefix`
    (`<prefix>.tsv`, `.cross.tsv`): the budgets of the narrowest SAEs in order, then the width comparison."""
    def make() -> str:
        summary = pd.read_csv(REPOSITORY / f"{prefix}.tsv", sep="\t")
        cross = pd.read_csv(REPOSITORY / f"{prefix}.cross.tsv", sep="\t")
        cross = cross[~cross["model_b"].str.endswith("-rerandomized")]
        width, budgets = _budgets(summary)
        metrics = _metrics_of(summary)
        tokens = " to ".join(_thousands(value) for value in budgets["training_tokens"])
        lines = [f"From {tokens} training tokens per SAE ({width:,} latents):"]
        met = budgets[(budgets["loss_recovered_min"] >= 0.8) & (budgets["dead_fraction_max"] <= 0.1)]
        lines.append(
            f"- *SAE quality.* The worst loss recovered {_trend(budgets['loss_recovered_min'])}: "
            f"{_series(budgets['loss_recovered_min'])} (median {_series(budgets['loss_recovered_median'])}); the worst "
            f"FVU {_trend(budgets['fvu_max'])}: {_series(budgets['fvu_max'])}; the largest dead fraction is "
            f"{_series(budgets['dead_fraction_max'], 1, percent=True)}. Issue 12's targets (loss recovered >= 0.8 at "
            "every layer, dead <= 10%) are "
            + (f"met from {_thousands(met['training_tokens'].iloc[0])} on." if len(met) else "met by no budget."))
        agreement = budgets["seed_best_match_correlation"]
        lines.append(f"- *Seed agreement.* A feature's best match in the SAE's second seed correlates "
                     f"{_series(agreement)} on average ({_trend(agreement)} with the budget).")
        above = "; ".join(f"{METRIC_NAMES.get(metric, metric)} {', '.join(budgets[f'ceiling_{metric}_above_chance'])}"
                          for metric in metrics)
        excess = "; ".join(f"{METRIC_NAMES.get(metric, metric)} {_trend(budgets[f'ceiling_{metric}_excess'])} "
                           f"({_series(budgets[f'ceiling_{metric}_excess'], 3)})" for metric in metrics)
        lines.append(f"- *The ceiling.* Layers whose two seeds agree above chance: {above}. The ceiling's excess over "
                     f"chance, mean over layers: {excess}.")
        largest = "; ".join(f"{METRIC_NAMES.get(metric, metric)} {_trend(budgets[f'cross_{metric}_best_excess'])} "
                            f"({_series(budgets[f'cross_{metric}_best_excess'], 3)})" for metric in metrics)
        significant = "; ".join(f"{METRIC_NAMES.get(metric, metric)} {', '.join(budgets[f'cross_{metric}_significant'])}"
                                for metric in metrics)
        lines.append(f"- *Across the two models.* The largest excess over chance of any layer pair: {largest}. Layer "
                     f"pairs significant after adjustment: {significant}.")
        fractions = "; ".join(f"{METRIC_NAMES.get(metric, metric)} {_trend(budgets[f'cross_{metric}_best_normalized'])} "
                              f"({_series(budgets[f'cross_{metric}_best_normalized'])})" for metric in metrics)
        last, before = budgets.iloc[-1], budgets.iloc[-2]
        falls = [METRIC_NAMES.get(metric, metric) for metric in _fraction_falls(before, last, metrics)]
        svcca = cross[(cross["metric"] == "heldout_svcca") & (cross["d_sae"] == width)].dropna(subset=["normalized"])
        best = svcca.loc[svcca["normalized"].idxmax()]
        lines.append(
            f"- *Against the ceiling.* The largest fraction of the seed-to-seed ceiling of any layer pair: {fractions}. "
            f"From {_thousands(before['training_tokens'])} to {_thousands(last['training_tokens'])} the seeds agree "
            f"more ({before['seed_best_match_correlation']:.2f} to {last['seed_best_match_correlation']:.2f}) while "
            f"that fraction falls on {len(falls)} of {len(metrics)} metrics ({', '.join(falls) or 'none'}): "
            f"{_keeping_up(falls, metrics)}. The closest held-out SVCCA comes to its ceiling: {best['model_a']} {best['layer_a']} / {best['model_b']} "
            f"{best['layer_b']} at {_thousands(best['training_tokens'])}, observed {best['observed']:.2f} "
            f"[{best['ci_low']:.2f}, {best['ci_high']:.2f}], an excess over chance of {best['excess']:.2f}, and "
            f"{best['normalized']:.2f} [{best['normalized_ci_low']:.2f}, {best['normalized_ci_high']:.2f}] of its "
            "ceiling (the interval carries the ceiling's own).")
        for row in summary[summary["d_sae"] != width].itertuples():
            narrow = _same_text(budgets, row.training_tokens)
            row = row._asdict()
            compared = "; ".join(f"{METRIC_NAMES.get(metric, metric)} {row[f'cross_{metric}_best_excess']:.3f} against "
                                 f"{narrow[f'cross_{metric}_best_excess']:.3f}" for metric in metrics)
            lines += ["", f"**The width axis** ({row['d_sae']:,} latents at {_thousands(row['training_tokens'])} "
                          f"training tokens, against {width:,} at {_thousands(narrow['training_tokens'])}): the worst "
                          f"loss recovered {row['loss_recovered_min']:.2f} against {narrow['loss_recovered_min']:.2f} "
                          f"(median {row['loss_recovered_median']:.2f} against {narrow['loss_recovered_median']:.2f}), "
                          f"the worst FVU {row['fvu_max']:.2f} against {narrow['fvu_max']:.2f}, seed agreement "
                          f"{row['seed_best_match_correlation']:.2f} against {narrow['seed_best_match_correlation']:.2f}; "
                          f"the largest cross-model excesses: {compared}."]
        return "\n".join(lines)

    return make


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60))} s"


def _range(values, digits: int = 2) -> str:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    low, high = f"{values.min():.{digits}f}", f"{values.max():.{digits}f}"
    return low if low == high else f"{low}-{high}"


def _ceilings_above_chance(folder: Path, significance: float = SIGNIFICANCE) -> tuple[int, int]:
    """(layers whose two seeds agree above chance on every metric, layers)."""
    ceilings = pd.read_csv(folder / "ceilings.tsv", sep="\t")
    above = (ceilings["p"] < significance) & (ceilings["observed"] > ceilings["null_mean"])
    per_layer = above.groupby([ceilings["model"], ceilings["layer"]]).all()
    return int(per_layer.sum()), len(per_layer)


def default_run_block(folder: str) -> Callable[[], str]:
    """The default run's headline, from `folder` (docs/figures/default, written by `collect_default`): when and
    how long it ran, its SAEs' quality, the verdict's opening and each metric's best layer pair, and what the
    whole table says in numbers."""
    def make() -> str:
        root = REPOSITORY / folder
        run = pd.read_csv(root / "run.tsv", sep="\t").iloc[0]
        quality = pd.read_csv(root / "quality.tsv", sep="\t")
        matching = pd.read_csv(root / "ceiling_matching.tsv", sep="\t")
        scores = pd.read_csv(root / "scores.tsv", sep="\t")
        verdict = pd.read_csv(root / "verdict.tsv", sep="\t")
        timing = (f"`make run` on a fresh clone of commit {run['commit']} ({run['date']}, the 2-core VM, empty model "
                  f"cache): **{_minutes(run['make_run_seconds'])}** including `make install` and the report, the "
                  f"workflow itself {_minutes(run['workflow_seconds'])}." if np.isfinite(run["make_run_seconds"]) else
                  f"The workflow of commit {run['commit']} ({run['date']}) ran {_minutes(run['workflow_seconds'])}."
                  if np.isfinite(run["workflow_seconds"]) else
                  f"The workflow of commit {run['commit']} (finished {run['date']}, the 2-core VM) ran in stages over "
                  f"several sessions: {run['job_cpu_seconds'] / 3600:.1f} hours of job CPU, of which the forward passes "
                  f"{run['forward_cpu_seconds'] / 3600:.1f}.")
        lines = [timing, "", "| model | layer | loss recovered (seed 0 / 1) | held-out tokens behind it | dead latents "
                 "| FVU (seed 0 / 1) |", "|---|---|---|---|---|---|"]
        for (model, layer), seeds in quality.groupby(["model", "layer"], sort=False):
            seeds = seeds.sort_values("sae")
            dead = " / ".join("0" if value == 0 else f"{value:.2%}" for value in seeds["dead_fraction"])
            lines.append(f"| {model} | {layer} | {' / '.join(f'{v:.3f}' for v in seeds['fraction_recovered'])} | "
                         f"{int(seeds['loss_tokens'].iloc[0]):,} | {dead} | "
                         f"{' / '.join(f'{v:.3f}' for v in seeds['fvu'])} |")
        agree, layers = _ceilings_above_chance(root)
        lines += ["", f"At {agree} of {layers} layers the two seeds agree above chance on every metric; a feature's "
                      f"best match in its second seed correlates {_range(matching['mean_max_correlation'])} on average. "
                      "The verdict that opens the report:", ""]
        opening = (root / "verdict.md").read_text(encoding="utf-8").split("\n\n")[1:3]
        lines += ["> " + "\n>\n> ".join(opening), ""]
        lines += ["| metric | layer pair | pairs | observed [95% interval] | chance (null mean) | excess | z | adjusted p | "
                  "fraction of the seed-to-seed ceiling [95% interval] |", "|---|---|---|---|---|---|---|---|---|"]
        for row in verdict.itertuples():
            cell = scores[(scores["metric"] == row.metric) & (scores["layer_a"] == row.best_layer_a)
                          & (scores["layer_b"] == row.best_layer_b)].iloc[0]
            fraction = (f"{row.normalized:.2f} [{row.normalized_ci_low:.2f}, {row.normalized_ci_high:.2f}]"
                        if np.isfinite(row.normalized_ci_low) else _number(row.normalized, 2))
            lines.append(f"| {METRIC_NAMES.get(row.metric, row.metric)} | {row.best_layer_a} / {row.best_layer_b} | "
                         f"{int(cell['n_pairs'])} | {_number(row.observed)} [{_number(row.ci_low)}, {_number(row.ci_high)}] "
                         f"| {_number(row.null_mean, 3)} | {_number(row.excess)} | {row.z:.1f} | {row.p_adjusted:.2g} | "
                         f"{fraction} |")
        significant = scores["p_adjusted"] < SIGNIFICANCE
        cells = scores.groupby(["layer_a", "layer_b"]).ngroups
        valid = scores[scores["ceiling_valid"].astype(bool)]
        half_width = ((valid["normalized_ci_high"] - valid["normalized_ci_low"]) / 2).max()
        best_pairs = verdict.groupby(["best_layer_a", "best_layer_b"]).size().sort_values(ascending=False)
        (top_a, top_b), top_count = best_pairs.index[0], int(best_pairs.iloc[0])
        lines += ["", f"Over the whole table ({cells} layer pairs, {scores['metric'].nunique()} metrics): "
                      f"{int(significant.sum())} of {len(scores)} scores are significant after adjustment, with z "
                      f"{scores['z'].min():.1f} to {scores['z'].max():.1f} and adjusted p down to "
                      f"{scores['p_adjusted'].min():.2g}; the fractions of the seed-to-seed ceiling run "
                      f"{_range(valid['normalized'])} ({len(valid)} scores with a valid ceiling), their intervals up to "
                      f"±{half_width:.2f} wide; layers {top_a} / {top_b} are the best layer pair on {top_count} of "
                      f"{len(verdict)} metrics."]
        return "\n".join(lines)

    return make


def middle_cells(atlas: pd.DataFrame) -> pd.DataFrame:
    """Per model pair, the rows of its layer pair nearest the middle of both models (relative depth 0.5)."""
    distance = (atlas["relative_depth_a"] - 0.5).abs() + (atlas["relative_depth_b"] - 0.5).abs()
    chosen = (atlas.assign(distance=distance).groupby(["model_a", "model_b"], sort=False)["distance"].transform("min"))
    return atlas[distance == chosen].drop_duplicates(["model_a", "model_b", "metric"])


def _fraction_cell(row, prefix: str = "") -> str:
    value, low, high = (float(row[f"{prefix}normalized{suffix}"]) for suffix in ("", "_ci_low", "_ci_high"))
    if not np.isfinite(value):
        return "n/a"
    star = "*" if float(row[f"{prefix}p_adjusted"]) < SIGNIFICANCE else ""
    bounds = f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) and np.isfinite(high) else " [unbounded]"
    return f"{value:.2f}{star}{bounds}"


def atlas_pairs_block(folder: str) -> Callable[[], str]:
    """The atlas's model pairs side by side at their middle layers: the fraction of the seed-to-seed ceiling per
    metric (full codes, then context-only codes), and how the within-family pair stands among them."""

    def make() -> str:
        atlas = pd.read_csv(REPOSITORY / folder / "atlas.tsv", sep="\t")
        cells = middle_cells(atlas)
        order = list(METRIC_NAMES)
        metrics = sorted(set(cells["metric"]), key=lambda metric: (order.index(metric) if metric in order else len(order),
                                                                   metric))
        pairs = list(dict.fromkeys(zip(cells["model_a"], cells["model_b"])))
        lines = []
        for prefix, title in (("", "Fraction of the seed-to-seed ceiling [95% interval], * significant after "
                                    "adjustment:"),
                              ("context_only_", "The same for the context-only codes (token identity taken out):")):
            lines += [title, "", "| model pair | families | layers (relative depth) | "
                      + " | ".join(METRIC_NAMES.get(metric, metric) for metric in metrics) + " |",
                      "|" + "---|" * (3 + len(metrics))]
            for a, b in pairs:
                here = cells[(cells["model_a"] == a) & (cells["model_b"] == b)].set_index("metric")
                first = here.iloc[0]
                families = f"{first['family_a']} / {first['family_b']}" + (" (same)" if first["same_family"] else "")
                lines.append(f"| {a} / {b} | {families} | {int(first['layer_a'])} / {int(first['layer_b'])} "
                             f"({first['relative_depth_a']:.2f} / {first['relative_depth_b']:.2f}) | "
                             + " | ".join(_fraction_cell(here.loc[metric], prefix) if metric in here.index else "n/a"
                                          for metric in metrics) + " |")
            lines.append("")
        lines += _atlas_lexical_lines(REPOSITORY / folder, cells, pairs, metrics)
        same = cells[cells["same_family"].astype(bool)]
        if len(same):
            largest = apart = 0
            for metric in metrics:
                rows = cells[cells["metric"] == metric]
                within = rows[rows["same_family"].astype(bool)].iloc[0]
                others = rows[~rows["same_family"].astype(bool)]
                largest += int(within["normalized"] >= others["normalized"].max())
                apart += int((within["normalized_ci_low"] > others["normalized_ci_high"]).all())
            pair = f"{same['model_a'].iloc[0]} / {same['model_b'].iloc[0]}"
            lines.append(f"The within-family pair ({pair}) has the largest fraction of its ceiling of the "
                         f"{len(pairs)} pairs on {largest} of {len(metrics)} metrics; its interval lies above every "
                         f"cross-family pair's on {apart} of {len(metrics)}.")
            kept = cells.groupby(["model_a", "model_b"], sort=False).agg(n_pairs=("n_pairs", "first"),
                                                                         same=("same_family", "first"))
            within_kept, others = (kept.loc[kept["same"].astype(bool), "n_pairs"].iloc[0],
                                   kept.loc[~kept["same"].astype(bool), "n_pairs"])
            excess_largest = sum(int(rows.loc[rows["same_family"].astype(bool), "excess"].iloc[0] >= rows["excess"].max())
                                 for _, rows in cells.groupby("metric"))
            lines.append(f"At these layers it keeps {int(within_kept):,} "
                         f"matched pairs, the cross-family pairs {int(others.min()):,}-{int(others.max()):,}; its "
                         f"excess over chance is the largest of the {len(pairs)} on {excess_largest} of "
                         f"{len(metrics)} metrics.")
        return "\n".join(lines).rstrip()

    return make


def _atlas_lexical_lines(root: Path, cells: pd.DataFrame, pairs: list, metrics: list) -> list[str]:
    """The lexical floor of each pair at the layers `cells` chose, from `{a}--{b}.lexical_scores.tsv`: its excess
    over chance as a share of the full excess, whether it is significant, whether the full excess clears it."""
    significant = clear = scored = 0
    lines = ["What token identity alone gives (the lexical floor: each model's activations replaced by their "
             "per-token means, through the same SAEs): its excess over chance as a share of the full result's, * "
             "significant after adjustment, and \"clear\" where the full excess lies above it (intervals apart):", "",
             "| model pair | layers | " + " | ".join(METRIC_NAMES.get(metric, metric) for metric in metrics) + " |",
             "|" + "---|" * (2 + len(metrics))]
    for a, b in pairs:
        path = root / f"{a}--{b}.lexical_scores.tsv"
        if not path.is_file():
            continue
        first = cells[(cells["model_a"] == a) & (cells["model_b"] == b)].iloc[0]
        floor = pd.read_csv(path, sep="\t")
        floor = floor[(floor["layer_a"] == first["layer_a"]) & (floor["layer_b"] == first["layer_b"])]
        floor = floor.assign(clear=excess_intervals_apart(floor)).set_index("metric")
        significant += int((floor["p_adjusted"] < SIGNIFICANCE).sum())
        clear, scored = clear + int(floor["clear"].sum()), scored + len(floor)
        lines.append(f"| {a} / {b} | {int(first['layer_a'])} / {int(first['layer_b'])} | " + " | ".join(
            (f"{floor.loc[metric, 'excess_surviving']:.2f}{'*' if floor.loc[metric, 'p_adjusted'] < SIGNIFICANCE else ''}"
             f"{' clear' if floor.loc[metric, 'clear'] else ''}") if metric in floor.index else "n/a"
            for metric in metrics) + " |")
    if scored:
        lines += ["", f"The floor is significant in {significant} of these {scored} scores; the full excess clears it "
                      f"in {clear} of {scored}."]
    return lines + [""]


def atlas_depth_block(folder: str) -> Callable[[], str]:
    """The depth profile of the atlas's depth pair on each scale: per metric the best layers, the rank trend and
    its exact p (and Holm's over the metrics), then how many metrics follow depth on each scale."""

    def make() -> str:
        from .depth import SCALES

        root = REPOSITORY / folder
        trend = pd.read_csv(root / "depth_trend.tsv", sep="\t")
        profile = pd.read_csv(root / "depth.tsv", sep="\t")
        a, b = trend["model_a"].iloc[0], trend["model_b"].iloc[0]
        lines = [f"| scale | metric | best layer of {b} for each layer of {a} | Spearman (depth of {a}, depth of best "
                 f"{b}) | one-sided p (exact) | Holm over the metrics | mean distance in relative depth | layers of {b} "
                 "not distinguishable from the best (mean) |",
                 "|---|---|---|---|---|---|---|---|"]
        for row in trend.itertuples():
            best = profile[(profile["scale"] == row.scale) & (profile["metric"] == row.metric)].sort_values("layer_a")
            chosen = ", ".join(f"{int(r.layer_a)}→{int(r.best_layer_b)}" for r in best.itertuples())
            lines.append(f"| {SCALES[row.scale]} | {METRIC_NAMES.get(row.metric, row.metric)} | {chosen} | "
                         f"{_number(row.spearman, 2)} | {row.p_one_sided:.2g} | {row.p_adjusted:.2g} | "
                         f"{row.mean_abs_offset:.2f} | {best['plausible_layers_b'].mean():.1f} |")
        lines.append("")
        for scale, rows in trend.groupby("scale", sort=False):
            following = rows[(rows["p_adjusted"] < SIGNIFICANCE) & (rows["spearman"] > 0)]
            best_layers = profile[profile["scale"] == scale].groupby("metric")["best_layer_b"].nunique()
            fixed = int((best_layers == 1).sum())
            lines.append(f"- On the {SCALES[scale]}: on {len(following)} of {len(rows)} metrics the most similar layer "
                         f"of {b} goes deeper as {a}'s layer does (Holm-adjusted one-sided p < {SIGNIFICANCE:g}, exact "
                         f"over the orderings of {a}'s {int(rows['n_layers_a'].max())} layers)"
                         + (f"; on {fixed} the same layer of {b} is the best for every layer of {a}" if fixed else "")
                         + ".")
        return "\n".join(lines)

    return make


def atlas_run_block(folder: str) -> Callable[[], str]:
    """The atlas run's record: commit, CPU in all and of the forward passes, and each model's SAE quality."""

    def make() -> str:
        root = REPOSITORY / folder
        run = pd.read_csv(root / "run.tsv", sep="\t").iloc[0]
        quality = pd.read_csv(root / "quality.tsv", sep="\t")
        ratio = run["job_cpu_seconds"] / run["forward_cpu_seconds"]
        lines = [f"Commit {run['commit']} (finished {run['date']}, the 2-core VM), run in stages: "
                 f"{run['job_cpu_seconds'] / 3600:.1f} hours of job CPU, of which the forward passes "
                 f"{run['forward_cpu_seconds'] / 3600:.1f}: a ratio of {ratio:.2f} "
                 f"(goal 2: {'met' if ratio <= 2 else 'not met'}).", "",
                 "| model | layers | latents | loss recovered | FVU | dead latents (largest) |", "|---|---|---|---|---|---|"]
        for model, rows in quality.groupby("model", sort=False):
            lines.append(f"| {model} | {', '.join(str(layer) for layer in sorted(set(rows['layer'])))} | "
                         f"{int(rows['d_sae'].iloc[0]):,} | {_range(rows['fraction_recovered'])} | "
                         f"{_range(rows['fvu'])} | {rows['dead_fraction'].max():.2%} |")
        return "\n".join(lines)

    return make


def readme_default_block(folder: str) -> Callable[[], str]:
    """The README's first claim about the default run, its numbers from `folder`."""
    def make() -> str:
        root = REPOSITORY / folder
        quality = pd.read_csv(root / "quality.tsv", sep="\t")
        scores = pd.read_csv(root / "scores.tsv", sep="\t")
        agree, layers = _ceilings_above_chance(root)
        per_cell = (scores["p_adjusted"] < SIGNIFICANCE).groupby([scores["layer_a"], scores["layer_b"]]).sum()
        n_metrics = scores["metric"].nunique()
        dead = quality["dead_fraction"].max()
        return ("- It can show that the two models' SAE features are similar beyond chance at\n"
                "  these layers, with SAEs good enough to trust the comparison: every SAE recovers\n"
                f"  at least {quality['fraction_recovered'].min():.2f} of the downstream loss on at least "
                f"{int(quality['loss_tokens'].min()):,} held-out tokens,\n"
                + ("  none has dead latents" if dead == 0 else f"  at most {dead:.2%} of latents are dead")
                + f", at {agree} of {layers} layers the two seeds agree above chance on every metric,\n"
                f"  and {int((per_cell == n_metrics).sum())} of {len(per_cell)} layer pairs are significant on all "
                f"{n_metrics} metrics.")

    return make


def _whole_sample_bullet(folder: Path) -> list[str]:
    """The README's lines on the controls run on the whole sample."""
    summary = _control_summary(folder)
    residual = _residual_wide(pd.read_csv(folder / "residual_streams.tsv", sep="\t"))
    higher = int((residual["token_means"] > residual["aligned"]).sum())
    return [f"- On the whole sample ({_thousands(summary['tokens'])} training tokens per SAE, the default's SAE size) "
            "the same controls give:",
            f"  the lexical floor is above chance in {summary['lexical_significant']} of {summary['lexical_scores']} "
            f"scores and the full excess clear of it in {summary['clear']} of {summary['lexical_scores']}; without "
            f"the token, {summary['context_significant']} of {summary['layer_pairs']} layer pairs",
            f"  still match significantly; and before any SAE, the per-token means of the two residual streams are "
            f"more alike than the streams in {higher} of {len(residual)} cells (docs/results.md)."]


def readme_function_block(default: str, whole: str) -> Callable[[], str]:
    """The README's bullet on the causal check: the default run's and the whole sample's functional agreement."""

    def make() -> str:
        small, large = _function_summary(REPOSITORY / default), _function_summary(REPOSITORY / whole)
        return (f"- Do matched pairs do the same job? Their first-order effects on the next-token loss agree above "
                f"random pairings at {small['above']} of {small['cells']} layer pairs, weakly: correlation "
                f"{_range(small['effect'], 3)} (activations {_range(small['activation'], 2)} on the same positions), "
                f"against a seed-to-seed ceiling of {_range(small['ceiling'], 3)}; on the whole sample "
                f"{_range(large['effect'], 3)} against {_range(large['ceiling'], 2)}, with "
                f"{_range(100 * large['share'], 0)}% of the pairs agreeing on their own (docs/results.md).")

    return make


def readme_effects_block(default: str, reference: str, whole: str) -> Callable[[], str]:
    """The README's bullets on the size of the effects: the default run's (`default`), the controls on the whole
    sample (`whole`) and the reference experiment's (`reference`, with its floor run in `reference`/floor)."""
    def make() -> str:
        root, large = REPOSITORY / default, REPOSITORY / reference
        scores = pd.read_csv(root / "scores.tsv", sep="\t")
        semantic = pd.read_csv(root / "semantic.tsv", sep="\t")
        valid = scores[scores["ceiling_valid"].astype(bool)]
        half_width = ((valid["normalized_ci_high"] - valid["normalized_ci_low"]) / 2).max()
        rsa = scores[scores["metric"] == "rsa"]["observed"]
        scored = semantic["observed"].notna().sum() if "observed" in semantic else 0
        floor = pd.read_csv(large / "floor" / "matching.tsv", sep="\t")
        rerandomized = floor["model_b"].str.endswith("-rerandomized")
        quality = pd.read_csv(large / "quality.tsv", sep="\t")
        table = pd.read_csv(large / "table.tsv", sep="\t")
        metrics = [column.removesuffix("_p_adjusted") for column in table if column.endswith("_p_adjusted")]
        everywhere = int((table[[f"{metric}_p_adjusted" for metric in metrics]] < SIGNIFICANCE).all(axis=1).sum())
        at_ten = table[table["layer_b"] == 10]["heldout_svcca_normalized"]
        lexical = pd.read_csv(root / "lexical_scores.tsv", sep="\t")
        context = pd.read_csv(root / "context_only_scores.tsv", sep="\t")
        clear = int(excess_intervals_apart(lexical).sum())
        surviving = context.groupby(["layer_a", "layer_b"])["significant"].any()
        share = float(lexical["excess_surviving"].median())
        # The words follow the median share of the full excess that token identity alone gives.
        much = "Most of it" if share >= 0.5 else "A good part of it" if share >= 0.2 else "Little of it"
        return "\n".join([
            f"- {much} is token identity: with each model's activations replaced by",
            f"  their per-token means (the lexical floor), {int(lexical['significant'].sum())} of {len(lexical)} "
            f"scores are still above chance, at",
            f"  {_range(lexical['excess_surviving'])} of the full excess, and the full excess stands clear of the "
            f"floor's in {clear} of {len(lexical)};",
            f"  with the token taken out of the codes, {int(surviving.sum())} of {len(surviving)} layer pairs "
            "still match significantly (docs/results.md).",
            f"- Its effects are small in absolute terms (RSA {_range(rsa)}) and its intervals",
            f"  wide (fractions of the seed-to-seed ceiling of {_range(valid['normalized'], 1)}, give or take up to "
            f"{half_width:.1f});",
            "  its semantic categories hold too few pairs to score." if scored == 0 else
            f"  {scored} semantic-category scores.",
            *_whole_sample_bullet(REPOSITORY / whole),
            "- The reference experiment (`presets/reference.yaml`: the whole Wikipedia sample,",
            "  about 750k tokens, two seeds of 8,192-latent SAEs; about 4 CPU-hours) is the",
            "  project's measured answer at a larger scale: every SAE recovers",
            f"  {_range(quality['fraction_recovered'])} of the loss, {everywhere} of {len(table)} layer pairs are "
            f"significant on all {len(metrics)} metrics,",
            f"  and held-out SVCCA reaches {_range(at_ten)} of the seed-to-seed ceiling at Gemma-3 layer 10;",
            "  its re-randomized floor keeps "
            f"{_range(floor[rerandomized]['n_after_threshold'], 0)} matched pairs per layer pair against "
            f"{_range(floor[~rerandomized]['n_after_threshold'], 0)}",
            "  for the real pair (docs/results.md)."])

    return make


def readme_scaling_block(prefix: str) -> Callable[[], str]:
    """The README's scaling paragraph, every number from the study's tables at `prefix`."""
    def make() -> str:
        summary = pd.read_csv(REPOSITORY / f"{prefix}.tsv", sep="\t")
        quality = pd.read_csv(REPOSITORY / f"{prefix}.quality.tsv", sep="\t")
        cross = pd.read_csv(REPOSITORY / f"{prefix}.cross.tsv", sep="\t")
        ceilings = pd.read_csv(REPOSITORY / f"{prefix}.ceilings.tsv", sep="\t")
        width, budgets = _budgets(summary)
        metrics = _metrics_of(summary)

        def about(tokens):
            return f"{round(tokens, -3):,.0f}"

        def recovered(row):
            values = quality[quality["variant"] == row["variant"]]["fraction_recovered"]
            return values.min(), values.max()

        def ceilings_above(row):
            own = ceilings[ceilings["variant"] == row["variant"]]
            above = (own["p"] < SIGNIFICANCE) & (own["observed"] > own["null_mean"])
            return f"{int(above.sum())} of {len(own)} seed-to-seed ceilings (layer and metric) are above chance"

        def all_metrics(row):
            own = cross[(cross["variant"] == row["variant"]) & ~cross["model_b"].str.endswith("-rerandomized")]
            per_cell = (own["p_adjusted"] < SIGNIFICANCE).groupby([own["layer_a"], own["layer_b"]]).sum()
            return (f"{int((per_cell == own['metric'].nunique()).sum())} of {len(per_cell)} layer pairs of the two "
                    f"models are significantly similar on all {own['metric'].nunique()} metrics")

        first, second, third, last = (budgets.iloc[index] for index in (0, 1, 2, -1))
        low, high = recovered(first)
        before = cross[cross["variant"] == third["variant"]].set_index(["metric", "layer_a", "layer_b"])
        after = cross[cross["variant"] == last["variant"]].set_index(["metric", "layer_a", "layer_b"])
        falls = int((after["excess"] < before["excess"].reindex(after.index)).sum())
        fraction_falls = _fraction_falls(third, last, metrics)
        agree = "more" if last["seed_best_match_correlation"] > third["seed_best_match_correlation"] else "less"
        text = (f"With {width:,}-latent SAEs: at about {about(first['training_tokens'])} training tokens per SAE they "
                f"recover {low:.2f}-{high:.2f} of the loss and {ceilings_above(first)}; at about "
                f"{about(second['training_tokens'])} {ceilings_above(second)}, the worst SAE recovers "
                f"{recovered(second)[0]:.2f} of the loss, and {all_metrics(second)}; at about "
                f"{about(third['training_tokens'])} every SAE recovers at least {recovered(third)[0]:.2f} of the "
                f"loss; on the whole Wikipedia sample ({about(last['training_tokens'])} per SAE) at least "
                f"{recovered(last)[0]:.2f}. From {about(third['training_tokens'])} to {about(last['training_tokens'])} "
                f"the two seeds agree {agree} (best-match correlation {third['seed_best_match_correlation']:.2f} to "
                f"{last['seed_best_match_correlation']:.2f}), and {_keeping_up(fraction_falls, metrics)}: the excess "
                f"over chance falls in {falls} of the {len(after)} cross-model cells, and the largest fraction of the "
                f"seed-to-seed ceiling falls on {len(fraction_falls)} of {len(metrics)} metrics "
                "(docs/figures/scaling.cross.tsv).")
        for row in summary[summary["d_sae"] != width].itertuples():
            narrow = _same_text(budgets, row.training_tokens)
            worse = row.loss_recovered_min < narrow["loss_recovered_min"]
            times = {2: "Twice", 3: "Three times", 4: "Four times", 8: "Eight times"}.get(row.d_sae // width,
                                                                                          f"{row.d_sae // width} times")
            text += (f" {times} the latents at the same text ({row.d_sae:,}) make the SAEs "
                     f"{'worse' if worse else 'better'} (worst loss recovered {row.loss_recovered_min:.2f} against "
                     f"{narrow['loss_recovered_min']:.2f}).")
        import textwrap

        return "\n".join(textwrap.wrap(text, 80))

    return make


def readme_timing_block(folder: str) -> Callable[[], str]:
    """The README's measured `make run`, from the default run's record (`collect_default`)."""
    def make() -> str:
        run = pd.read_csv(REPOSITORY / folder / "run.tsv", sep="\t").iloc[0]
        return (f"`make run` on a fresh clone of commit {run['commit']} ({run['date']}, the 2-core VM, empty model "
                f"cache): {_minutes(run['make_run_seconds'])} with `make install` and the report, the Snakemake run "
                f"{_minutes(run['workflow_seconds'])}, every control of the default included. Its jobs took "
                f"{run['job_cpu_seconds']:,.0f} s of CPU, the forward passes {run['forward_cpu_seconds']:,.0f} s of "
                f"it: a ratio of {run['job_cpu_seconds'] / run['forward_cpu_seconds']:.2f} "
                f"(`bench_pipeline_overhead.py`; goal 2).")

    return make


@dataclass(frozen=True)
class Block:
    """A generated block: what makes it, and the tables it reads (for the error message)."""

    make: Callable[[], str]
    tables: tuple[str, ...]


def file_block(path: str) -> Callable[[], str]:
    """A block that is a committed file's text as it is (e.g. a study's Markdown table)."""
    return lambda: (REPOSITORY / path).read_text(encoding="utf-8").rstrip("\n")


BLOCKS = {
    "default-run": Block(default_run_block("docs/figures/default"),
                         tuple(f"docs/figures/default/{name}" for name in ("run.tsv", "quality.tsv", "ceilings.tsv",
                                                                          "ceiling_matching.tsv", "verdict.md",
                                                                          "verdict.tsv", "scores.tsv"))),
    "readme-default": Block(readme_default_block("docs/figures/default"),
                            tuple(f"docs/figures/default/{name}" for name in ("quality.tsv", "ceilings.tsv",
                                                                             "scores.tsv"))),
    "readme-effects": Block(readme_effects_block("docs/figures/default", "docs/figures/reference",
                                                 "docs/figures/whole"),
                            ("docs/figures/default/scores.tsv", "docs/figures/default/semantic.tsv",
                             "docs/figures/whole/lexical_scores.tsv", "docs/figures/whole/residual_streams.tsv",
                             "docs/figures/default/lexical_scores.tsv", "docs/figures/default/context_only_scores.tsv",
                             "docs/figures/reference/quality.tsv", "docs/figures/reference/table.tsv",
                             "docs/figures/reference/floor/matching.tsv")),
    "readme-scaling": Block(readme_scaling_block("docs/figures/scaling"),
                            tuple(f"docs/figures/scaling{suffix}.tsv" for suffix in ("", ".quality", ".cross",
                                                                                   ".ceilings"))),
    "readme-function": Block(readme_function_block("docs/figures/default", "docs/figures/whole"),
                             ("docs/figures/default/function.tsv", "docs/figures/whole/function.tsv")),
    "readme-timing": Block(readme_timing_block("docs/figures/default"), ("docs/figures/default/run.tsv",)),
    "scaling-table": Block(file_block("docs/figures/scaling.md"), ("docs/figures/scaling.md",)),
    "scaling-findings": Block(scaling_findings("docs/figures/scaling"),
                              ("docs/figures/scaling.tsv", "docs/figures/scaling.cross.tsv")),
    "atlas-run": Block(atlas_run_block("docs/figures/atlas"),
                       ("docs/figures/atlas/run.tsv", "docs/figures/atlas/quality.tsv")),
    "atlas-pairs": Block(atlas_pairs_block("docs/figures/atlas"), ("docs/figures/atlas/atlas.tsv",)),
    "atlas-depth": Block(atlas_depth_block("docs/figures/atlas"),
                         ("docs/figures/atlas/depth.tsv", "docs/figures/atlas/depth_trend.tsv")),
    "controls-default": Block(controls_block("docs/figures/default"),
                              ("docs/figures/default/controls.tsv", "docs/figures/default/context_only_scores.tsv")),
    "whole-run": Block(default_run_block("docs/figures/whole"),
                       tuple(f"docs/figures/whole/{name}" for name in ("run.tsv", "quality.tsv", "ceilings.tsv",
                                                                      "ceiling_matching.tsv", "verdict.md",
                                                                      "verdict.tsv", "scores.tsv"))),
    "controls-whole": Block(controls_block("docs/figures/whole"),
                            ("docs/figures/whole/controls.tsv", "docs/figures/whole/context_only_scores.tsv")),
    "function-default": Block(function_block("docs/figures/default"),
                              ("docs/figures/default/function.tsv", "docs/figures/default/causal_agreement.tsv")),
    "function-whole": Block(function_block("docs/figures/whole"),
                            ("docs/figures/whole/function.tsv", "docs/figures/whole/causal_agreement.tsv")),
    "function-comparison": Block(function_comparison_block("docs/figures/default", "docs/figures/whole"),
                                 ("docs/figures/default/function.tsv", "docs/figures/whole/function.tsv",
                                  "docs/figures/default/quality.tsv", "docs/figures/whole/quality.tsv")),
    "cards-default": Block(cards_words_block("docs/figures/default"), ("docs/figures/default/cards.tsv",)),
    "residual-whole": Block(residual_block("docs/figures/whole"), ("docs/figures/whole/residual_streams.tsv",)),
    "controls-comparison": Block(controls_comparison_block("docs/figures/default", "docs/figures/whole"),
                                 tuple(f"docs/figures/{run}/{name}" for run in ("default", "whole")
                                       for name in ("controls.tsv", "context_only_scores.tsv", "lexical_scores.tsv",
                                                    "run.tsv"))),
    "rules-default": Block(rules_block("docs/figures/default"), ("docs/figures/default/rules.tsv",)),
    "seed-stability-default": Block(seed_stability_block("docs/figures/default"),
                                    ("docs/figures/default/quality.tsv", "docs/figures/default/ceiling_matching.tsv")),
}


def _pattern(name: str) -> re.Pattern:
    # The content is every line between the markers (none in a block never generated).
    return re.compile(rf"(<!-- generated: {re.escape(name)} -->\n)(.*?)(<!-- end generated: {re.escape(name)} -->)",
                      re.S)


def stale_blocks(text: str) -> list[str]:
    """Names of the generated blocks of `text` whose content differs from what their tables give."""
    stale = []
    for name, block in BLOCKS.items():
        match = _pattern(name).search(text)
        if match and match.group(2) != block.make() + "\n":
            stale.append(name)
    return stale


def regenerate(text: str) -> str:
    """`text` with every generated block rewritten from its tables."""
    for name, block in BLOCKS.items():
        text = _pattern(name).sub(lambda match: match.group(1) + block.make() + "\n" + match.group(3), text)
    return text


DEFAULT_FOLDER = REPOSITORY / "docs" / "figures" / "default"
PAIR = "smollm2--gemma3"
RUN_FILES = {
    "quality.tsv": "results/saes/quality.tsv",
    "table.tsv": f"results/similarity/{PAIR}/table.tsv",
    "scores.tsv": f"results/similarity/{PAIR}/scores.tsv",
    "controls.tsv": f"results/similarity/{PAIR}/controls.tsv",
    "context_only_scores.tsv": f"results/similarity/{PAIR}/context_only_scores.tsv",
    "untrained_scores.tsv": f"results/similarity/{PAIR}/untrained_scores.tsv",
    "lexical_scores.tsv": f"results/similarity/{PAIR}/lexical_scores.tsv",
    "alignment.tsv": f"results/alignment/{PAIR}.tsv",
    "heatmaps.png": f"results/similarity/{PAIR}/heatmaps.png",
    "heatmaps_raw.png": f"results/similarity/{PAIR}/heatmaps_raw.png",
    "semantic.tsv": f"results/similarity/{PAIR}/semantic.tsv",
    "verdict.md": "results/verdict.md",
    "verdict.tsv": "results/verdict.tsv",
    "residual_streams.tsv": f"results/similarity/{PAIR}/residual_streams.tsv",
    "function.tsv": f"results/causal/{PAIR}/function.tsv",
}
"""What `collect_run` copies from a finished run where it exists: docs file -> run file."""
WHOLE_FOLDER = REPOSITORY / "docs" / "figures" / "whole"
CEILING_FILES = {"ceilings.tsv": "layer*[0-9].tsv", "ceiling_matching.tsv": "layer*.summary.tsv",
                 "context_only_ceilings.tsv": "layer*.context_only.tsv"}
"""The ceiling tables, one per (model, layer) in the run, concatenated: docs file -> pattern."""


def workflow_seconds(run: Path) -> float:
    """Wall time of a run's workflow: from the first Snakemake log's first timestamp to the last log's last one."""
    import datetime

    stamps = []
    for log in sorted((run / ".snakemake" / "log").glob("*.snakemake.log")):
        found = re.findall(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", log.read_text(), re.M)
        stamps += [datetime.datetime.strptime(stamp, "%a %b %d %H:%M:%S %Y") for stamp in found]
    return (max(stamps) - min(stamps)).total_seconds() if stamps else float("nan")


def job_cpu(run: Path) -> tuple[float, float]:
    """(CPU seconds of every job, of the forward passes) from the benchmark file each job writes."""
    total = forward = 0.0
    root = run / "results" / "benchmarks"
    for path in root.rglob("*.tsv"):
        cpu = float(pd.read_csv(path, sep="\t")["cpu_time"].iloc[0])
        total += cpu
        forward += cpu if path.relative_to(root).parts[0] == "cache_activations" else 0.0
    return total, forward


def collect_run(run: Path, folder: Path, make_seconds: float | None = None, source: Path | None = None,
                staged: bool = False) -> pd.DataFrame:
    """Copy a finished run's tables and figures into `folder`, with `run.tsv`: the commit it ran (the HEAD of
    `source`, its code's git checkout, default the run folder), the date of its last log, the workflow's wall
    time from its logs (NaN for a `staged` run, which ran in stages over several sessions), the job CPU in all
    and of the forward passes, and, when given, the whole `make run`'s wall time (measured outside)."""
    import shutil

    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    for name, path in RUN_FILES.items():
        if (run / path).is_file():
            shutil.copyfile(run / path, folder / name)
    for name, pattern in CEILING_FILES.items():
        tables = [pd.read_csv(path, sep="\t") for path in sorted((run / "results/similarity/ceiling").glob(f"*/{pattern}"))]
        pd.concat(tables, ignore_index=True).to_csv(folder / name, sep="\t", index=False)
    agreements = [pd.read_csv(path, sep="\t") for path in sorted((run / "results/causal").glob("*/agreement.tsv"))]
    if agreements:
        pd.concat(agreements, ignore_index=True).to_csv(folder / "causal_agreement.tsv", sep="\t", index=False)
    cards = card_table(run)
    if len(cards):
        cards.to_csv(folder / "cards.tsv", sep="\t", index=False)
    commit = _commit_of(source or run)
    logs = sorted((run / ".snakemake" / "log").glob("*.snakemake.log"))
    epochs = yaml.safe_load((run / "config.yaml").read_text())["saes"]["train"]["epochs"]
    # Positions each SAE trained on per epoch (its curve's last count over the epochs), the median over SAEs.
    per_epoch = [pd.read_csv(curve, sep="\t")["tokens"].iloc[-1] / epochs
                 for curve in (run / "results" / "saes").glob("*/layer*/seed*.curve.tsv")]
    total_cpu, forward_cpu = job_cpu(run)
    record = pd.DataFrame([{"commit": commit, "date": (logs[-1] if staged else logs[0]).name[:10] if logs else "",
                            "training_tokens": float(np.median(per_epoch)) if per_epoch else np.nan,
                            "workflow_seconds": np.nan if staged else workflow_seconds(run),
                            "make_run_seconds": np.nan if make_seconds is None else make_seconds,
                            "job_cpu_seconds": total_cpu, "forward_cpu_seconds": forward_cpu}])
    record.to_csv(folder / "run.tsv", sep="\t", index=False)
    return record


def card_table(run: Path, pair: str = PAIR) -> pd.DataFrame:
    """The feature cards of a run's pair, one row each: what cards.json says, with both features' top tokens
    from the match table and whether they share one."""
    import json

    from ..tokens import shares_a_token

    rows = []
    for listing in sorted((run / "results" / "cards" / pair).glob("layer*--layer*/cards.json")):
        cards = json.loads(listing.read_text())
        layers = listing.parent.name
        table = pd.read_csv(run / "results" / "matching" / pair / f"{layers}.tsv", sep="\t", keep_default_na=False)
        tokens_a = dict(zip(table["final_a"], table["top_tokens_a"]))
        tokens_b = dict(zip(table["feature_b"], table["top_tokens_b"]))
        for card in cards["cards"]:
            a, b = str(tokens_a.get(card["feature_a"], "")), str(tokens_b.get(card["feature_b"], ""))
            rows.append({"layer_a": cards["layer_a"], "layer_b": cards["layer_b"], "kind": card["kind"],
                         "feature_a": card["feature_a"], "feature_b": card["feature_b"],
                         "correlation": card["correlation"], "rank": card.get("rank_among_candidates"),
                         "context_only_correlation": card.get("context_only_correlation"),
                         "effect_correlation": card.get("effect_correlation"), "top_tokens_a": a, "top_tokens_b": b,
                         "shares_token": shares_a_token(a.split(" | "), b.split(" | "))})
    return pd.DataFrame(rows)


ATLAS_FOLDER = REPOSITORY / "docs" / "figures" / "atlas"


def collect_atlas(run: Path, source: Path | None = None, folder: Path = ATLAS_FOLDER) -> pd.DataFrame:
    """Copy a finished atlas run's tables and figures into `folder` (docs/figures/atlas): the atlas, the depth
    profile of the pair that has one, SAE quality, every pair's scores and controls (`{a}--{b}.scores.tsv`,
    `.controls.tsv`, `.context_only_scores.tsv`), the verdict, and `run.tsv` (as `collect_run` writes it)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("atlas.tsv", "atlas.png"):
        shutil.copyfile(run / "results" / "atlas" / name, folder / name)
    depth = sorted((run / "results" / "similarity").glob("*/depth.tsv"))
    for path in depth[:1]:
        for name in ("depth.tsv", "depth_trend.tsv", "depth.png"):
            shutil.copyfile(path.parent / name, folder / name)
    for pair in sorted(path for path in (run / "results" / "similarity").iterdir() if "--" in path.name):
        for name in ("scores.tsv", "controls.tsv", "context_only_scores.tsv", "lexical_scores.tsv"):
            if (pair / name).is_file():
                shutil.copyfile(pair / name, folder / f"{pair.name}.{name}")
    for name, path in (("quality.tsv", "results/saes/quality.tsv"), ("verdict.md", "results/verdict.md"),
                       ("verdict.tsv", "results/verdict.tsv"), ("training_curves.png", "results/saes/training_curves.png")):
        shutil.copyfile(run / path, folder / name)
    commit = _commit_of(source or run)
    logs = sorted((run / ".snakemake" / "log").glob("*.snakemake.log"))
    total_cpu, forward_cpu = job_cpu(run)
    record = pd.DataFrame([{"commit": commit, "date": logs[-1].name[:10] if logs else "",
                            "job_cpu_seconds": total_cpu, "forward_cpu_seconds": forward_cpu}])
    record.to_csv(folder / "run.tsv", sep="\t", index=False)
    return record


def _commit_of(checkout: Path) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "unknown"


def collect_default(run: Path, make_seconds: float | None = None, folder: Path = DEFAULT_FOLDER) -> pd.DataFrame:
    """`collect_run` of a finished default run into docs/figures/default."""
    return collect_run(run, folder, make_seconds)


def docs_command(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sae_universality.report.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale blocks (exit 1 if any)")
    parser.add_argument("--collect-default", type=Path, metavar="RUN",
                        help="first copy a finished default run's tables into docs/figures/default")
    parser.add_argument("--make-seconds", type=float, help="with --collect-default: the whole make run's wall time")
    parser.add_argument("--collect-whole", type=Path, metavar="RUN",
                        help="first copy the finished whole-sample run's tables into docs/figures/whole")
    parser.add_argument("--collect-atlas", type=Path, metavar="RUN",
                        help="first copy a finished atlas run's tables into docs/figures/atlas")
    parser.add_argument("--source", type=Path, help="with --collect-whole or --collect-atlas: the git checkout of "
                                                    "the code it ran")
    parser.add_argument("paths", nargs="*", default=[str(path) for path in DOCUMENTS])
    arguments = parser.parse_args(argv)
    if arguments.collect_default:
        print(collect_default(arguments.collect_default, arguments.make_seconds).to_string(index=False))
    if arguments.collect_atlas:
        print(collect_atlas(arguments.collect_atlas, arguments.source).to_string(index=False))
    if arguments.collect_whole:
        print(collect_run(arguments.collect_whole, WHOLE_FOLDER, source=arguments.source, staged=True)
              .to_string(index=False))
    stale_anywhere = False
    for path in map(Path, arguments.paths):
        text = path.read_text(encoding="utf-8")
        if arguments.check:
            stale = stale_blocks(text)
            for name in stale:
                print(f"{path}: block {name} differs from {', '.join(BLOCKS[name].tables)}; "
                      "run python -m sae_universality.report.docs", file=sys.stderr)
            stale_anywhere = stale_anywhere or bool(stale)
        else:
            path.write_text(regenerate(text), encoding="utf-8")
    return 1 if stale_anywhere else 0


if __name__ == "__main__":
    sys.exit(docs_command())
