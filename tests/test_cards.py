"""Feature cards: the tokens a decoder direction promotes and suppresses, against float64 by hand."""

import numpy as np
import pytest
import torch

from conftest import tiny_causal_lm
from sae_universality.cards.output_tokens import final_norm, output_token_effects
from sae_universality.errors import UserError


def tiny(architecture: str):
    model = tiny_causal_lm(architecture)
    with torch.no_grad():  # gains and biases away from their initial 1 and 0, so that a missed one shows
        for parameter in final_norm(model).parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    return model


def by_hand(model, architecture: str, directions: np.ndarray) -> np.ndarray:
    """(n, vocabulary) logit effects in float64, each norm written out."""
    norm = final_norm(model)
    x = directions.astype(np.float64)
    weight = norm.weight.detach().double().numpy()
    if architecture == "gpt_neox":
        centred = x - x.mean(axis=1, keepdims=True)
        normed = centred / np.sqrt((centred ** 2).mean(axis=1, keepdims=True) + norm.eps) * weight  # no bias
    else:
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
        gain = 1.0 + weight if architecture == "gemma3" else weight
        normed = x / np.sqrt((x ** 2).mean(axis=1, keepdims=True) + eps) * gain
    return normed @ model.get_output_embeddings().weight.detach().double().numpy().T


