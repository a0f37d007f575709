"""Match SAE features of model A to features of model B by activation correlation.

Stage 5 of METHOD.md. Three steps, each a pure function of arrays:

1. Pearson correlation of every A feature with every B feature over aligned
   positions, from streamed sums (n, sum a, sum b, sum a^2, sum b^2, sum b a^T).
   Sparse codes (TopK SAEs: k of F latents per position) are multiplied as
   sparse x sparse, so the cost follows the nonzeros (about n k^2 products)
   instead of n F_A F_B for the dense product of z-scored columns.
2. Many-to-one: each B feature's most correlated A feature ("mean max
   correlation"), streamed over blocks of A features when the F_A x F_B
   matrix is too big to hold (`feature_block`).
3. Filters, cumulative, in this order: non-concept -> one-to-one -> threshold.

Precision: all sums, including the cross products, are accumulated in float64.
The raw-moment formula subtracts sum_a sum_b / n from sum ab; in float32 that
cancellation loses about 7 digits over 1e5 positions, in float64 the error
stays below 1e-10 for activations whose mean is within 1e4 standard deviations
of zero. The price is memory: the accumulator is F_B x F_A x 8 bytes
(16,384 x 16,384: 2 GiB; the float32 result adds 1 GiB).

Zero-variance features (dead: always 0; constant: one nonzero value) are found
exactly from the running minimum and maximum, get NaN in the raw correlation
matrix and no partner in the match table; they are counted in its attrs.

Ties are broken deterministically by the lowest feature index (best A for a B
feature; kept B feature for an A feature in one-to-one) and, for top
activations, by the lowest row.

Layout: `correlation` (streamed moments, the numpy and torch kernels, best
matches), `top_activations` (top positions, tokens, contexts), `filters` (the
non-concept filter), `rules` (the one-to-one rules by name, the Hungarian
assignment among them), `table` (the match table and its summary),
`categories` (semantic categories and the rematch within them), `stage` (the
workflow's matching job and its browsable page). Every setting is a field of
`settings.MatchSettings`.
"""

from .correlation import BestMatches, CorrelationBlock, FeatureStats, best_matches, best_matches_from_correlation, \
    correlation_blocks, pearson_correlation
from .rules import ONE_TO_ONE_RULES, OneToOneRule
from .table import kept_pairs, match_correlation_matrix, match_features, match_table, summarize_matches
from .top_activations import LazyContexts, top_activations, top_examples, top_tokens

__all__ = [
    "ONE_TO_ONE_RULES", "OneToOneRule", "BestMatches", "CorrelationBlock", "FeatureStats", "LazyContexts", "best_matches",
    "best_matches_from_correlation", "correlation_blocks", "kept_pairs", "match_correlation_matrix", "match_features",
    "match_table", "pearson_correlation", "summarize_matches", "top_activations", "top_examples", "top_tokens",
]
