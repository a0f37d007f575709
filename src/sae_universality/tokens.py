"""Token strings: how matching, the non-concept filter and the semantic categories read them.

One normalization for every reader, so a token counts as the same word in the
shared-token filter, the junk filter and the category assignment. Tokenizers
mark whitespace inside their token strings: SentencePiece writes a space as
"▁", GPT-2's byte-level BPE writes a space, newline and tab as "Ġ", "Ċ" and "ĉ";
WordPiece marks a word's continuation with a leading "##".
"""

from __future__ import annotations

import re
import unicodedata

# <s>, </s>, <|endoftext|>, <0x0A>, [CLS]: special tokens name no concept.
_SPECIAL_TOKEN = re.compile(r"^(<[^<>\s]*>|\[[A-Z_]+\])$")
_WHITESPACE_MARKERS = str.maketrans({"\u2581": " ", "\u0120": " ", "\u010a": "\n", "\u0109": "\t"})  # ▁ Ġ Ċ ĉ
# "##ing" continues a word; "##" or "###" alone is punctuation (a Markdown heading), not a marker.
_WORDPIECE_CONTINUATION = re.compile(r"^##(?=\w)")


def marked_as_text(text: str) -> str:
    """A token string or a context with the tokenizers' whitespace markers turned back into whitespace."""
    return text.translate(_WHITESPACE_MARKERS)


def normalize_token(token: str) -> str:
    """A token string as a plain lowercase word: markers and surrounding whitespace removed.

    "▁Paris", "ĠParis", "Paris " and "PARIS" all give "paris"; "##ing" gives "ing"; "Ċ" gives "".
    """
    return _WORDPIECE_CONTINUATION.sub("", marked_as_text(token).strip()).lower()


def is_junk_token(token: str) -> bool:
    """True for tokens that carry no concept: whitespace, punctuation or symbols only, special tokens.

    Digits are not junk: numbers (years, counts, prices) are concepts.
    """
    if _SPECIAL_TOKEN.match(token.strip()):
        return True
    normalized = normalize_token(token)
    return all(unicodedata.category(character)[0] in "PSZC" for character in normalized)


def shares_a_token(tokens_a, tokens_b) -> bool:
    """True when two features' top tokens have a normalized token in common (empty strings excepted)."""
    return bool(({normalize_token(t) for t in tokens_a} & {normalize_token(t) for t in tokens_b}) - {""})
