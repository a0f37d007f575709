"""The report's figures show their tables: every heatmap cell, annotation and bar is checked against the table
it was drawn from."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from matplotlib.image import imread

from sae_universality.report.figures import heatmap_figure, plot_heatmaps, plot_semantic_bars, semantic_figure

LAYERS_A, LAYERS_B = [0, 2, 4], [1, 3]

# (layer_a, layer_b) -> observed, null_mean, null_std, significant, and the first line its z cell must show.
RSA = {
    (0, 1): (0.5, 0.1, 0.05, True, "8.0*"),
    (0, 3): (0.034, 0.01, 0.02, False, "1.2"),
    (2, 1): (0.25, 0.3, 0.01, True, "-5.0*"),
    (2, 3): (np.nan, np.nan, np.nan, False, "–"),  # too few pairs: no score
    (4, 1): (-0.12, 0.0, 0.1, False, "-1.2"),
    # (4, 3): no row at all
}
PROCRUSTES = {
    (0, 1): (0.9, 0.6, 0.02, True, "15.0*"),
    (0, 3): (0.7, 0.6, 0.1, False, "1.0"),
    (2, 1): (0.65, 0.6, 0.05, False, "1.0"),
    (2, 3): (0.8, 0.6, 0.1, True, "2.0*"),
    (4, 1): (0.61, 0.6, 0.01, False, "1.0"),
    (4, 3): (0.6, 0.6, 0.1, False, "0.0"),
}


def score_table():
    rows = []
    # Layers out of order in the table: the figure sorts them.
    for metric, cells in (("rsa", RSA), ("procrustes", PROCRUSTES)):
        for (layer_a, layer_b), (observed, null_mean, null_std, significant, _) in sorted(cells.items(), reverse=True):
            rows.append({"model_a": "pythia", "model_b": "gemma", "layer_a": layer_a, "layer_b": layer_b,
                         "metric": metric, "observed": observed, "null_mean": null_mean, "null_std": null_std,
                         "excess": observed - null_mean, "z": (observed - null_mean) / null_std,
                         "ci_low": observed - 0.1, "ci_high": observed + 0.05, "n_pairs": 40 + layer_a,
                         "p": 0.001 if significant else 0.3,
                         "p_adjusted": 0.01 if significant else 0.6, "significant": significant})
    return pd.DataFrame(rows)


def panels(figure, titles):
    """The figure's axes titled with each of `titles`, in that order (colour bars and empty axes left out)."""
    by_title = {axis.get_title(): axis for axis in figure.axes if axis.get_title()}
    return [by_title[title] for title in titles]


def expected_grid(cells, column):
    """The table pivoted by hand: layer_a rows x layer_b columns, NaN where there is no row."""
    grid = np.full((len(LAYERS_A), len(LAYERS_B)), np.nan)
    for (layer_a, layer_b), (observed, null_mean, null_std, _, _) in cells.items():
        value = (observed - null_mean) / null_std if column == "z" else observed
        grid[LAYERS_A.index(layer_a), LAYERS_B.index(layer_b)] = value
    return grid


def cell_texts(axis, fontsize=8):
    """(row, column) -> the main text of each cell (the smaller detail lines left out)."""
    return {(int(round(text.get_position()[1])), int(round(text.get_position()[0]))): text.get_text()
            for text in axis.texts if text.get_fontsize() == fontsize}


@pytest.mark.parametrize("color_by", ["z", "observed"])
def test_heatmap_cells_are_the_table_pivoted_by_layers_on_one_scale(color_by):
    scores = score_table()
    figure = heatmap_figure(scores, "pythia vs gemma", color_by=color_by)
    rsa, procrustes = panels(figure, ["rsa", "procrustes"])
    for axis, cells in ((rsa, RSA), (procrustes, PROCRUSTES)):
        expected = expected_grid(cells, color_by)
        # Independently of the figure code: pandas' pivot of the same table.
        pivot = (scores[scores["metric"] == axis.get_title()]
                 .pivot(index="layer_a", columns="layer_b", values=color_by)
                 .reindex(index=LAYERS_A, columns=LAYERS_B).to_numpy())
        np.testing.assert_allclose(pivot, expected, rtol=1e-12)
        assert len(axis.images) == 1
        shown = np.ma.filled(np.ma.asarray(axis.images[0].get_array(), dtype=float), np.nan)
        np.testing.assert_allclose(shown, expected, rtol=1e-12, atol=1e-12)  # NaN exactly where expected
        assert [label.get_text() for label in axis.get_xticklabels()] == [str(layer) for layer in LAYERS_B]
        assert [label.get_text() for label in axis.get_yticklabels()] == [str(layer) for layer in LAYERS_A]
        assert axis.get_xlabel() == "layer of gemma" and axis.get_ylabel() == "layer of pythia"
    # One colour scale for every panel: a colour means the same z (or score) in each.
    limits = {axis.images[0].get_clim() for axis in (rsa, procrustes)}
    assert len(limits) == 1
    low, high = limits.pop()
    if color_by == "z":  # symmetric around chance, reaching the largest |z| of any panel (procrustes 0 / 1)
        assert (low, high) == pytest.approx((-15.0, 15.0))
    else:
        assert (low, high) == (0.0, 1.0)
    assert rsa.images[0].norm is procrustes.images[0].norm
    colorbars = [axis for axis in figure.axes if not axis.get_title() and axis.get_ylabel()]
    assert len(colorbars) == 1


