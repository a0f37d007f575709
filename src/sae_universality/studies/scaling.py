"""The scaling study: how much text before the comparison means anything (issue 12).

One base config (presets/scaling.yaml, an ordinary workflow config) is run at
several token budgets (16k, 50k, 150k of the Wikipedia articles, then the whole
sample, about 750k tokens) and, at 150k, a second SAE
width, each variant in a folder of its own (`<root>/tokens<B>-latents<D>`), by the
ordinary workflow: Snakemake resumes a variant where it stopped. Variants that
read the same text through the same models and layers share one activation cache:
a variant starts from hard links to an earlier one's (or to a `--reuse` run's, such
as the reference experiment's), so only its SAE stages run. `collect` then reads
every finished variant's own tables and puts them side by side against the
training tokens: SAE quality, the seed-to-seed ceiling, and the cross-model
excess over chance at each layer pair. It also writes those per-layer tables
(`<out>.quality.tsv`, `.ceilings.tsv`, `.ceiling_matching.tsv`, `.cross.tsv`, a
few kilobytes): a later `collect --keep <out>` adds the variants they hold whose
folders are gone, so the study's record outlives its bulky run folders.

    python -m sae_universality.studies.scaling run --root runs/scaling            # every variant in turn
    python -m sae_universality.studies.scaling collect --root runs/scaling --out docs/figures/scaling
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..errors import UserError
from ..io import atomic_path
from ..similarity.baselines import above_chance

REPO = Path(__file__).resolve().parents[3]
PRESET = REPO / "presets" / "scaling.yaml"


DEFAULT_BUDGETS = (16000, 50000, 150000, None)  # None: the whole of the base config's source
DEFAULT_EXTRA = ((150000, 8192),)  # the width axis, where it is cheap


def variant_name(token_budget: int | None, d_sae: int) -> str:
    return f"tokens{'all' if token_budget is None else token_budget}-latents{d_sae}"


def study_variants(base: dict, budgets=DEFAULT_BUDGETS, extra=DEFAULT_EXTRA) -> dict[str, dict]:
    """{variant name: full config}: the base config at each token budget with its own SAE width, then at
    each extra (budget, d_sae) point. Every budget draws from the base config's source; None reads all of it."""
    points = [(budget, base["saes"]["train"]["d_sae"]) for budget in budgets] + [tuple(p) for p in extra]
    variants = {}
    for budget, d_sae in points:
        config = copy.deepcopy(base)
        config["corpus"]["token_budget"] = budget
        config["saes"]["train"]["d_sae"] = int(d_sae)
        variants[variant_name(budget, d_sae)] = config
    return variants


def activation_identity(config: dict) -> str:
    """What a run's activation cache depends on (text, models, layers, storage), as a comparable string.

    Two runs with equal identities write the same resources/ and results/activations/ (the shards are
    merged into the same files, so their number does not count).
    """
    from ..config import check_config
    from ..models.sources import check_model_entries

    checked = check_config(copy.deepcopy(config), check_models=check_model_entries)
    activations = {key: value for key, value in checked["activations"].items() if key != "shards"}
    models = {name: {key: value for key, value in entry.items() if key != "sae"}
              for name, entry in checked["models"].items()}
    return json.dumps({"models": models, "corpus": checked["corpus"], "activations": activations},
                      sort_keys=True, default=str)


def _finished_activations(folder: Path, config: dict) -> bool:
    caches = [folder / "results" / "activations" / model / f"layer{layer}.h5"
              for model, entry in config["models"].items() for layer in entry["layers"]]
    return all(path.is_file() for path in caches) and (folder / "resources" / "corpus" / "windows.jsonl").is_file()


