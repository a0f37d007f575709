"""Semantic subspaces: keyword categories, their assignment to features, and the rematch within them."""

import numpy as np
import pytest

from sae_universality.errors import UserError
from sae_universality.matching.categories import assign_categories, load_categories




def test_shipped_categories_are_rich_lowercase_single_words():
    categories = load_categories()
    required = {"time", "calendar", "people_and_roles", "nature", "emotions", "month_names", "countries", "biology"}
    assert required <= set(categories)
    for name, words in categories.items():
        assert len(words) >= 24, name
        assert all(word == word.lower() and " " not in word for word in words)
        assert len(set(words)) == len(words)
    assert {"january", "december"} <= set(categories["month_names"])


def test_load_categories_from_file_and_extra(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("tools: [Hammer, saw]\nmonth_names: [jan]\n")
    loaded = load_categories(path, extra={"tools": ["drill"], "music": ["piano"]})
    assert loaded == {"tools": ["drill"], "month_names": ["jan"], "music": ["piano"]}
    shipped = load_categories(extra={"music": ["Piano", "piano"]})
    assert shipped["music"] == ["piano"] and "biology" in shipped
    with pytest.raises(UserError, match="cannot read"):
        load_categories(tmp_path / "missing.yaml")
    path.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="must map category names"):
        load_categories(path)
    with pytest.raises(UserError, match="single words"):
        load_categories(extra={"places": ["new york"]})


def test_assign_categories_needs_keyword_token_that_reads_as_a_word():
    categories = {"month_names": ["january", "may", "jan"], "emotions": ["joy", "happy"], "modal": ["may"]}
    top_tokens = ["▁January", "Ġjanuary", "jan", "▁happy", "▁the", "##joy", ["▁May", "▁June"], [], None, "Jan"]
    contexts = ["in January 2020", "on 5 january", "the janitor left", "so happy today", "the cat", "joyful",
                ["it may rain", "June"], [], None, "Jan.▁5"]
    assigned = assign_categories(top_tokens, contexts, categories)
    np.testing.assert_array_equal(assigned["month_names"], [0, 1, 6, 9])
    np.testing.assert_array_equal(assigned["emotions"], [3])
    np.testing.assert_array_equal(assigned["modal"], [6])
    assert assigned["month_names"].dtype == np.int64
    without_context = assign_categories(top_tokens, None, categories)
    np.testing.assert_array_equal(without_context["month_names"], [0, 1, 2, 6, 9])
    np.testing.assert_array_equal(without_context["emotions"], [3, 5])
    with pytest.raises(ValueError, match="contexts"):
        assign_categories(top_tokens, contexts[:-1], categories)
