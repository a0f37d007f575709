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

from .verdict import _number, _scored_cells, control_paragraph

REPOSITORY = Path(__file__).resolve().parents[3]
RESULTS = REPOSITORY / "docs" / "results.md"
SIGNIFICANCE = 0.05



def controls_table(controls: pd.DataFrame, variants: dict, significance: float = SIGNIFICANCE) -> str:
    """A Markdown table: per layer pair, the kept pairs' mean correlation under every control, what the
    context-only codes give when matched and scored again, and what untrained dictionaries give (where the
    tables have them). `variants`: {"context_only": scores beside the full, "untrained": ...}."""
    untrained = variants.get("untrained")
    header = ("| layer pair | kept pairs | full | context only (at threshold) | context only, bigram | "
              "document demeaned | document shifted | context-only pairs matched again | significant metrics "
              "(context only) | context-only excess / full excess, lowest and highest metric |")
    if untrained is not None:
        header += " untrained dictionaries: pairs kept | significant metrics (untrained) |"
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
        if untrained is not None:
            cells += [str(int(here.loc["untrained_dictionary", "n_kept_rematched"])),
                      _significant_of(_scored_cells(untrained, layer_a, layer_b), significance)]
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
        if (root / "untrained_scores.tsv").is_file():
            variants["untrained"] = pd.read_csv(root / "untrained_scores.tsv", sep="\t")
        model_a, model_b = controls["model_a"].iloc[0], controls["model_b"].iloc[0]
        paragraph = control_paragraph(controls, variants, SIGNIFICANCE, model_a, model_b)
        return (controls_table(controls, variants) + "\n\nThe verdict's reading of these tables:\n\n"
                + "\n".join(f"> {line}" if line else ">" for line in paragraph.splitlines()))

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


def scaling_findings(prefix: str) -> Callable[[], str]:
    """The scaling study's findings in words, every number from its committed tables at `prefix`
    (`<prefix>.tsv`, `.cross.tsv`): the budgets of the narrowest SAEs in order, then the width comparison."""
    def make() -> str:
        summary = pd.read_csv(REPOSITORY / f"{prefix}.tsv", sep="\t")
        cross = pd.read_csv(REPOSITORY / f"{prefix}.cross.tsv", sep="\t")
        cross = cross[~cross["model_b"].str.endswith("-rerandomized")]
        width = int(summary["d_sae"].min())
        budgets = summary[summary["d_sae"] == width].sort_values("training_tokens").reset_index(drop=True)
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
        falls = [METRIC_NAMES.get(metric, metric) for metric in metrics
                 if last[f"cross_{metric}_best_normalized"] < before[f"cross_{metric}_best_normalized"]]
        svcca = cross[(cross["metric"] == "heldout_svcca") & (cross["d_sae"] == width)].dropna(subset=["normalized"])
        best = svcca.loc[svcca["normalized"].idxmax()]
        lines.append(
            f"- *Against the ceiling.* The largest fraction of the seed-to-seed ceiling of any layer pair: {fractions}. "
            f"From {_thousands(before['training_tokens'])} to {_thousands(last['training_tokens'])} the seeds agree "
            f"more ({before['seed_best_match_correlation']:.2f} to {last['seed_best_match_correlation']:.2f}) while "
            f"that fraction falls on {len(falls)} of {len(metrics)} metrics ({', '.join(falls) or 'none'}): the two "
            + ("models do not keep up with the seeds." if len(falls) == len(metrics) else "models keep up on the rest.")
            + f" The closest held-out SVCCA comes to its ceiling: {best['model_a']} {best['layer_a']} / {best['model_b']} "
            f"{best['layer_b']} at {_thousands(best['training_tokens'])}, observed {best['observed']:.2f} "
            f"[{best['ci_low']:.2f}, {best['ci_high']:.2f}], an excess over chance of {best['excess']:.2f}, and "
            f"{best['normalized']:.2f} [{best['normalized_ci_low']:.2f}, {best['normalized_ci_high']:.2f}] of its "
            "ceiling (the interval carries the ceiling's own).")
        for row in summary[summary["d_sae"] != width].itertuples():
            narrow = budgets.iloc[(budgets["training_tokens"] - row.training_tokens).abs().argmin()]
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


@dataclass(frozen=True)
class Block:
    """A generated block: what makes it, and the tables it reads (for the error message)."""

    make: Callable[[], str]
    tables: tuple[str, ...]


def file_block(path: str) -> Callable[[], str]:
    """A block that is a committed file's text as it is (e.g. a study's Markdown table)."""
    return lambda: (REPOSITORY / path).read_text(encoding="utf-8").rstrip("\n")


BLOCKS = {
    "scaling-table": Block(file_block("docs/figures/scaling.md"), ("docs/figures/scaling.md",)),
    "scaling-findings": Block(scaling_findings("docs/figures/scaling"),
                              ("docs/figures/scaling.tsv", "docs/figures/scaling.cross.tsv")),
    "controls-default": Block(controls_block("docs/figures/default"),
                              ("docs/figures/default/controls.tsv", "docs/figures/default/context_only_scores.tsv")),
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


def docs_command(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sae_universality.report.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale blocks (exit 1 if any)")
    parser.add_argument("path", nargs="?", default=str(RESULTS))
    arguments = parser.parse_args(argv)
    path = Path(arguments.path)
    text = path.read_text(encoding="utf-8")
    if arguments.check:
        stale = stale_blocks(text)
        for name in stale:
            print(f"{path}: block {name} differs from {', '.join(BLOCKS[name].tables)}; "
                  "run python -m sae_universality.report.docs", file=sys.stderr)
        return 1 if stale else 0
    path.write_text(regenerate(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(docs_command())
