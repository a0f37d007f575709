"""What the experiment found, in words: the verdict that opens the report.

Built only from the tables the workflow wrote: per model pair its long score
table (`results/similarity/{a}--{b}/scores.tsv`, with adjusted p-values,
intervals and normalized scores), the SAE quality table, the seed-to-seed
ceiling scores and matching summaries, and, where the pair has one, the scores
of its re-randomized floor pair. The text is plain paragraphs and bullet lists
with **bold**, valid both as Markdown (results/verdict.md) and as
reStructuredText (the report's front page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, write_tsv
from ..settings import SimilaritySettings, as_settings
from ..matching.stage import CONTROLS
from ..similarity.baselines import above_chance

CONTROL_NAMES = tuple(CONTROLS)  # the controls matching writes, in its row order

VERDICT_COLUMNS = ["model_a", "model_b", "metric", "n_layer_pairs", "n_significant", "best_layer_a", "best_layer_b",
                   "observed", "ci_low", "ci_high", "null_mean", "excess", "z", "p", "p_adjusted", "normalized",
                   "normalized_ci_low", "normalized_ci_high", "normalized_note", "floor_model", "floor_observed",
                   "floor_null_mean", "floor_excess", "floor_p_adjusted", "excess_above_floor", "floor_n_pairs",
                   "context_only_n_pairs", "context_only_observed", "context_only_ci_low", "context_only_ci_high",
                   "context_only_null_mean", "context_only_excess", "context_only_p_adjusted",
                   "context_only_excess_surviving", *(f"kept_correlation_{control}" for control in CONTROL_NAMES),
                   "untrained_n_pairs", "untrained_observed", "untrained_null_mean", "untrained_excess",
                   "untrained_p_adjusted", "untrained_excess_surviving", "lexical_n_pairs", "lexical_observed",
                   "lexical_ci_low", "lexical_ci_high", "lexical_null_mean", "lexical_excess", "lexical_p_adjusted",
                   "lexical_excess_surviving"]


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def _interval(low, high) -> str:
    return "" if not (np.isfinite(low) and np.isfinite(high)) else f" [{_number(low)}, {_number(high)}]"


def best_cells(scores: pd.DataFrame) -> pd.DataFrame:
    """Per metric, the layer pair with the largest z over its null (the largest excess where z is missing)."""
    rows = []
    for metric, group in scores.groupby("metric", sort=False):
        scored = group[np.isfinite(group["observed"].astype(float))]
        if not len(scored):
            continue
        key = scored["z"].astype(float).fillna(-np.inf)
        if not np.isfinite(key).any():
            key = scored["excess"].astype(float).fillna(-np.inf)
        rows.append(scored.loc[key.idxmax()])
    return pd.DataFrame(rows)


def pair_verdict(scores: pd.DataFrame, floor_scores: pd.DataFrame | None, significance: float) -> pd.DataFrame:
    """One row per metric of a model pair (VERDICT_COLUMNS): how many layer pairs are significant after
    adjustment, the best one with its interval, null, normalized score and floor comparison."""
    rows = []
    for best in best_cells(scores).itertuples():
        group = scores[scores["metric"] == best.metric]
        row = {
            "model_a": best.model_a, "model_b": best.model_b, "metric": best.metric,
            "n_layer_pairs": int(np.isfinite(group["observed"].astype(float)).sum()),
            "n_significant": int((group["p_adjusted"].astype(float) < significance).sum()),
            "best_layer_a": int(best.layer_a), "best_layer_b": int(best.layer_b),
            **{column: getattr(best, column) for column in
               ("observed", "ci_low", "ci_high", "null_mean", "excess", "z", "p", "p_adjusted", "normalized",
                "normalized_ci_low", "normalized_ci_high")},
            "normalized_note": best.normalized_note if isinstance(best.normalized_note, str) else "",
        }
        floor = None
        if floor_scores is not None and len(floor_scores):
            same = floor_scores[(floor_scores["metric"] == best.metric) & (floor_scores["layer_a"] == best.layer_a)
                                & (floor_scores["layer_b"] == best.layer_b)]
            floor = same.iloc[0] if len(same) else None
        if floor is not None:
            row.update({"floor_model": floor["model_b"], "floor_observed": floor["observed"],
                        "floor_null_mean": floor["null_mean"], "floor_excess": floor["excess"],
                        "floor_p_adjusted": floor["p_adjusted"], "excess_above_floor": best.excess - floor["excess"],
                        "floor_n_pairs": floor.get("n_pairs", np.nan)})
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=VERDICT_COLUMNS)


def with_controls(table: pd.DataFrame, controls: pd.DataFrame | None, variants: dict) -> pd.DataFrame:
    """The verdict rows with the controls of each row's best layer pair: the kept pairs' correlation under
    every control, and per variant ({"context_only": its scores, "untrained": ...}) its score of that metric
    there (NaN where the controls did not run)."""
    table = table.copy()
    for index, row in table.iterrows():
        cell = {"layer_a": row["best_layer_a"], "layer_b": row["best_layer_b"]}
        for name, scores in variants.items():
            if scores is None or not len(scores):
                continue
            same = scores[(scores["metric"] == row["metric"]) & (scores["layer_a"] == cell["layer_a"])
                          & (scores["layer_b"] == cell["layer_b"])]
            for column in ("n_pairs", "observed", "ci_low", "ci_high", "null_mean", "excess", "p_adjusted",
                           "excess_surviving"):
                if len(same) and f"{name}_{column}" in VERDICT_COLUMNS:
                    table.loc[index, f"{name}_{column}"] = same.iloc[0][column]
        if controls is not None and len(controls):
            here = controls[(controls["layer_a"] == cell["layer_a"]) & (controls["layer_b"] == cell["layer_b"])]
            for found in here.itertuples():
                if found.control in CONTROL_NAMES:
                    table.loc[index, f"kept_correlation_{found.control}"] = found.kept_full_mean_correlation
    return table


def _scored_cells(scores: pd.DataFrame | None, layer_a, layer_b) -> pd.DataFrame:
    """The finite scores of one layer pair in a variant's table (empty where there are none)."""
    if scores is None or not len(scores):
        return pd.DataFrame()
    here = scores[(scores["layer_a"] == layer_a) & (scores["layer_b"] == layer_b)]
    return here[np.isfinite(here["observed"].astype(float))]