def share_activations(folder: Path, config: dict, candidates: list[Path]) -> Path | None:
    """Hard-link resources/ and results/activations/ into `folder` from the first candidate run with the
    same activation identity and a finished cache; the source run, or None (nothing to share, or
    `folder` has its own already). Hard links keep the files' times, so Snakemake sees them up to date."""
    if (folder / "results" / "activations").exists() or (folder / "resources").exists():
        return None
    identity = activation_identity(config)
    for candidate in candidates:
        candidate_config = candidate / "config.yaml"
        if candidate.resolve() == folder.resolve() or not candidate_config.is_file():
            continue
        other = yaml.safe_load(candidate_config.read_text())
        if activation_identity(other) != identity or not _finished_activations(candidate, other):
            continue
        (folder / "results").mkdir(parents=True, exist_ok=True)
        for part in ("resources", "results/activations"):
            shutil.copytree(candidate / part, folder / part, copy_function=os.link)
        return candidate
    return None


def write_variant(root: Path, name: str, config: dict) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "config.yaml", suffix=".yaml") as temporary:
        Path(temporary).write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def run(root: Path, preset: Path, cores: int, only: list[str] | None, extra: list[str],
        reuse: list[Path] = ()) -> None:
    """Run (or resume) every variant with the workflow's default profile, smallest first.

    A variant whose text, models and layers equal those of an earlier variant (or of a `reuse` run:
    a finished workflow folder with its config.yaml) starts from that run's activations."""
    base = yaml.safe_load(preset.read_text())
    for name, config in study_variants(base).items():
        if only and name not in only:
            continue
        folder = write_variant(root, name, config)
        others = [path for path in sorted(root.iterdir()) if path.is_dir()] + list(reuse)
        source = share_activations(folder, config, others)
        if source is not None:
            print(f"scaling: {name}: activations shared from {source}", flush=True)
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                   str(folder), "--replace-workflow-config", "--configfile", str(folder / "config.yaml"),
                   "--workflow-profile", str(REPO / "workflow" / "profiles" / "default"), "--cores", str(cores),
                   "--resources", f"gpu={cores}", *extra]
        print(f"scaling: {name}: {' '.join(command)}", flush=True)
        subprocess.run(command, check=True)


# ---------------------------------------------------------------- collect


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t") if path.is_file() else pd.DataFrame()


def variant_rows(folder: Path) -> dict[str, pd.DataFrame]:
    """The tables of one finished variant, each tagged with its training tokens and width."""
    config = yaml.safe_load((folder / "config.yaml").read_text())
    results = folder / "results"
    quality = _read(results / "saes" / "quality.tsv")
    if not len(quality):
        return {}
    tokens = {}
    for curve in (results / "saes").glob("*/layer*/seed*.curve.tsv"):
        last = pd.read_csv(curve, sep="\t").iloc[-1]
        # Positions seen per epoch: the training tokens of this SAE's data.
        tokens[(last["model"], int(last["layer"]), last["sae"])] = int(last["tokens"]) / config["saes"]["train"]["epochs"]
    significance = config.get("similarity", {}).get("significance", 0.05)
    tag = {"variant": folder.name, "d_sae": int(quality["d_sae"].iloc[0]),
           "training_tokens": float(np.median(list(tokens.values()))) if tokens else np.nan}
    ceilings = pd.concat([_read(path) for path in sorted((results / "similarity" / "ceiling").glob("*/layer*.tsv"))
                          if not path.name.endswith((".matches.tsv", ".summary.tsv", ".context_only.tsv"))]
                         or [pd.DataFrame()])
    summaries = pd.concat([_read(path) for path in
                           sorted((results / "similarity" / "ceiling").glob("*/layer*.summary.tsv"))] or [pd.DataFrame()])
    if len(ceilings):
        # Marked the way the verdict marks them (the cross-model tables carry `significant` already).
        ceilings["significant"] = above_chance(ceilings, significance)
    cross = pd.concat([_read(path) for path in sorted((results / "similarity").glob("*--*/scores.tsv"))]
                      or [pd.DataFrame()])
    return {name: table.assign(**tag) for name, table in
            (("quality", quality), ("ceilings", ceilings), ("ceiling_matching", summaries), ("cross", cross))
            if len(table)}


TABLE_NAMES = ("quality", "ceilings", "ceiling_matching", "cross")


