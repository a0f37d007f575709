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