def _significance_clause(scored: pd.DataFrame, significance: float) -> str:
    """", significant on m of n metrics after adjustment (names); their excess over chance is a to b times
    the full result's, metric by metric" of a variant's scores at one layer pair."""
    significant = scored[scored["p_adjusted"].astype(float) < significance]
    text = (f", significant on {len(significant)} of {len(scored)} metrics after adjustment"
            + (f" ({', '.join(significant['metric'])})" if len(significant) else ""))
    surviving = scored["excess_surviving"].astype(float)
    if np.isfinite(surviving).any():
        text += (f"; their excess over chance is {np.nanmin(surviving):.2f} to {np.nanmax(surviving):.2f} "
                 "times the full result's, metric by metric")
    return text


def residual_paragraph(residual: pd.DataFrame | None, model_b: str) -> str:
    """The raw residual streams compared before any SAE, per layer pair and measure, from residual_streams.tsv."""
    if residual is None or not len(residual):
        return ""
    names = {"debiased_cka": "debiased CKA", "heldout_svcca": "held-out SVCCA"}
    n_positions = int(residual["n_positions"].max())
    lines = [f"**Before any SAE.** The two residual streams compared position by position ({n_positions:,} aligned "
             f"positions at most, whole windows): as they are, with each model's activations replaced by their "
             f"per-token means, and with {model_b} rolled within documents (chance for this comparison).", ""]
    for (layer_a, layer_b), here in residual.groupby(["layer_a", "layer_b"], sort=False):
        parts = []
        for metric, rows in here.groupby("metric", sort=False):
            value = rows.set_index("comparison")
            parts.append(f"{names.get(metric, metric)} "
                         + ", ".join(f"{_number(value.loc[name, 'observed'])}"
                                     f"{_interval(value.loc[name, 'ci_low'], value.loc[name, 'ci_high'])} {label}"
                                     for name, label in (("aligned", "aligned"), ("token_means", "per-token means"),
                                                         ("document_shifted", "rolled"))
                                     if name in value.index))
        lines.append(f"- {layer_a} / {layer_b}: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def function_paragraph(function: pd.DataFrame | None, significance: float) -> str:
    """The causal check, per layer pair, from function.tsv: do the kept pairs' two features act alike on their
    models' predictions, against random pairings, the seed-to-seed ceiling and token identity."""
    if function is None or not len(function):
        return ""
    above = function[function["above_chance"].astype(bool)]
    n_positions, n_windows = int(function["n_positions"].max()), int(function["n_windows"].max())
    lines = [f"**Functional agreement (the causal check).** Each kept pair's two features' first-order effects on "
             f"their models' next-token loss, correlated over {n_positions:,} aligned positions at most of "
             f"{n_windows} window prefixes: {len(above)} of {len(function)} layer pairs agree above random pairings "
             f"(adjusted p < {significance:g}).", ""]
    for row in function.itertuples():
        text = (f"- {row.layer_a} / {row.layer_b}: effect correlation {_number(row.effect_mean)}"
                f"{_interval(row.ci_low, row.ci_high)} against {_number(row.null_mean)} for random pairings "
                f"(adjusted p {_number(row.p_adjusted, 2)}"
                + (", **above chance**" if row.above_chance else ", not above chance") + ")")
        if np.isfinite(row.fraction_of_ceiling):
            text += (f"; {_number(row.fraction_of_ceiling, 2)} of the seed-to-seed ceiling "
                     f"({_number(row.ceiling)})")
        elif np.isfinite(row.ceiling):
            text += f"; seed-to-seed ceiling {_number(row.ceiling)}"
        text += (f"; without the current token {_number(row.context_only_mean)}; their activations correlate at "
                 f"{_number(row.activation_mean)} on the same positions; {_number(100 * row.share_agreeing, 2)}% of "
                 f"the {int(row.n_pairs)} pairs agree beyond chance on their own; the output strings they promote "
                 f"overlap {_number(row.output_overlap_mean)} (random pairings {_number(row.output_overlap_null)})")
        lines.append(text + ".")
    lines += ["", "The first-order estimate against exact ablation (random items; `results/causal/*/agreement.tsv`): "
              "correlation " + ", ".join(f"{_number(value, 2)}" for value in
                                         sorted(set(function["first_order_pearson_a"]) | set(function["first_order_pearson_b"]))
                                         if np.isfinite(value)) + "."]
    return "\n".join(lines)


def excess_intervals_apart(scored: pd.DataFrame) -> pd.Series:
    """Per row of a baseline's scores beside the full ones: is the full excess's interval above the baseline's?

    Excesses, not raw scores: the two sets of pairs have their own chance levels (a
    Procrustes null mean differs with the pairs), so only excesses compare.
    """
    full_low = scored["full_ci_low"].astype(float) - scored["full_null_mean"].astype(float)
    return full_low > scored["ci_high"].astype(float) - scored["null_mean"].astype(float)


def control_paragraph(controls: pd.DataFrame | None, variants: dict, significance: float,
                      model_a: str, model_b: str) -> str:
    """What token identity, the document and SAE training explain, per layer pair, from the controls' tables.

    `variants`: {"context_only": its scores beside the full ones, "untrained": the untrained dictionaries',
    "lexical": the lexical floor's}.
    """
    if controls is None or not len(controls):
        return ""
    context_only, untrained, lexical = variants.get("context_only"), variants.get("untrained"), variants.get("lexical")
    lines = [f"**Shared features or shared tokens?** Each feature's mean for its current token of its own model "
             "was removed (cross-fitted over two halves of the windows), then the codes were matched and scored "
             "again; the document controls remove each feature's mean over its document, or roll "
             f"{model_b}'s positions within each document against {model_a}'s.", ""]
    cells = controls[["layer_a", "layer_b"]].drop_duplicates().itertuples(index=False)
    survives, at_chance, document_small, above_lexical, within_lexical = [], [], [], [], []
    for layer_a, layer_b in cells:
        here = controls[(controls["layer_a"] == layer_a) & (controls["layer_b"] == layer_b)].set_index("control")
        if not set(CONTROL_NAMES) <= set(here.index):
            continue
        kept = here["kept_full_mean_correlation"].astype(float)
        full, context = here.loc["full"], here.loc["context_only"]
        text = (f"- {layer_a} / {layer_b}: the {int(full['n_kept_full'])} kept pairs correlate at "
                f"{_number(kept['full'])} in full, {_number(kept['context_only'])} without the current token "
                f"({context['kept_full_above_threshold']:.0%} of them still at the threshold or above), "
                f"{_number(kept['context_only_bigram'])} without the previous and current token, "
                f"{_number(kept['document_demeaned'])} without each document's mean, and "
                f"{_number(kept['document_shifted'])} with {model_b} rolled within documents. "
                f"Matched again, the context-only codes keep {int(context['n_kept_rematched'])} pairs")
        scored = _scored_cells(context_only, layer_a, layer_b)
        if len(scored):
            text += _significance_clause(scored, significance)
            fraction = scored["normalized"].astype(float) if "normalized" in scored else pd.Series(dtype=float)
            if np.isfinite(fraction).any():
                text += (f"; against the context-only codes' own seed-to-seed ceiling they reach "
                         f"{np.nanmin(fraction):.2f} to {np.nanmax(fraction):.2f} of it")
            significant = (scored["p_adjusted"].astype(float) < significance).any()
            (survives if significant else at_chance).append(f"{layer_a} / {layer_b}")
        else:
            text += ", too few to score"
            at_chance.append(f"{layer_a} / {layer_b}")
        if "untrained_dictionary" in here.index:
            baseline = here.loc["untrained_dictionary"]
            text += (f". Untrained dictionaries of the same width and k in place of the SAEs keep "
                     f"{int(baseline['n_kept_rematched'])} pairs (mean correlation "
                     f"{_number(float(baseline['rematched_mean_correlation']))}) against the SAEs' "
                     f"{int(full['n_kept_full'])} ({_number(kept['full'])})")
            scored = _scored_cells(untrained, layer_a, layer_b)
            if len(scored):
                n_significant = int((scored["p_adjusted"].astype(float) < significance).sum())
                # Random decoder directions carry nothing of either model: their geometry can only be at chance.
                text += (f"; their decoder directions are random, so their geometry says nothing (significant on "
                         f"{n_significant} of {len(scored)} metrics) and only their matching is a baseline")
        if "lexical_floor" in here.index:
            floor = here.loc["lexical_floor"]
            text += (f". With each model's activations replaced by their per-token means (the lexical floor), the "
                     f"same SAEs keep {int(floor['n_kept_rematched'])} pairs (mean correlation "
                     f"{_number(float(floor['rematched_mean_correlation']))})")
            scored = _scored_cells(lexical, layer_a, layer_b)
            if len(scored) and "n_pairs" in scored and int(scored["n_pairs"].iloc[0]) < int(floor["n_kept_rematched"]):
                text += f", scored on a random {int(scored['n_pairs'].iloc[0])} of them (as many as the full result)"
            if len(scored):
                text += _significance_clause(scored, significance)
                apart = excess_intervals_apart(scored)
                text += (f"; the full result's excess over chance lies above the lexical floor's (their intervals "
                         f"apart) on {int(apart.sum())} of {len(scored)} metrics")
                (above_lexical if apart.all() else within_lexical).append(f"{layer_a} / {layer_b}")
        if abs(kept["document_shifted"]) < 0.1 * abs(kept["full"]) and kept["document_demeaned"] >= 0.9 * kept["full"]:
            document_small.append(f"{layer_a} / {layer_b}")
        lines.append(text + ".")
    n_cells = len(survives) + len(at_chance)
    lines.append("")
    if survives:
        lines.append(f"Without token identity, {len(survives)} of {n_cells} layer pairs still match significantly "
                     f"({', '.join(survives)}): the two models share features that depend on context, not only "
                     "detectors of the same word.")
    if at_chance:
        lines += [""] if survives else []
        lines.append(f"At {', '.join(at_chance)} nothing significant survives without token identity: there the "
                     "matches are explained by the current token.")
    if above_lexical:
        lines += ["", f"At {', '.join(above_lexical)} every metric's excess over chance lies above what token identity "
                      "alone gives (the lexical floor's, intervals apart)."]
    if within_lexical:
        lines += ["", f"At {', '.join(within_lexical)} some metrics' excess over chance is within reach of the lexical "
                      "floor's (the intervals overlap): token identity alone gives that much geometry."]
    if document_small and len(document_small) == n_cells:
        lines.append("")
        lines.append("The document does not explain the matches: removing each document's mean keeps at least "
                     "0.9 of the kept pairs' correlation, and rolling positions within documents leaves under a "
                     "tenth of it, at every layer pair.")
    return "\n".join(lines)


def consistency_sentence(scores: pd.DataFrame, significance: float, model_a: str, model_b: str) -> str:
    """How many layer pairs are significant on any metric, and which one on the most metrics."""
    significant = scores[scores["p_adjusted"].astype(float) < significance]
    per_cell = significant.groupby(["layer_a", "layer_b"])["metric"].apply(list)
    n_metrics = scores["metric"].nunique()
    n_cells = scores.groupby(["layer_a", "layer_b"]).ngroups
    # The most metrics first, then the largest summed z over them.
    z_sum = significant.groupby(["layer_a", "layer_b"])["z"].sum()
    best = max(per_cell.index, key=lambda cell: (len(per_cell[cell]), z_sum[cell]))
    return (f"**{len(per_cell)} of {n_cells} layer pairs are significantly similar on at least one metric.** "
            f"The most consistent is {model_a} layer {best[0]} with {model_b} layer {best[1]}, significant on "
            f"{len(per_cell[best])} of {n_metrics} metrics ({', '.join(per_cell[best])}).")


def degenerate_floor_note(quality: pd.DataFrame, floor_model: str) -> str:
    """Says so when the re-randomized floor model does not work as a language model: its clean loss above a
    uniform guess over its vocabulary, or zero-ablating a layer lowering its loss ("" when it works, or when
    its losses were not measured)."""
    rows = quality[quality["model"] == floor_model] if len(quality) and "uniform_loss" in quality else pd.DataFrame()
    rows = rows[np.isfinite(rows["ce_clean"].astype(float))] if len(rows) else rows
    if not len(rows):
        return ""
    clean, uniform = float(rows["ce_clean"].iloc[0]), float(rows["uniform_loss"].iloc[0])
    lowered = rows[rows["ce_zero"].astype(float) < rows["ce_clean"].astype(float)]
    reasons = []
    if clean > uniform:
        reasons.append(f"its clean loss is {_number(clean)} nats, above the {_number(uniform)} of a uniform guess "
                       "over its vocabulary")
    if len(lowered):
        layers = ", ".join(str(int(layer)) for layer in sorted(lowered["layer"].unique()))
        reasons.append(f"zero-ablating layer {layers} lowers that loss (to "
                       f"{_number(float(lowered['ce_zero'].astype(float).min()))})")
    if not reasons:
        return ""
    fvu = rows["fvu"].astype(float)
    return (f"**The re-randomized floor ({floor_model}) is a broken model:** {'; '.join(reasons)}; its SAEs leave "
            f"{_number(fvu.min(), 2)} to {_number(fvu.max(), 2)} of its variance unexplained. Its scores say what a "
            "model with redrawn weights gives, not what token identity gives: the context-only control answers "
            "that.")


def weak_sae_note(quality: pd.DataFrame, models: list[str]) -> str:
    """A caution when SAEs recover under 0.8 of the loss, leave over 10% of their latents dead, or their loss
    rests on fewer than 2,000 held-out tokens."""
    rows = quality[quality["model"].isin(models)] if len(quality) else quality
    if not len(rows):
        return ""
    recovered = rows["fraction_recovered"].astype(float)
    dead = rows["dead_fraction"].astype(float)
    failing = ([f"loss recovered as low as {recovered.min():.2f}"] if (recovered < 0.8).any() else []) + (
        [f"up to {dead.max():.0%} of latents dead"] if (dead > 0.1).any() else [])
    loss_tokens = rows["loss_tokens"].min() if "loss_tokens" in rows else np.nan
    if np.isfinite(loss_tokens) and loss_tokens < 2000:
        failing.append(f"loss measured on only {int(loss_tokens):,} held-out tokens, a noisy estimate: raise "
                       "saes.loss_windows")
    if not failing:
        return ""
    return (f"**Caution: some SAEs are weak** ({'; '.join(failing)}; well-trained SAEs recover 0.8 or more of "
            "the loss and leave few latents dead). "
            "Features a better-trained SAE would find can be missing on either side, so these scores can "
            "understate how similar the models are; more training tokens is the remedy (README \"Scaling up\").")


def permutation_floor_note(scores: pd.DataFrame, settings: SimilaritySettings) -> str:
    """A warning when the permutations are too few for any adjusted p to reach the significance level."""
    permutations = scores["n_permutations"].dropna()
    if not len(permutations):
        return ""
    smallest_p = 1.0 / (1.0 + float(permutations.min()))
    family = int(scores.groupby("metric")["p"].apply(lambda p: p.notna().sum()).max())
    smallest_adjusted = smallest_p * (family if settings.p_adjust == "holm" else 1)
    if smallest_adjusted < settings.significance:
        return ""
    needed = int(np.ceil(family / settings.significance))
    return (f"**Too few random pairings to find anything:** with {int(permutations.min())} per null and {family} "
            f"layer pairs, no adjusted p can fall below {smallest_adjusted:.3g}; raise similarity.n_permutations "
            f"above {needed}.")


def quality_lines(quality: pd.DataFrame, ceilings: pd.DataFrame, ceiling_summaries: pd.DataFrame,
                  models: list[str], significance: float) -> list[str]:
    """Bullets on the SAEs the scores rest on: loss recovered, dead latents, variance, seed-to-seed agreement."""
    lines = []
    for model in models:
        rows = quality[quality["model"] == model] if len(quality) else quality
        if not len(rows):
            continue
        recovered = rows["fraction_recovered"].astype(float)
        layers = sorted(int(layer) for layer in rows["layer"].unique())
        text = (f"{model}: {len(rows)} SAEs at layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}; "
                f"loss recovered {_number(recovered.min(), 2)} to {_number(recovered.max(), 2)}, "
                f"dead latents up to {rows['dead_fraction'].astype(float).max():.0%}, "
                f"variance unexplained (FVU) {_number(rows['fvu'].astype(float).min(), 2)} to "
                f"{_number(rows['fvu'].astype(float).max(), 2)}")
        own = ceilings[ceilings["model"] == model] if len(ceilings) else ceilings
        if len(own):
            n_layers = own["layer"].nunique()
            above = own[above_chance(own, significance)]
            per_metric = above.groupby("metric")["layer"].nunique().reindex(own["metric"].unique()).fillna(0)
            agreement = ", ".join(f"{int(count)} of {n_layers} layers for {metric}" for metric, count in per_metric.items())
            text += f"; its two seeds agree above chance at {agreement}"
        summary = (ceiling_summaries[ceiling_summaries["model_a"] == model] if len(ceiling_summaries)
                   else ceiling_summaries)
        if len(summary) and "mean_max_correlation" in summary:
            correlations = summary["mean_max_correlation"].astype(float)
            text += (f"; a feature's best match in its second seed correlates {_number(correlations.min(), 2)} to "
                     f"{_number(correlations.max(), 2)} on average")
        shared = rows["fraction_shared"].astype(float) if "fraction_shared" in rows else pd.Series(dtype=float)
        if np.isfinite(shared).any():
            cosine = rows["decoder_cosine_mean"].astype(float)
            # The literature's terms (Paulo & Belrose 2025; Song et al. 2025), to set beside published SAEs.
            low, high = f"{np.nanmin(shared):.1%}", f"{np.nanmax(shared):.1%}"
            text += (f"; paired one to one by decoder direction, its seeds share {low if low == high else low + ' to ' + high}"
                     f" of their latents at cosine 0.7 or more (mean cosine {_number(np.nanmin(cosine), 2)} to "
                     f"{_number(np.nanmax(cosine), 2)})")
        lines.append(f"- {text}.")
    return lines


def semantic_sentence(semantic: pd.DataFrame, significance: float) -> str:
    """How many (layer pair, category) cells were scored, and which are significant after adjustment."""
    if semantic is None or not len(semantic):
        return ""
    scored = semantic[~semantic["skipped"].astype(bool)]
    cells = scored.groupby(["layer_a", "layer_b", "category"]).size()
    if not len(cells):
        largest = int(semantic["n_pairs"].max()) if semantic["n_pairs"].notna().any() else 0
        return ("**Semantic subspaces:** no category had pairs enough to score at any layer pair (the largest had "
                f"{largest}, fewer than similarity.min_pairs; semantic.png lists the counts).")
    significant = scored[scored["p_adjusted"].astype(float) < significance]
    found = ("none is significant after adjustment" if not len(significant) else
             "significant after adjustment: " + "; ".join(
                 f"{row.category} at {row.layer_a} / {row.layer_b} on {row.metric} (excess {_number(row.excess)})"
                 for row in significant.itertuples()))
    return (f"**Semantic subspaces:** {len(cells)} (layer pair, category) cells had pairs enough to score "
            f"(at most {int(scored['n_pairs'].max())} pairs); {found}.")


@dataclass(frozen=True)
class ExperimentTables:
    """Every table the verdict reads, as the workflow wrote them."""

    pair_scores: dict
    """{(model_a, model_b): long score table of that pair}, floor pairs included."""
    quality: pd.DataFrame
    """The SAE quality table (model, layer, sae, fvu, fraction_recovered, ...)."""
    ceilings: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The seed-to-seed ceiling scores (model, layer, metric, ...)."""
    ceiling_summaries: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The ceiling matching summaries (model, layer, mean_max_correlation, ...)."""
    floors: dict = field(default_factory=dict)
    """{(model_a, model_b): (model_a, floor model)} for the pairs with a floor control."""
    semantic: dict = field(default_factory=dict)
    """{(model_a, model_b): semantic score table} where semantic subspaces were scored."""
    controls: dict = field(default_factory=dict)
    """{(model_a, model_b): its controls table (similarity/controls.py)} where the controls ran."""
    context_only: dict = field(default_factory=dict)
    """{(model_a, model_b): its context-only scores beside the full ones} where the controls ran."""
    untrained: dict = field(default_factory=dict)
    """{(model_a, model_b): its untrained dictionaries' scores beside the full ones} where the controls ran."""
    lexical: dict = field(default_factory=dict)
    """{(model_a, model_b): its lexical floor's scores beside the full ones} where the controls ran."""
    residual: dict = field(default_factory=dict)
    """{(model_a, model_b): its raw residual streams compared (similarity/residual.py)} where that ran."""
    function: dict = field(default_factory=dict)
    """{(model_a, model_b): its functional agreement per layer pair (causal/)} where the causal check ran."""
    models: dict = field(default_factory=dict)
    """{model id: what it is, in words (its manifest's description)}."""

    @classmethod
    def read(cls, paths: dict, floors: dict | None = None) -> "ExperimentTables":
        """The tables from their files. `paths` maps scores, quality, ceilings, ceiling_summaries and, where
        they ran, semantic, controls, context_only, untrained, lexical and residual to the workflow's files;
        per-pair tables are keyed by their model columns."""
        return cls(_by_pair(paths["scores"]), pd.read_csv(paths["quality"], sep="\t"), read_tables(paths["ceilings"]),
                   read_tables(paths["ceiling_summaries"]), dict(floors or {}), _by_pair(paths.get("semantic", ())),
                   _by_pair(paths.get("controls", ())), _by_pair(paths.get("context_only", ())),
                   _by_pair(paths.get("untrained", ())), _by_pair(paths.get("lexical", ())),
                   _by_pair(paths.get("residual", ())), function=_by_pair(paths.get("function", ())),
                   models=model_descriptions(paths.get("manifests", ())))


def model_descriptions(manifest_paths) -> dict:
    """{model id: its manifest's description} (source and location for a manifest written before descriptions)."""
    import json

    described = {}
    for path in manifest_paths:
        manifest = json.loads(Path(path).read_text())
        described[manifest["name"]] = manifest.get("description") or f"{manifest['source']}: {manifest['location']}"
    return described


def _by_pair(files) -> dict:
    """{(model_a, model_b): table} of per-pair tables (empty tables left out)."""
    tables = {}
    for path in files:
        table = pd.read_csv(path, sep="\t")
        if len(table):
            tables[(table["model_a"].iloc[0], table["model_b"].iloc[0])] = table
    return tables


def write_verdict(tables: ExperimentTables, settings: SimilaritySettings, out_markdown: str | Path,
                  out_table: str | Path) -> str:
    """The verdict of every real model pair -> Markdown/reST text and a table (VERDICT_COLUMNS).

    `settings` gives the significance level and the p adjustment. Returns the text written to out_markdown.
    """
    pair_scores, floors, quality = tables.pair_scores, tables.floors, tables.quality
    ceilings, ceiling_summaries, semantic = tables.ceilings, tables.ceiling_summaries, tables.semantic
    settings = as_settings(SimilaritySettings, settings)
    significance = settings.significance
    method = {"holm": "Holm", "bh": "Benjamini-Hochberg"}[settings.p_adjust]
    floor_pairs = set(floors.values())
    paragraphs, rows_by_pair = [], []
    for (model_a, model_b), scores in pair_scores.items():
        if (model_a, model_b) in floor_pairs:
            continue
        floor_key = floors.get((model_a, model_b))
        floor_scores = pair_scores.get(floor_key) if floor_key else None
        key = (model_a, model_b)
        controls = tables.controls.get(key)
        variants = {"context_only": tables.context_only.get(key), "untrained": tables.untrained.get(key),
                    "lexical": tables.lexical.get(key)}
        table = with_controls(pair_verdict(scores, floor_scores, significance), controls, variants)
        rows_by_pair.append(table)
        n_cells = int(table["n_layer_pairs"].max()) if len(table) else 0
        significant = table[table["n_significant"] > 0]
        lines = [f"**{model_a} vs {model_b}** ({n_cells} layer pairs; p adjusted with {method} across the layer "
                 f"pairs, per metric; significant means adjusted p < {significance:g})."]
        if model_a in tables.models and model_b in tables.models:
            lines += ["", f"*The models.* {model_a}: {tables.models[model_a]}. {model_b}: {tables.models[model_b]}."]
        floor_note = permutation_floor_note(scores, settings)
        if floor_note:
            lines += ["", floor_note]
        if not len(significant):
            lines.append("")
            lines.append(f"**Nothing is significant.** No layer pair of {model_a} and {model_b} scores above random "
                         "pairings of the same features on any metric after adjustment. At this size the experiment "
                         "cannot tell these feature spaces apart from unrelated ones.")
        else:
            counts = ", ".join(f"{row.metric} {row.n_significant}/{row.n_layer_pairs}" for row in table.itertuples())
            lines.append("")
            lines.append(consistency_sentence(scores, significance, model_a, model_b))
            lines.append("")
            lines.append(f"Significantly similar layer pairs, by metric: {counts}.")
        caution = weak_sae_note(quality, [model_a, model_b])
        if caution:
            lines += ["", caution]
        lines.append("")
        for row in table.itertuples():
            text = (f"- {row.metric}: best at layers {row.best_layer_a} / {row.best_layer_b}, "
                    f"observed {_number(row.observed)}{_interval(row.ci_low, row.ci_high)} against "
                    f"{_number(row.null_mean)} for random pairings (excess {_number(row.excess)}, "
                    f"adjusted p {_number(row.p_adjusted, 2)}"
                    + (", **significant**" if row.p_adjusted < significance else ", not significant") + ")")
            if np.isfinite(row.normalized):
                text += (f"; {_number(row.normalized, 2)}{_interval(row.normalized_ci_low, row.normalized_ci_high)} "
                         "of the seed-to-seed ceiling")
            elif row.normalized_note:
                text += f"; no fraction of the ceiling: {row.normalized_note}"
            if isinstance(row.floor_model, str) and not np.isfinite(row.floor_excess):
                # Unscored: matching kept too few pairs, which is the floor's answer (not a missing one). It
                # speaks for a model with redrawn weights, not for token identity (the context-only control does).
                pairs = f"{int(row.floor_n_pairs)} matched pairs" if np.isfinite(row.floor_n_pairs) else "too few pairs"
                text += (f"; the re-randomized floor ({row.floor_model}) keeps only {pairs} at these layers, too "
                         "few to score: a model with redrawn weights does not produce these matches")
            elif isinstance(row.floor_model, str):
                floor = (f"excess {_number(row.floor_excess)}, adjusted p {_number(row.floor_p_adjusted, 2)}"
                         + (f", on {int(row.floor_n_pairs)} matched pairs" if np.isfinite(row.floor_n_pairs) else ""))
                if row.floor_p_adjusted < significance:
                    text += (f"; the re-randomized floor ({row.floor_model}) is above chance too ({floor}), so part "
                             "of this needs no trained weights; the real pair "
                             + (f"exceeds it by {_number(row.excess_above_floor)}" if row.excess_above_floor >= 0
                                else f"falls below it by {_number(-row.excess_above_floor)}"))
                else:
                    # A floor at chance has no excess to subtract: the difference would only measure its noise.
                    text += (f"; the re-randomized floor ({row.floor_model}) is at chance here ({floor}): a model "
                             "with redrawn weights does not produce this score")
            lines.append(text + ".")
        control_text = control_paragraph(controls, variants, significance, model_a, model_b)
        if control_text:
            lines += ["", control_text]
        residual_text = residual_paragraph(tables.residual.get(key), model_b)
        if residual_text:
            lines += ["", residual_text]
        function_text = function_paragraph(tables.function.get(key), significance)
        if function_text:
            lines += ["", function_text]
        semantic_line = semantic_sentence(semantic.get((model_a, model_b)), significance)
        if semantic_line:
            lines += ["", semantic_line]
        broken = degenerate_floor_note(quality, floor_key[1]) if floor_key else ""
        if broken:
            lines += ["", broken]
        if floor_scores is None:
            lines += ["", f"No floor control ran for this pair: set `floor: true` on it to score {model_a} against a "
                          f"re-randomized copy of {model_b} (the paper's control: what a model with redrawn weights "
                          "gives; token identity is the context-only control's question)."]
        paragraphs.append("\n".join(lines))
    models = list(dict.fromkeys(model for pair in pair_scores for model in pair))
    quality_text = quality_lines(quality, ceilings, ceiling_summaries, models, significance)
    if quality_text:
        paragraphs.append("**The SAEs these scores rest on** (held-out positions):\n\n" + "\n".join(quality_text))
    text = "\n\n".join(paragraphs) + "\n"
    with atomic_path(out_markdown, suffix=".md") as temporary:
        Path(temporary).write_text(text, encoding="utf-8")
    verdict_table = pd.concat(rows_by_pair, ignore_index=True) if rows_by_pair else pd.DataFrame(columns=VERDICT_COLUMNS)
    write_tsv(verdict_table, out_table)
    return text


def read_tables(paths: list[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(path, sep="\t") for path in paths]
    frames = [frame for frame in frames if len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