def test_heatmap_numbers_are_the_coloured_quantity_with_interval_and_pairs():
    scores = score_table()
    z = heatmap_figure(scores, "t", color_by="z")
    observed = heatmap_figure(scores, "t", color_by="observed")
    for metric, cells in (("rsa", RSA), ("procrustes", PROCRUSTES)):
        expected = {(LAYERS_A.index(a), LAYERS_B.index(b)): values[4] for (a, b), values in cells.items()}
        expected.setdefault((2, 1), "–")  # rsa (4, 3): no row
        [axis] = panels(z, [metric])
        assert cell_texts(axis) == expected
        details = cell_texts(axis, fontsize=5.5)
        for (a, b), (value, null_mean, _, _, _) in cells.items():
            if np.isfinite(value):
                low, high = value - 0.1 - null_mean, value + 0.05 - null_mean
                cell = (LAYERS_A.index(a), LAYERS_B.index(b))
                excess = value - null_mean
                texts = [f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.2g}" for x in (excess, low, high)]
                assert details[cell] == f"{texts[0]} [{texts[1]}, {texts[2]}]\nn={40 + a}"
        # The paper's style: the raw score, no star; non-significant scored cells are hatched instead.
        [axis] = panels(observed, [metric])
        raw = {(LAYERS_A.index(a), LAYERS_B.index(b)): (f"{v[0]:.2f}" if abs(v[0]) >= 0.1 else f"{v[0]:.2g}")
               if np.isfinite(v[0]) else "–" for (a, b), v in cells.items()}
        raw.setdefault((2, 1), "–")
        assert cell_texts(axis) == raw
        hatched = {(int(round(patch.get_y() + 0.5)), int(round(patch.get_x() + 0.5)))
                   for patch in axis.patches if patch.get_hatch() == "///"}
        assert hatched == {(LAYERS_A.index(a), LAYERS_B.index(b)) for (a, b), values in cells.items()
                           if np.isfinite(values[0]) and not values[3]}
        bold = {cell for cell, text in zip(cell_texts(axis), axis.texts) if text.get_fontweight() == "bold"}
        assert bold == {(LAYERS_A.index(a), LAYERS_B.index(b)) for (a, b), values in cells.items() if values[3]}


def test_heatmap_without_significant_column_stars_raw_p():
    scores = score_table().drop(columns=["significant", "p_adjusted"])
    scores.loc[(scores["metric"] == "procrustes") & (scores["layer_a"] == 4) & (scores["layer_b"] == 3), "p"] = 0.049
    [axis] = panels(heatmap_figure(scores, "t"), ["procrustes"])
    texts = cell_texts(axis)
    assert texts[(2, 1)] == "0.0*" and texts[(0, 1)] == "1.0"
    assert "*: p < 0.05" in axis.figure.get_suptitle()


def test_plot_heatmaps_writes_the_figure_of_the_table(tmp_path):
    scores = score_table()
    plot_heatmaps(scores, tmp_path / "heatmaps.png", "pythia vs gemma")
    figure = heatmap_figure(scores, "pythia vs gemma")
    figure.savefig(tmp_path / "direct.png", dpi=110, format="png")
    written, direct = imread(tmp_path / "heatmaps.png"), imread(tmp_path / "direct.png")
    assert written.shape == direct.shape and np.array_equal(written, direct)
    # Another table gives another picture.
    plot_heatmaps(scores.assign(z=-scores["z"]), tmp_path / "other.png", "pythia vs gemma")
    assert not np.array_equal(imread(tmp_path / "other.png"), written)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no temporary left


def semantic_table():
    rows = []
    layout = {
        (0, 1): {"time": (20, False), "nature": (15, False), "emotions": (3, True)},
        (2, 3): {"nature": (12, False), "time": (25, False)},
        (4, 5): {"time": (4, True)},  # nothing scored: no panel
    }
    rng = np.random.default_rng(3)
    for (layer_a, layer_b), categories in layout.items():
        for category, (n_pairs, skipped) in categories.items():
            for metric in ("rsa", "procrustes"):
                observed = np.nan if skipped else round(float(rng.uniform(-0.2, 0.9)), 3)
                null_mean = round(float(rng.uniform(0, 0.3)), 3)
                ci = (np.nan, np.nan) if skipped or n_pairs < 15 else (observed - 0.05, observed + 0.08)
                rows.append({"model_a": "pythia", "model_b": "gemma", "layer_a": layer_a, "layer_b": layer_b,
                             "category": category, "metric": metric, "observed": observed, "null_mean": null_mean,
                             "ci_low": ci[0], "ci_high": ci[1], "n_pairs": n_pairs, "skipped": skipped,
                             "p_adjusted": np.nan if skipped else (0.01 if category == "time" else 0.4),
                             "significant": (not skipped) and category == "time"})
    return pd.DataFrame(rows)


