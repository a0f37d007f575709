import json

import numpy as np
import pytest

from sae_universality.text.corpus import (
    build_windows, cut_windows, fingerprint, read_text_files, read_wikipedia_dump, read_windows,
    select_windows, wikipedia_sample_path, write_windows,
)
from sae_universality.errors import UserError

from conftest import TEXT, documents


@pytest.mark.parametrize("window_chars", [16, 50, 180, 10_000])
def test_windows_are_exact_slices_cut_at_whitespace(window_chars):
    long_word = "pneumonoultramicroscopicsilicovolcanoconiosis"  # 45 characters: longer than the small windows
    cuts_inside_words = 0
    for document in [*documents(), f"A miner got {long_word} from the dust\nof the mine."]:
        pieces = cut_windows(document, window_chars)
        assert pieces, "every non-empty document yields a window"
        for start, text in pieces:
            assert document[start:start + len(text)] == text
            assert len(text) <= window_chars
            assert not text[0].isspace() and not text[-1].isspace()
            end = start + len(text)
            # A cut inside a word only happens when one word is longer than a window.
            cut_inside_a_word = end < len(document) and not document[end].isspace()
            assert not cut_inside_a_word or (" " not in text and "\n" not in text), text
            cuts_inside_words += cut_inside_a_word
        # Windows cover every non-whitespace character exactly once, in order.
        covered = "".join(text for _, text in pieces)
        assert "".join(covered.split()) == "".join(document.split())
    # The long word is cut exactly when it does not fit a window: the check above ran on such cuts.
    assert (cuts_inside_words > 0) == (window_chars < len(long_word))


def test_select_windows_is_deterministic_and_respects_the_budget():
    docs = documents() * 20
    first = select_windows(docs, 120, token_budget=500, windows_per_document=None, order="shuffle", seed=1)
    again = select_windows(docs, 120, token_budget=500, windows_per_document=None, order="shuffle", seed=1)
    other = select_windows(docs, 120, token_budget=500, windows_per_document=None, order="shuffle", seed=2)
    assert first == again
    assert first != other
    estimated = sum(len(w.text) for w in first) / 4
    assert 500 <= estimated < 500 + 120 / 4 + 1  # stops at the first window past the budget
    assert [w.window_index for w in first] == list(range(len(first)))
    for window in first:
        assert docs[window.doc_index][window.char_start:window.char_start + len(window.text)] == window.text


def test_first_order_with_one_window_per_document_is_the_papers_setup():
    docs = documents()
    chosen = select_windows(docs, 100, token_budget=None, windows_per_document=1, order="first", seed=0)
    assert [w.doc_index for w in chosen] == list(range(len(docs)))
    assert all(w.char_start == 0 for w in chosen)


@pytest.fixture(scope="module")
def wikipedia_articles():
    """The sample's articles, parsed once for this module (mwparserfromhell takes half a minute)."""
    return list(read_wikipedia_dump(wikipedia_sample_path()))


def test_wikipedia_sample_is_real_prose(wikipedia_articles):
    articles = wikipedia_articles
    assert 90 <= len(articles) <= 110
    total = sum(len(a) for a in articles)
    assert 2_500_000 < total < 4_000_000
    joined = "\n".join(articles)
    for markup in ("[[", "]]", "{{", "}}", "<ref", "'''", "thumb|"):
        assert joined.count(markup) < 20, markup
    assert any(a.startswith("Anarchism") or "anarchism" in a[:300].lower() for a in articles)


def test_wikipedia_leads_are_real_prose_and_join_the_sample(wikipedia_articles, monkeypatch):
    import sae_universality.text.corpus as data

    leads = list(data.read_wikipedia_leads(data.wikipedia_leads_path()))
    assert len(leads) == 10_033
    assert 4_500_000 < sum(len(lead) for lead in leads) < 5_500_000
    assert leads[0].startswith("20th-century classical music is Western art music")
    # Running prose: sentences, few markup remnants, most leads a few sentences long.
    assert np.median([lead.count(". ") for lead in leads]) >= 2
    joined = "\n".join(leads)
    for markup in ("[[", "{{", "<ref", "'''"):
        assert joined.count(markup) < 5, markup
    # The whole articles first, then every lead. The dump's parse is the fixture's: the test above checks it,
    # and parsing it again would only cost half a minute.
    parsed = []

    def parsed_articles(path):
        parsed.append(path)
        return iter(wikipedia_articles)

    monkeypatch.setattr(data, "read_wikipedia_dump", parsed_articles)
    both = data.load_documents({"source": "wikipedia"})
    assert parsed == [data.wikipedia_sample_path()]
    assert both == wikipedia_articles + leads
    assert both[0].lower().count("anarch") > 10 and len(both[0]) > 10_000


def test_text_and_jsonl_files(tmp_path):
    (tmp_path / "a.txt").write_text("First document.\nSecond line.")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "Doc two"}) + "\n\n" + json.dumps({"text": "Doc three"}) + "\n")
    docs = list(read_text_files([tmp_path / "a.txt", tmp_path / "b.jsonl"]))
    assert docs == ["First document.\nSecond line.", "Doc two", "Doc three"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: no 'text' field"):
        list(read_text_files([tmp_path / "bad.jsonl"]))
    with pytest.raises(UserError, match="does not exist"):
        list(read_text_files([tmp_path / "missing.txt"]))


def test_windows_round_trip_and_fingerprint(tmp_path):
    corpus = {"source": "files", "paths": [], "window_chars": 100, "token_budget": None,
              "windows_per_document": None, "order": "first", "seed": 0}
    (tmp_path / "doc.txt").write_text(TEXT)
    corpus["paths"] = [str(tmp_path / "doc.txt")]
    windows = build_windows(corpus)
    write_windows(windows, tmp_path / "w.jsonl")
    assert read_windows(tmp_path / "w.jsonl") == windows
    first = fingerprint(tmp_path / "w.jsonl")
    write_windows(windows[:-1], tmp_path / "w.jsonl")
    assert fingerprint(tmp_path / "w.jsonl") != first
    assert not list(tmp_path.glob(".w.jsonl*")), "no temporary file is left behind"