def collect(root: Path, kept: dict[str, pd.DataFrame] | None = None) -> dict[str, pd.DataFrame]:
    """Every finished variant's tables, concatenated, sorted by training tokens.

    `kept`: tables of an earlier collection (read_collection); its variants that have no finished
    folder under `root` are added, so a study keeps the variants whose run folders are gone."""
    tables: dict[str, list] = {}
    found = set()
    if root.is_dir():
        for folder in sorted(path for path in root.iterdir() if (path / "config.yaml").is_file()):
            for name, table in variant_rows(folder).items():
                tables.setdefault(name, []).append(table)
                found.add(folder.name)
    for name, table in (kept or {}).items():
        earlier = table[~table["variant"].isin(found)]
        if len(earlier):
            tables.setdefault(name, []).append(earlier)
    if not tables:
        raise UserError(f"{root}: no finished scaling variant (results/saes/quality.tsv) yet; run the study first")
    collected = {name: pd.concat(frames, ignore_index=True).sort_values(["d_sae", "training_tokens"], kind="stable")
                 for name, frames in tables.items()}
    if "cross" in collected and "ceilings" in collected:
        collected["cross"] = renormalized(collected["cross"].reset_index(drop=True), collected["ceilings"])
    return collected


def renormalized(cross: pd.DataFrame, ceilings: pd.DataFrame, significance: float = 0.05,
                 level: float = 0.95) -> pd.DataFrame:
    """The cross-model rows with their ceiling and normalized score computed again from the ceilings table,
    variant by variant, as the similarity stage computes them now (`with_ceiling`): a collection keeps the
    variants of earlier runs, and their intervals then carry the ceiling's own too."""
    from ..similarity.stage import CEILING_COLUMNS, with_ceiling

    parts = []
    for variant, rows in cross.groupby("variant", sort=False):
        own = ceilings[ceilings["variant"] == variant] if len(ceilings) else None
        parts.append(with_ceiling(rows, own, significance, level))
    order = [column for column in cross.columns if column in parts[0].columns] if parts else list(cross.columns)
    return pd.concat(parts)[[*order, *[c for c in CEILING_COLUMNS if c not in order]]] if parts else cross


def collection_path(prefix: Path, name: str) -> Path:
    return prefix.with_name(f"{prefix.name}.{name}.tsv")


def write_collection(tables: dict[str, pd.DataFrame], prefix: Path) -> None:
    """The per-layer tables behind the summary, one TSV each beside it (`<prefix>.<name>.tsv`)."""
    for name in TABLE_NAMES:
        if name in tables:
            with atomic_path(collection_path(prefix, name), suffix=".tsv") as temporary:
                tables[name].to_csv(temporary, sep="\t", index=False)


def read_collection(prefix: Path) -> dict[str, pd.DataFrame]:
    """What write_collection wrote at `prefix` (a UserError naming the prefix if there is nothing)."""
    tables = {name: pd.read_csv(collection_path(prefix, name), sep="\t")
              for name in TABLE_NAMES if collection_path(prefix, name).is_file()}
    if "quality" not in tables:
        raise UserError(f"--keep {prefix}: no {collection_path(prefix, 'quality').name} there; give the --out "
                        "prefix of an earlier collect")
    return tables


