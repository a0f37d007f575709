"""The lexical and document controls on planted data: token-only sharing vanishes in the context-only codes,
context sharing survives it, and document-level sharing is absorbed by the document controls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sae_universality.matching import match_features
from sae_universality.matching.controls import (
    KEY_BIGRAM, KEY_DOCUMENT, KEY_TOKEN, PositionKeys, fit_residualizer, group_means, paired_correlations,
    position_keys, residual_chunks, within_document_roll,
)
from sae_universality.settings import MatchSettings

N_DOCUMENTS, WINDOWS_PER_DOCUMENT, WINDOW = 30, 6, 60
VOCABULARY = 40
N_TOKEN_FEATURES = 12  # feature j fires on token j
N_CONTEXT_FEATURES = 8  # fire with a hidden state of the text that no token shows
SETTINGS = MatchSettings(junk_filter=False, threshold=0.1, device="numpy")


def planted_text(seed=0):
    """Positions of 180 windows of 60 tokens in 30 documents, windows shuffled as the corpus shuffles them."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(N_DOCUMENTS * WINDOWS_PER_DOCUMENT)
    document = np.repeat(order // WINDOWS_PER_DOCUMENT, WINDOW)
    window = np.repeat(np.arange(len(order)), WINDOW)
    tokens = rng.integers(0, VOCABULARY, size=len(document))
    # A hidden state that switches every ~8 tokens: what "context" means here, shared by both models' text.
    state = (np.cumsum(rng.random(len(document)) < 1 / 8) % 2).astype(float)
    level = rng.normal(size=N_DOCUMENTS)[document]  # a document-wide level (its topic)
    return tokens, window, document, state, level


def codes(columns, rng, noise=0.3):
    """Nonnegative codes: each column plus independent noise, ReLU'd, as a CSR matrix."""
    stacked = np.stack(columns, axis=1)
    return sp.csr_matrix(np.maximum(stacked + noise * rng.normal(size=stacked.shape), 0.0))


def keys_of(tokens, window, document, relabel=None):
    token = tokens if relabel is None else relabel[tokens]  # model B's own tokenizer: other ids, same text
    return position_keys(token, window, document, np.arange(len(tokens)))


def chunks_of(A, B, rows=1000, order_b=None):
    B = B if order_b is None else B[order_b]
    return lambda: ((A[start:start + rows], B[start:start + rows]) for start in range(0, A.shape[0], rows))


def kept(table):
    rows = table[table["kept"]]
    return sorted(zip(rows["final_a"].tolist(), rows["feature_b"].tolist())), rows["final_correlation"].to_numpy()


def controlled(chunks, keys_a, keys_b, kind):
    """Aligned chunks with the means of `kind` removed from both sides."""
    blocks_a = lambda: (a for a, _ in chunks())
    blocks_b = lambda: (b for _, b in chunks())
    return residual_chunks(chunks, fit_residualizer(blocks_a, keys_a, kind), fit_residualizer(blocks_b, keys_b, kind))


@pytest.fixture(scope="module")
def text():
    return planted_text()


def test_token_only_sharing_is_significant_in_full_and_at_chance_once_token_identity_is_removed(text):
    tokens, window, document, _, _ = text
    rng = np.random.default_rng(1)
    relabel = rng.permutation(VOCABULARY)
    # Both models detect the same tokens, each with its own noise: they agree because the word is there.
    A = codes([(tokens == j) * 1.0 for j in range(N_TOKEN_FEATURES)], rng)
    B = codes([(tokens == j) * 2.0 for j in range(N_TOKEN_FEATURES)], rng)
    chunks = chunks_of(A, B)
    full_pairs, full_correlation = kept(match_features(chunks, settings=SETTINGS))
    assert full_pairs == [(j, j) for j in range(N_TOKEN_FEATURES)]
    assert full_correlation.min() > 0.4  # far above chance (about 0.03 at this many positions)
    # Chance: B's rows in random order keep nothing.
    shuffled = chunks_of(A, B, order_b=rng.permutation(A.shape[0]))
    assert kept(match_features(shuffled, settings=SETTINGS))[0] == []

    keys_a, keys_b = keys_of(tokens, window, document), keys_of(tokens, window, document, relabel)
    context_only = controlled(chunks, keys_a, keys_b, KEY_TOKEN)
    residual = paired_correlations(context_only, np.arange(N_TOKEN_FEATURES), np.arange(N_TOKEN_FEATURES))
    assert np.abs(residual).max() < 0.05  # what the token explains was all they shared
    assert kept(match_features(context_only, settings=SETTINGS))[0] == []  # at chance, like the shuffle


def test_context_sharing_survives_the_removal_of_token_identity(text):
    tokens, window, document, state, _ = text
    rng = np.random.default_rng(2)
    relabel = rng.permutation(VOCABULARY)
    # Token detectors as before, and context features firing with the hidden state on given tokens' neighbours.
    token_columns = [(tokens == j) * 1.0 for j in range(N_TOKEN_FEATURES)]
    context_columns = [state * (1.0 + 0.5 * (tokens % N_CONTEXT_FEATURES == j)) for j in range(N_CONTEXT_FEATURES)]
    A = codes(token_columns + context_columns, rng)
    B = codes(token_columns[::-1] + context_columns, rng)  # B lists its token detectors in reverse order
    chunks = chunks_of(A, B)
    keys_a, keys_b = keys_of(tokens, window, document), keys_of(tokens, window, document, relabel)
    context = N_TOKEN_FEATURES + np.arange(N_CONTEXT_FEATURES)
    tokens_only_a = np.arange(N_TOKEN_FEATURES)
    tokens_only_b = N_TOKEN_FEATURES - 1 - tokens_only_a
    for kind in (KEY_TOKEN, KEY_BIGRAM):
        context_only = controlled(chunks, keys_a, keys_b, kind)
        assert np.abs(paired_correlations(context_only, tokens_only_a, tokens_only_b)).max() < 0.05, kind
        assert paired_correlations(context_only, context, context).min() > 0.5, kind
        pairs, correlation = kept(match_features(context_only, settings=SETTINGS))
        # Only context features keep partners, and each keeps a context feature (they share one state).
        assert len(pairs) >= N_CONTEXT_FEATURES // 2, kind
        assert all(a in context and b in context for a, b in pairs), kind
        assert correlation.min() > 0.3, kind


def test_document_level_sharing_is_absorbed_by_the_document_controls(text):
    tokens, window, document, _, level = text
    rng = np.random.default_rng(3)
    # Both models follow the document's topic and nothing else.
    A = codes([np.maximum(level + 1.0, 0) * (1 + j / 4) for j in range(6)], rng, noise=0.3)
    B = codes([np.maximum(level + 1.0, 0) * (2 - j / 4) for j in range(6)], rng, noise=0.3)
    chunks = chunks_of(A, B)
    features = np.arange(6)
    full = paired_correlations(chunks, features, features)
    assert full.min() > 0.5
    keys = keys_of(tokens, window, document)
    demeaned = controlled(chunks, keys, keys, KEY_DOCUMENT)
    assert np.abs(paired_correlations(demeaned, features, features)).max() < 0.05
    assert kept(match_features(demeaned, settings=SETTINGS))[0] == []
    # B rolled within each document: the pairing of positions is gone, the score is not (it was the document's).
    shifted = chunks_of(A, B, order_b=within_document_roll(document))
    assert paired_correlations(shifted, features, features) == pytest.approx(full, abs=0.05)
    # The token control leaves a document signal alone.
    assert paired_correlations(controlled(chunks, keys, keys, KEY_TOKEN), features, features).min() > 0.4


def test_cross_fitted_means_equal_a_float64_groupby_of_the_other_fold():
    rng = np.random.default_rng(4)
    n, n_features = 500, 5
    codes_dense = np.maximum(rng.normal(size=(n, n_features)), 0)
    group = rng.integers(0, 7, size=n)
    fold = rng.integers(0, 2, size=n).astype(np.int8)
    fold[group == 6] = 0  # group 6 only in fold 0: fold 1 falls back to fold 0's overall mean... and back
    blocks = [sp.csr_matrix(codes_dense[start:start + 64]) for start in range(0, n, 64)]
    means = group_means(blocks, group, fold, 7)
    frame = pd.DataFrame(codes_dense).assign(group=group, fold=fold)
    expected = np.empty_like(codes_dense)
    for row in range(n):
        other = frame[frame["fold"] != fold[row]]
        same = other[other["group"] == group[row]]
        source = same if len(same) else other
        expected[row] = source.drop(columns=["group", "fold"]).to_numpy(np.float64).mean(axis=0)
    assert means.removed(fold, group) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_bigram_means_fall_back_to_the_token_where_the_pair_is_rare():
    # Four windows of two tokens: 1 2 | 1 2 | 3 2 | 3 2; windows 0 and 2 are fold 0, 1 and 3 fold 1.
    tokens = np.array([1, 2, 1, 2, 3, 2, 3, 2])
    window = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    keys = position_keys(tokens, window, np.zeros(8, np.int64), np.arange(8))
    assert keys.previous.tolist() == [-1, 1, -1, 1, -1, 3, -1, 3]  # no previous token across windows
    assert keys.fold.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    values = np.arange(8, dtype=float)[:, None]  # each position's code is its row number
    blocks = lambda: iter([values])
    # Each (previous, current) pair once per fold: its mean in the other fold is that one position.
    bigram = fit_residualizer(blocks, keys, KEY_BIGRAM, min_bigram_count=1)
    assert bigram.removed(0, 8)[:, 0].tolist() == [2.0, 3.0, 0.0, 1.0, 6.0, 7.0, 4.0, 5.0]
    # Token 2 follows 1 and 3: its own mean mixes them (rows 1, 5 in fold 0; 3, 7 in fold 1).
    token = fit_residualizer(blocks, keys, KEY_TOKEN)
    assert token.removed(0, 8)[:, 0].tolist() == [2.0, 5.0, 0.0, 3.0, 6.0, 5.0, 4.0, 3.0]
    # Pairs seen fewer than twice in the other fold fall back to the token's mean.
    rare = fit_residualizer(blocks, keys, KEY_BIGRAM, min_bigram_count=2)
    assert rare.removed(0, 8)[:, 0].tolist() == token.removed(0, 8)[:, 0].tolist()


def test_within_document_roll_keeps_documents_and_moves_every_position():
    document = np.array([3, 3, 1, 3, 1, 1, 1, 7, 3])
    order = within_document_roll(document)
    assert sorted(order.tolist()) == list(range(len(document)))
    assert (document[order] == document).all()
    movable = np.isin(document, [1, 3])
    assert (order[movable] != np.arange(len(document))[movable]).all()
    assert order[7] == 7  # a one-position document stays
    assert within_document_roll(document, fraction=0.0).tolist() == list(range(len(document)))


def test_position_keys_check_their_lengths():
    with pytest.raises(ValueError, match="one entry per position"):
        PositionKeys(np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(3))


def test_the_lexical_floor_keeps_what_the_token_explains_and_nothing_of_the_context(tmp_path):
    """Planted: activations = a direction per token + a context signal. The lexical cache keeps the token part
    (cross-fitted: from the other fold's windows) and drops the context; a token absent from the other fold
    gets that fold's overall mean. Checked against a direct float64 computation."""
    import h5py

    from sae_universality.matching.lexical import token_mean_activations, write_lexical_cache

    rng = np.random.default_rng(0)
    n, width, vocabulary = 4000, 6, 30
    tokens = rng.integers(0, vocabulary, n)
    tokens[7] = 99  # one token seen once, in window 0 (fold 0): the other fold has never seen it
    window = np.arange(n) // 50
    by_token = rng.standard_normal((100, width)) * 3
    context = rng.standard_normal((n, width))
    activations = (by_token[tokens] + context).astype(np.float32)
    fold = (window % 2).astype(np.int8)
    lexical = token_mean_activations(activations, tokens, fold)
    expected = np.empty((n, width))
    for i in range(n):
        other = (fold != fold[i])
        same = other & (tokens == tokens[i])
        expected[i] = activations[same].astype(np.float64).mean(0) if same.any() else activations[other].mean(0)
    np.testing.assert_allclose(lexical, expected, rtol=1e-5, atol=1e-5)
    # The token part is kept, the context part gone.
    assert np.corrcoef(lexical[:, 0], by_token[tokens][:, 0])[0, 1] > 0.98
    assert abs(np.corrcoef(lexical[:, 0], context[:, 0])[0, 1]) < 0.05
    # The cache copy: every field kept, the activations replaced, written in chunks the same as at once.
    cache = tmp_path / "layer3.h5"
    with h5py.File(cache, "w") as handle:
        handle.create_dataset("activations", data=activations, chunks=(256, width))
        handle.create_dataset("token_ids", data=tokens)
        handle.create_dataset("window_index", data=window)
        handle.create_dataset("doc_index", data=window // 4)
        handle.attrs["model_id"] = "m"
    write_lexical_cache(cache, tmp_path / "layer3.lexical.h5", chunk_rows=700)
    with h5py.File(tmp_path / "layer3.lexical.h5") as handle:
        np.testing.assert_allclose(handle["activations"][:], lexical, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(handle["doc_index"][:], window // 4)
        assert handle.attrs["model_id"] == "m" and handle.attrs["distinct_tokens"] == vocabulary + 1