def test_semantic_bars_are_the_excess_of_each_scored_category():
    table = semantic_table()
    figure = semantic_figure(table, "pythia vs gemma")
    axes = panels(figure, ["layer 0 vs 1", "layer 2 vs 3"])
    assert "layer 4 vs 5" not in {axis.get_title() for axis in figure.axes}
    for axis, (layer_a, layer_b) in zip(axes, [(0, 1), (2, 3)]):
        cell = table[(table["layer_a"] == layer_a) & (table["layer_b"] == layer_b) & ~table["skipped"]]
        categories = list(dict.fromkeys(cell["category"]))  # the table's order, skipped ones left out
        assert categories == (["time", "nature"] if layer_a == 0 else ["nature", "time"])
        assert [label.get_text() for label in axis.get_xticklabels()] == [
            f"{category}\n(n={cell[cell['category'] == category]['n_pairs'].iloc[0]})" for category in categories]
        bars = [container for container in axis.containers if isinstance(container, BarContainer)]
        assert [bars_of.get_label() for bars_of in bars] == ["rsa", "procrustes"]
        for offset, bars_of in zip((-0.2, 0.2), bars):
            rows = cell[cell["metric"] == bars_of.get_label()].set_index("category").loc[categories]
            heights = [patch.get_height() for patch in bars_of.patches]
            np.testing.assert_allclose(heights, rows["observed"] - rows["null_mean"], rtol=0, atol=1e-12)
            centres = [patch.get_x() + patch.get_width() / 2 for patch in bars_of.patches]
            np.testing.assert_allclose(centres, np.arange(len(categories)) + offset, atol=1e-12)
            alphas = [patch.get_facecolor()[3] for patch in bars_of.patches]
            np.testing.assert_allclose(alphas, np.where(rows["significant"], 1.0, 0.35))
        # Error bars: the interval shifted by the null mean, only where there is one.
        segments = np.concatenate([container.lines[2][0].get_segments() for container in axis.containers
                                   if not isinstance(container, BarContainer) and len(container.lines[2])])
        with_interval = cell[cell["ci_low"].notna()]
        expected = sorted((round(row.ci_low - row.null_mean, 9), round(row.ci_high - row.null_mean, 9))
                          for row in with_interval.itertuples())
        assert sorted((round(low[1], 9), round(high[1], 9)) for low, high in segments) == expected
        assert len(expected) == (2 if layer_a == 2 else 4)  # intervals to check; (2, 3) nature has none (n < 15)
    footnote = " ".join(text.get_text() for text in figure.texts)
    assert "skipped (too few pairs; most in any layer pair): time 4, emotions 3" in footnote


def test_semantic_figure_says_when_nothing_was_scored(tmp_path):
    table = semantic_table().assign(skipped=True)
    figure = semantic_figure(table, "t")
    texts = [text.get_text() for axis in figure.axes for text in axis.texts]
    assert texts == ["no semantic category reached min_pairs in any layer pair"]
    assert not any(axis.patches for axis in figure.axes)
    assert "skipped (too few pairs; most in any layer pair): time 25, nature 15, emotions 3" in figure.texts[0].get_text()
    plot_semantic_bars(table, tmp_path / "semantic.png", "t")
    direct = tmp_path / "direct.png"
    semantic_figure(table, "t").savefig(direct, dpi=110, format="png")
    assert np.array_equal(imread(tmp_path / "semantic.png"), imread(direct))


def test_training_curves_are_labelled_and_mark_the_held_out_fvu():
    from sae_universality.saes.stage import CURVE_PANELS, training_curves_figure

    def curve(sae, start):
        steps = np.arange(0, 100, 10)
        return pd.DataFrame({"model": "m", "layer": 3, "sae": sae, "step": steps, "loss": start / (1 + steps),
                             "fvu": start / (2 + steps), "mean_l0": 32.0, "dead_fraction": 0.0})

    quality = pd.DataFrame({"model": "m", "layer": 3, "sae": ["seed0", "seed1"], "fvu": [0.31, 0.42]})
    figure = training_curves_figure([curve("seed0", 1.0), curve("seed1", 2.0)], quality)
    axes = figure.axes
    assert [axis.get_title() for axis in axes] == [title for title, _ in CURVE_PANELS.values()]
    assert all(axis.get_xlabel() == "optimizer step" and axis.get_ylabel() for axis in axes)
    fvu = axes[1]
    dots = [line for line in fvu.lines if line.get_marker() == "o"]
    assert [tuple(line.get_xydata()[0]) for line in dots] == [(90.0, 0.31), (90.0, 0.42)]
    # Each dot has its curve's colour; the curves are the table's values.
    curves = [line for line in fvu.lines if line.get_marker() != "o"]
    assert [line.get_color() for line in curves] == [line.get_color() for line in dots]
    np.testing.assert_allclose(curves[1].get_ydata(), 2.0 / (2 + np.arange(0, 100, 10)))
    assert not [line for line in training_curves_figure([curve("seed0", 1.0)]).axes[1].lines if line.get_marker() == "o"]