def summary_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per variant: SAE quality (worst and median), seed agreement, ceiling and cross-model results."""
    rows = []
    quality = tables["quality"]
    for variant, group in quality.groupby("variant", sort=False):
        row = {"variant": variant, "d_sae": int(group["d_sae"].iloc[0]),
               "training_tokens": float(group["training_tokens"].iloc[0]),
               "loss_recovered_min": group["fraction_recovered"].min(),
               "loss_recovered_median": group["fraction_recovered"].median(),
               "fvu_max": group["fvu"].max(), "dead_fraction_max": group["dead_fraction"].max()}
        matching = tables.get("ceiling_matching", pd.DataFrame())
        matching = matching[matching["variant"] == variant] if len(matching) else matching
        if len(matching):
            row["seed_best_match_correlation"] = matching["mean_max_correlation"].mean()
        ceilings = tables.get("ceilings", pd.DataFrame())
        ceilings = ceilings[ceilings["variant"] == variant] if len(ceilings) else ceilings
        for metric, cells in (ceilings.groupby("metric") if len(ceilings) else []):
            row[f"ceiling_{metric}_excess"] = (cells["observed"] - cells["null_mean"]).mean()
            row[f"ceiling_{metric}_above_chance"] = f"{int(cells['significant'].sum())}/{len(cells)}"
        cross = tables.get("cross", pd.DataFrame())
        cross = cross[(cross["variant"] == variant) & ~cross["model_b"].str.endswith("-rerandomized")] if len(cross) else cross
        for metric, cells in (cross.groupby("metric") if len(cross) else []):
            # The largest excess of any layer pair (the cell with the largest z can have a smaller one).
            row[f"cross_{metric}_best_excess"] = cells["excess"].max() if cells["excess"].notna().any() else np.nan
            row[f"cross_{metric}_significant"] = f"{int(cells['significant'].astype(bool).sum())}/{len(cells)}"
            if "normalized" in cells:
                # The largest fraction of the seed-to-seed ceiling, with that cell's interval (NaN: no valid ceiling).
                best = (cells.loc[cells["normalized"].idxmax()] if cells["normalized"].notna().any()
                        else pd.Series(np.nan, index=["normalized", "normalized_ci_low", "normalized_ci_high"]))
                row[f"cross_{metric}_best_normalized"] = best["normalized"]
                row[f"cross_{metric}_best_normalized_ci_low"] = best["normalized_ci_low"]
                row[f"cross_{metric}_best_normalized_ci_high"] = best["normalized_ci_high"]
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table for docs/results.md: one row per variant, the columns a reader needs."""
    metrics = [column.removeprefix("cross_").removesuffix("_significant") for column in summary
               if column.startswith("cross_") and column.endswith("_significant")]
    header = ["variant", "training tokens per SAE", "loss recovered (min / median)", "dead (max)", "FVU (max)",
              "seed best-match corr.", *[f"{metric}: ceiling above chance / cross significant / largest cross excess"
                                         for metric in metrics]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.itertuples():
        row = row._asdict()
        cells = [row["variant"], f"{row['training_tokens']:,.0f}",
                 f"{row['loss_recovered_min']:.2f} / {row['loss_recovered_median']:.2f}",
                 f"{row['dead_fraction_max']:.1%}", f"{row['fvu_max']:.2f}",
                 f"{row.get('seed_best_match_correlation', float('nan')):.2f}"]
        for metric in metrics:
            cells.append(f"{row.get(f'ceiling_{metric}_above_chance', '–')} / {row.get(f'cross_{metric}_significant', '–')}"
                         f" / {row.get(f'cross_{metric}_best_excess', float('nan')):.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    normalized = [metric for metric in metrics if f"cross_{metric}_best_normalized" in summary]
    if normalized:
        # The trend against the ceiling: the largest fraction of the seed-to-seed ceiling per metric, with the
        # interval of that cell (Fieller's: it carries the ceiling's own uncertainty).
        lines += ["", "Largest fraction of the seed-to-seed ceiling of any layer pair [95% interval]:", "",
                  "| variant | training tokens per SAE | " + " | ".join(normalized) + " |",
                  "|" + "---|" * (len(normalized) + 2)]
        for row in summary.itertuples():
            row = row._asdict()
            cells = [row["variant"], f"{row['training_tokens']:,.0f}"]
            for metric in normalized:
                value = row.get(f"cross_{metric}_best_normalized", float("nan"))
                low = row.get(f"cross_{metric}_best_normalized_ci_low", float("nan"))
                high = row.get(f"cross_{metric}_best_normalized_ci_high", float("nan"))
                interval = f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) and np.isfinite(high) else " [unbounded]"
                cells.append("–" if not np.isfinite(value) else f"{value:.2f}{interval}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _sorted_series(cells: pd.DataFrame, keys: list[str], value, low, high) -> pd.DataFrame:
    """Per (cell key, width), sorted by training tokens: `value` with its interval [low, high] (named excess,
    excess_low, excess_high, as the figure reads them) and the table's own `significant` mark."""
    series = cells[[*keys, "d_sae", "training_tokens"]].copy()
    series["excess"], series["excess_low"], series["excess_high"] = value, low, high
    series["significant"] = cells["significant"].astype(bool)
    return series.sort_values([*keys, "d_sae", "training_tokens"], kind="stable").reset_index(drop=True)


def excess_series(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per (cell key, width), sorted by training tokens: the excess over chance and its 95% interval.

    The interval is the observed score's half-sample interval shifted by the same null mean, so it is the
    uncertainty of the excess given the null; `significant` is the table's own mark (adjusted p or
    above_chance). The tables round their excess column; observed - null matches the interval."""
    null = cells["null_mean"]
    return _sorted_series(cells, keys, cells["observed"] - null, cells["ci_low"] - null, cells["ci_high"] - null)


def fraction_series(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Like `excess_series`, the cross-model score as a fraction of the ceiling, with its (Fieller) interval."""
    return _sorted_series(cells, keys, cells["normalized"], cells["normalized_ci_low"], cells["normalized_ci_high"])


def plot_study(tables: dict[str, pd.DataFrame], out_path: Path) -> None:
    """Four rows of panels against training tokens: SAE quality, seed-to-seed ceiling, cross-model excess, and the
    cross-model score as a fraction of the ceiling.

    Excesses carry their 95% half-sample intervals as vertical bars, fractions their Fieller intervals (which
    carry the ceiling's uncertainty too)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality, ceilings, cross = tables["quality"], tables.get("ceilings"), tables.get("cross")
    matching = tables.get("ceiling_matching")
    metrics = list(dict.fromkeys(cross["metric"])) if cross is not None else []
    columns = max(4, len(metrics))
    figure, axes = plt.subplots(4, columns, figsize=(3.3 * columns, 12.5), squeeze=False)
    for axis in axes.flat:
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(plt.NullFormatter())  # labelled minor ticks overlap on a few decades
    widths = sorted(quality["d_sae"].unique())
    markers = dict(zip(widths, "osD^v"))
    panels = [(quality, "fraction_recovered", "SAE loss recovered (held out)"),
              (quality, "fvu", "SAE FVU (held out)"),
              (quality, "dead_fraction", "SAE dead fraction (held out)")]
    if matching is not None and len(matching):
        # Seed agreement: how well a feature's best match in the second seed correlates, per layer.
        panels.append((matching.rename(columns={"model_a": "model", "layer_a": "layer"}), "mean_max_correlation",
                       "seed agreement (mean best-match corr.)"))
    for column, (table, name, title) in enumerate(panels):
        axis = axes[0, column]
        for (model, layer), group in table.groupby(["model", "layer"]):
            for width, cells in group.groupby("d_sae"):
                means = cells.groupby("training_tokens")[name].mean()
                axis.plot(means.index, means.values, marker=markers[width], label=f"{model} {layer} ({width})")
        axis.set_title(title, fontsize=9)
        if name == "fraction_recovered":
            axis.axhline(0.8, color="grey", linestyle=":", linewidth=0.8)
        if name == "dead_fraction":
            axis.axhline(0.1, color="grey", linestyle=":", linewidth=0.8)
    axes[0, 0].legend(fontsize=6)
    for axis in axes[0, len(panels):]:
        axis.axis("off")
    for column in range(columns):
        metric = metrics[column] if column < len(metrics) else None
        for row, (table, title) in enumerate(((ceilings, "ceiling (seed vs seed)"), (cross, "cross-model"),
                                              (cross, "cross / ceiling"))):
            axis = axes[row + 1, column]
            if metric is None or table is None or not len(table) or (row == 2 and "normalized" not in table):
                axis.axis("off")
                continue
            cells = table[table["metric"] == metric]
            if row >= 1:
                cells = cells[~cells["model_b"].str.endswith("-rerandomized")]
                keys = ["layer_a", "layer_b"]
            else:
                keys = ["model", "layer"]
            series = excess_series(cells, keys)
            if row == 2:
                # The fraction of the ceiling in place of the excess, with its own interval.
                series = fraction_series(cells, keys)
            series = list(series.groupby([*keys, "d_sae"]))
            for index, (key, points) in enumerate(series):
                # Each series nudged sideways (a few percent on the log axis) so the intervals stay apart.
                tokens = points["training_tokens"] * 10 ** (0.02 * (index - (len(series) - 1) / 2))
                line = axis.plot(tokens, points["excess"], marker=markers[key[-1]], markersize=4,
                                 label=" / ".join(map(str, key[:-1])) + f" ({key[-1]})")[0]
                axis.vlines(tokens, points["excess_low"], points["excess_high"], color=line.get_color(),
                            alpha=0.5, linewidth=1.0)
                significant = points["significant"].to_numpy()
                axis.scatter(tokens[significant], points["excess"][significant], s=40,
                             facecolors="none", edgecolors=line.get_color())
            axis.axhline(0.0, color="black", linewidth=0.6)
            if row == 2:
                axis.axhline(1.0, color="grey", linestyle=":", linewidth=0.8)
            axis.set_title(f"{title}: {metric}" + (" fraction" if row == 2 else " excess"), fontsize=9)
            if column == 0:
                axis.legend(fontsize=6)
    # One x range for every panel, wide enough that the nudged intervals of a single budget stay readable.
    tokens = quality["training_tokens"]
    for axis in axes.flat:
        axis.set_xlim(tokens.min() / 1.6, tokens.max() * 1.6)
    for axis in axes[3]:
        axis.set_xlabel("training tokens per SAE")
    figure.suptitle("Scaling study vs training tokens: SAE quality, seed-to-seed ceiling and cross-model excess over "
                    "chance (bars: 95% half-sample intervals),\ncross-model fraction of the ceiling (bars: Fieller "
                    "intervals; 1 = as alike as two seeds); circled: significant", fontsize=10)
    figure.tight_layout()
    with atomic_path(out_path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sae_universality.studies.scaling", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run (or resume) every variant of the study")
    run_parser.add_argument("--root", type=Path, default=Path("runs/scaling"))
    run_parser.add_argument("--preset", type=Path, default=PRESET)
    run_parser.add_argument("--cores", type=int, default=2)
    run_parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    run_parser.add_argument("--reuse", nargs="*", type=Path, default=[],
                            help="finished runs (folders with config.yaml) whose activations a variant may share")
    collect_parser = commands.add_parser("collect", help="the table and figure of the finished variants")
    collect_parser.add_argument("--root", type=Path, default=Path("runs/scaling"))
    collect_parser.add_argument("--out", type=Path, required=True,
                                help="path prefix of <out>.tsv, .md, .png and the per-layer <out>.<table>.tsv")
    collect_parser.add_argument("--keep", type=Path,
                                help="an earlier collection's prefix: its variants without a folder under --root "
                                     "are kept")
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "run":
            run(args.root, args.preset, args.cores, args.only, extra, args.reuse)
        else:
            tables = collect(args.root, read_collection(args.keep) if args.keep else None)
            table = summary_table(tables)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_collection(tables, args.out)
            with atomic_path(args.out.with_suffix(".tsv"), suffix=".tsv") as temporary:
                table.to_csv(temporary, sep="\t", index=False, float_format="%.4g")
            plot_study(tables, args.out.with_suffix(".png"))
            markdown = markdown_table(table)
            with atomic_path(args.out.with_suffix(".md"), suffix=".md") as temporary:
                Path(temporary).write_text(markdown)
            print(markdown)
    except UserError as error:
        sys.exit(f"sae-universality: {error}")


if __name__ == "__main__":
    main()