@pytest.mark.parametrize("architecture", ["llama", "gemma3", "gpt_neox"])
def test_promoted_and_suppressed_tokens_are_the_direction_through_the_final_norm_and_head(architecture):
    model = tiny(architecture)
    directions = np.random.default_rng(1).normal(size=(7, 16))
    tokens = output_token_effects(model, directions, k=5, block=3)
    expected = by_hand(model, architecture, directions)
    for row in range(7):
        order = np.argsort(-expected[row])
        assert tokens.promoted_ids[row].tolist() == order[:5].tolist()
        assert tokens.suppressed_ids[row].tolist() == order[::-1][:5].tolist()
        np.testing.assert_allclose(tokens.promoted_effects[row], expected[row, order[:5]], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(tokens.suppressed_effects[row], expected[row, order[::-1][:5]], rtol=1e-4, atol=1e-5)
    # Scaling a direction changes no ranking: the norm takes the scale out.
    scaled = output_token_effects(model, directions * 7.0, k=5)
    assert (scaled.promoted_ids == tokens.promoted_ids).all()


def test_a_model_without_a_known_final_norm_is_one_line():
    class Headless(torch.nn.Module):
        base_model = torch.nn.Module()

    with pytest.raises(UserError, match="cannot find the final norm of a Headless"):
        final_norm(Headless())


def test_an_activation_profile_counts_density_bins_and_samples_each_quantile_range():
    from sae_universality.cards.activations import activation_profile

    rng = np.random.default_rng(2)
    values = np.zeros(1000)
    firing = rng.choice(1000, 200, replace=False)
    values[firing] = rng.exponential(2.0, size=200)
    profile = activation_profile(values, bins=10, quantiles=(0, 0.5, 0.9, 1.0), per_range=4, seed=1)
    assert profile.n_positions == 1000 and profile.density == pytest.approx(0.2)
    assert profile.histogram_counts.sum() == 200  # every firing position in a bin, the largest included
    assert profile.histogram_edges[0] == 0 and profile.histogram_edges[-1] == pytest.approx(values.max())
    np.testing.assert_allclose(profile.quantile_edges, np.quantile(values[firing], [0, 0.5, 0.9, 1.0]))
    for (low, high), sample, last in zip(zip(profile.quantile_edges[:-1], profile.quantile_edges[1:]),
                                         profile.quantile_samples, (False, False, True)):
        assert len(sample) == 4 and len(set(sample.tolist())) == 4
        assert ((values[sample] >= low) & ((values[sample] <= high) if last else (values[sample] < high))).all()
    assert activation_profile(values, seed=1).quantile_samples[0].tolist() == \
        activation_profile(values, seed=1).quantile_samples[0].tolist()  # seeded: same config, same cards
    silent = activation_profile(np.zeros(50))
    assert silent.density == 0 and silent.histogram_counts.sum() == 0 and all(len(s) == 0 for s in silent.quantile_samples)


def test_feature_columns_read_two_features_at_aligned_rows(tmp_path):
    import h5py
    import scipy.sparse

    from sae_universality.saes.codes import feature_columns

    rng = np.random.default_rng(3)
    dense = np.where(rng.random((300, 12)) < 0.2, rng.random((300, 12)), 0.0).astype(np.float32)
    sparse = scipy.sparse.csr_matrix(dense)
    with h5py.File(tmp_path / "codes.h5", "w") as handle:  # the layout encode_cache_to_codes writes
        handle["indptr"], handle["indices"], handle["values"] = sparse.indptr.astype(np.int64), \
            sparse.indices.astype(np.int32), sparse.data
        handle.attrs.update(n_positions=300, n_features=12, kind="codes")
    rows = np.sort(rng.choice(300, 90, replace=False))
    np.testing.assert_allclose(feature_columns(tmp_path / "codes.h5", rows, [5, 2], chunk_rows=17), dense[rows][:, [5, 2]])


def test_a_card_is_self_contained_escaped_and_shades_tokens_by_activation():
    import re
    from html.parser import HTMLParser

    from sae_universality.cards.activations import activation_profile
    from sae_universality.cards.page import CardSide, PairCard, card_html

    values = np.zeros(100)
    values[[3, 10, 50]] = [1.0, 2.0, 4.0]
    profile = activation_profile(values, bins=4, quantiles=(0, 0.5, 1.0), per_range=1)
    side_a = CardSide("smollm2", 9, 17, profile, [[(" the", 0.0), ("<script>", 4.0)], [(" and", 2.0)]],
                      [[[(" x", 1.0)]], [[(" y", 4.0)]]], [(" Paris", 1.5), ("\n", 0.9)], [(" not", -1.2)])
    side_b = CardSide("gemma3", 10, 301, profile, [[(" and", 1.0)]], [[], []], [(" and", 2.0)], [("&", -0.5)])
    page = card_html(PairCard(side_a, side_b, 0.412, "best", rank_among_candidates=1,
                              filters={"non-concept": True, "threshold": True}, context_only_correlation=0.2))
    # Nothing leaves the page: no URL, no external script, style sheet, image or font.
    assert not re.search(r"https?://|//[a-z]|src=|href=|@import|url\(", page, re.I)
    assert "<script>" not in page and "&lt;script&gt;" in page  # token text is escaped
    # Shading: the strongest token of a side is fully coloured, half as strong is half.
    assert 'rgba(31, 119, 180, 1.00)" title="4">&lt;script&gt;' in page
    assert 'rgba(31, 119, 180, 0.50)" title="2"> and' in page
    assert "fires at 3.00% of 100 aligned positions" in page
    assert page.count("<rect") == 8  # four histogram bins per side
    assert "\\n" in page and "+1.5" in page and "-1.2" in page  # output tokens with their effects, newline visible
    assert "rank 1 among the B feature's candidates" in page and "without the current token 0.200" in page

    class Checker(HTMLParser):  # every opened element closed, in order
        def __init__(self):
            super().__init__()
            self.stack = []

        def handle_starttag(self, tag, attrs):
            if tag not in ("meta", "br"):
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack.pop() == tag

    checker = Checker()
    checker.feed(page)
    assert checker.stack == []


def test_the_pca_layout_is_the_unit_directions_on_their_first_two_principal_axes():
    """Against float64 by hand: the eigenvectors of the unit rows' covariance, each sign fixed by its largest
    loading."""
    from sae_universality.cards.layout import feature_layout
    from sae_universality.settings import CardSettings

    rng = np.random.default_rng(3)
    directions = rng.normal(size=(60, 7)) * np.array([5, 3, 1, 1, 1, 1, 1]) * rng.uniform(0.5, 2, size=(60, 1))
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    axes = vectors[:, np.argsort(values)[::-1][:2]].T
    axes *= np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])[:, None]
    layout = feature_layout(directions, CardSettings(map_layout="pca"))
    np.testing.assert_allclose(layout, centred @ axes.T, atol=1e-10)
    # A direction's norm does not move it: only where it points.
    np.testing.assert_allclose(feature_layout(unit, CardSettings(map_layout="pca")), layout, atol=1e-10)


