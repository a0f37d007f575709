"""The non-concept filter: which features read as concepts, and which pairs share a top token."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..tokens import is_junk_token, normalize_token

# ---------------------------------------------------------------------------
# Non-concept filter
# ---------------------------------------------------------------------------

def _tokens_of(top_tokens: Sequence | Mapping | None, feature: int, n_top_tokens: int) -> Sequence[str]:
    if isinstance(top_tokens, Mapping):
        tokens = top_tokens.get(feature, ())
    else:
        tokens = top_tokens[feature]
    return list(tokens)[:n_top_tokens]


class _TokenJudge:
    """Caches per-feature junk decisions and normalized token sets for one side."""

    def __init__(self, top_tokens, n_features: int, n_top_tokens: int, junk_fraction: float, side: str):
        if not isinstance(top_tokens, Mapping) and len(top_tokens) != n_features:
            raise ValueError(
                f"top_tokens_{side} has {len(top_tokens)} entries but model {side.upper()} has {n_features} features"
            )
        self.top_tokens, self.n_top_tokens, self.junk_fraction = top_tokens, n_top_tokens, junk_fraction
        self._junk: dict[int, bool] = {}
        self._normalized: dict[int, frozenset[str]] = {}
        self._token_is_junk: dict[str, bool] = {}

    def is_junk(self, feature: int) -> bool:
        """More than junk_fraction of the top tokens are junk; no tokens at all counts as junk."""
        if feature not in self._junk:
            tokens = _tokens_of(self.top_tokens, feature, self.n_top_tokens)
            for token in tokens:
                if token not in self._token_is_junk:
                    self._token_is_junk[token] = is_junk_token(token)
            n_junk = sum(self._token_is_junk[token] for token in tokens)
            self._junk[feature] = not tokens or n_junk > self.junk_fraction * len(tokens)
        return self._junk[feature]

    def normalized(self, feature: int) -> frozenset[str]:
        """Non-empty normalized top token strings (whitespace tokens cannot be shared)."""
        if feature not in self._normalized:
            tokens = _tokens_of(self.top_tokens, feature, self.n_top_tokens)
            self._normalized[feature] = frozenset(filter(None, map(normalize_token, tokens)))
        return self._normalized[feature]
