"""Token strings: one normalization for the shared-token filter, the junk filter and the categories."""

import pytest

from sae_universality.tokens import is_junk_token, marked_as_text, normalize_token, shares_a_token


@pytest.mark.parametrize(
    "token, junk",
    [("\n", True), ("▁", True), ("Ġ", True), ("Ċ", True), (",", True), ("...", True), ("<s>", True),
     ("<|endoftext|>", True), ("[CLS]", True), ("<0x0A>", True), ("—", True), ("$", True),
     ("▁the", False), ("Ġcat", False), ("2019", False), ("7", False), ("é", False), ("日本", False)],
)  # fmt: skip
def test_is_junk_token(token, junk):
    assert is_junk_token(token) is junk


def test_normalize_token():
    tokens = ["▁Paris", "ĠParis", " PARIS\n", "Ċ"]
    assert [normalize_token(token) for token in tokens] == ["paris", "paris", "paris", ""]


def test_normalize_token_reads_every_tokenizer_family_alike():
    # GPT-2 byte-level BPE marks newlines too; WordPiece marks continuations; "##" alone is punctuation.
    assert normalize_token("Ċhello") == "hello"
    assert normalize_token("##ing") == "ing"
    assert normalize_token("##") == "##" and is_junk_token("##") and is_junk_token("###")
    assert normalize_token("▁New▁York") == "new york"
    assert marked_as_text("ĠtheĊcat▁sat") == " the\ncat sat"


def test_shares_a_token_ignores_markers_case_and_empty_tokens():
    assert shares_a_token(["▁Paris", "▁France"], ["Ġparis"])
    assert not shares_a_token(["▁Paris"], ["ĠLondon"])
    assert not shares_a_token(["Ċ", "▁"], ["Ġ", " "])