def test_the_umap_layout_is_seeded_and_keeps_planted_groups_of_directions_together():
    """Three groups of directions around three random axes: in the map each point's nearest neighbour is in its
    own group, and the same seed draws the same map."""
    from sae_universality.cards.layout import feature_layout
    from sae_universality.settings import CardSettings

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 24))
    group = np.repeat(np.arange(3), 40)
    directions = centres[group] + 0.25 * rng.normal(size=(120, 24))
    settings = CardSettings(map_layout="umap", map_neighbors=10)
    layout = feature_layout(directions, settings)
    assert layout.shape == (120, 2) and np.isfinite(layout).all()
    np.testing.assert_array_equal(feature_layout(directions, settings), layout)
    distance = np.linalg.norm(layout[:, None] - layout[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    assert np.mean(group[distance.argmin(axis=1)] == group) > 0.95


def test_an_unknown_map_layout_is_one_line():
    from sae_universality.cards.layout import feature_layout
    from sae_universality.settings import CardSettings

    with pytest.raises(UserError, match="cards.map_layout: unknown layout 'tsne'; use one of umap, pca"):
        feature_layout(np.eye(3), CardSettings(map_layout="tsne"))


def test_the_map_section_draws_every_feature_links_the_kept_pairs_and_keeps_its_data_inside_the_page():
    import json
    import re

    from sae_universality.cards.linked_map import (LEXICAL, NON_LEXICAL, MapPair, MapSide, correlation_colour,
                                                   map_section)

    side_a = MapSide("smollm2 layer 9", np.arange(10.0).reshape(5, 2), {0: ["</script><b>"], 3: [" and"]},
                     [["x"]] * 5)
    side_b = MapSide("gemma3 layer 10", np.ones((4, 2)), {1: [" and"]}, [["y"]] * 4)
    pairs = [MapPair(3, 1, 0.4, True, "#card-best-a3-b1"), MapPair(0, 2, 0.9, False)]
    section = map_section(side_a, side_b, pairs, threshold=0.1)
    assert not re.search(r"https?://|src=|@import|url\(", section)
    payload = re.search(r'<script type="application/json" id="map-data">(.*?)</script>', section, re.S).group(1)
    assert "</script><b>" not in payload  # a token cannot end the data block early
    data = json.loads(payload)
    assert data["pairs"] == [[0, 2, 0.9, False, None, None], [3, 1, 0.4, True, "#card-best-a3-b1", None]]  # strongest first
    assert data["a"]["fires_on"]["0"] == ["</script><b>"]
    assert data["colours"]["correlation"] == [correlation_colour(0.9, 0.1, 0.9), correlation_colour(0.4, 0.1, 0.9)]
    assert data["colours"]["lexical"] == [NON_LEXICAL, LEXICAL]
    # The scale runs from light (the threshold) to dark (the strongest pair), clipped outside.
    assert correlation_colour(0.1, 0.1, 0.9) == "#fde725" and correlation_colour(0.9, 0.1, 0.9) == "#440154"
    assert correlation_colour(-1, 0.1, 0.9) == "#fde725" and correlation_colour(2, 0.1, 0.9) == "#440154"
    # Every feature has a point, placed in its panel (margins kept, y down); a panel with every point at one
    # spot still draws them inside it.
    assert len(data["a"]["xy"]) == 5 and len(data["b"]["xy"]) == 4
    assert data["a"]["xy"][0] == [12.0, 388.0] and data["a"]["xy"][4] == [448.0, 12.0]
    assert data["b"]["xy"] == [[12.0, 388.0]] * 4


def test_kept_pairs_take_their_semantic_category_and_the_map_colours_by_it():
    """A pair's category is its A feature's top token's, else its B feature's; the map lists the categories by
    size with one colour each, and offers the mode only where some pair has one."""
    import json
    import re

    from sae_universality.cards.linked_map import CATEGORY_COLOURS, NO_CATEGORY, MapPair, MapSide, map_section
    from sae_universality.cards.stage import pair_categories

    categories = {"months": ["january", "may"], "verbs": ["may", "run"]}
    tokens_a = {0: [" January", " x"], 1: [" cat"], 2: [" May"]}
    tokens_b = {5: [" run"], 6: [" dog"], 7: [" x"]}
    assert pair_categories([(0, 7), (1, 5), (1, 6), (2, 7)], tokens_a, tokens_b, categories) == \
        ["months", "verbs", None, "months"]  # " May" is in both lists: the first by name
    assert pair_categories([(0, 7)], tokens_a, tokens_b, {}) == [None]

    side = MapSide("m layer 1", np.zeros((3, 2)), {}, [["t"]] * 3)
    pairs = [MapPair(0, 0, 0.5, False, category="verbs"), MapPair(1, 1, 0.4, False, category="months"),
             MapPair(2, 2, 0.3, False, category="months")]
    section = map_section(side, side, pairs)
    data = json.loads(re.search(r'id="map-data">(.*?)</script>', section, re.S).group(1))
    assert data["colours"]["category"] == [CATEGORY_COLOURS[1], CATEGORY_COLOURS[0], CATEGORY_COLOURS[0]]
    assert '<option value="category">' in section
    assert re.search(r"months \(2\).*verbs \(1\).*no category \(0\)", section)
    plain = map_section(side, side, [MapPair(0, 0, 0.5, False)])
    assert '<option value="category">' not in plain and json.loads(
        re.search(r'id="map-data">(.*?)</script>', plain, re.S).group(1))["colours"]["category"] == [NO_CATEGORY]
