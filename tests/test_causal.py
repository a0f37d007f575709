"""The causal check: per-row losses, loss gradients, first-order and exact effects, against independent float64
computations (Hugging Face's own loss, finite differences, a full forward with a hook)."""

import numpy as np
import pytest
import scipy.sparse
import torch

from conftest import perturbation_gradient, tiny_causal_lm
from sae_universality.causal.effects import (agreement, exact_effects, first_order_effects, loss_gradients,
                                             row_losses)


def tiny(architecture: str):
    return tiny_causal_lm(architecture, n_layers=3, vocab_size=40, seed=1).double()


def batch(n_rows=3, length=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 40, (n_rows, length), generator=generator)
    mask = torch.ones_like(ids)
    if n_rows > 1:
        mask[1, 9:] = 0  # a right-padded row
    return ids, mask


def hf_row_losses(model, ids, mask):
    """Summed next-token loss per row from the model's own forward logits (each row alone, unpadded), in float64
    (Hugging Face's loss would upcast only to float32)."""
    losses = []
    for row in range(len(ids)):
        length = int(mask[row].sum())
        with torch.no_grad():
            logits = model(input_ids=ids[row:row + 1, :length]).logits[0].double()
        log_probabilities = torch.log_softmax(logits[:-1], dim=-1)
        losses.append(-float(log_probabilities[torch.arange(length - 1), ids[row, 1:length]].sum()))
    return np.array(losses)


def ablated_loss(model, ids, layer, position, vector):
    """The summed loss of one row with `vector` subtracted from block `layer`'s output at `position`: a full
    forward with a hook (not the replay the stage uses)."""
    from sae_universality.models.loading import decoder_layers

    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[0, position] -= torch.as_tensor(vector, dtype=hidden.dtype)
        return ((hidden,) + tuple(output[1:])) if isinstance(output, tuple) else hidden

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        return hf_row_losses(model, ids, torch.ones_like(ids))[0]
    finally:
        handle.remove()


@pytest.mark.parametrize("architecture", ["llama", "gemma3", "gpt_neox"])
def test_row_losses_and_gradients_are_the_models_own_loss_and_its_derivative(architecture):
    model = tiny(architecture)
    ids, mask = batch()
    result = loss_gradients(model, ids, mask, [0, 2])
    np.testing.assert_allclose(result.losses, hf_row_losses(model, ids, mask), rtol=1e-10)
    # The gradient at a row's position is what autograd gives for a perturbation added there in a plain full
    # forward of that row alone (float64 loss from the model's logits), and roughly the finite difference (the
    # models' norms compute in float32 even in a float64 model, so only roughly).
    rng = np.random.default_rng(0)
    for layer in (0, 2):
        for row, position in ((0, 3), (1, 8), (2, 11)):
            length = int(mask[row].sum())
            expected = perturbation_gradient(model, ids[row:row + 1, :length], layer, position)
            np.testing.assert_allclose(result.gradient[layer][row, position].numpy(), expected, rtol=1e-7, atol=1e-9)
            direction = rng.normal(size=16) / 4
            plus = ablated_loss(model, ids[row:row + 1, :length], layer, position, -1e-3 * direction)
            minus = ablated_loss(model, ids[row:row + 1, :length], layer, position, 1e-3 * direction)
            assert expected @ direction == pytest.approx((plus - minus) / 2e-3, rel=1e-2, abs=1e-4)
    # A padded position has no gradient (nothing it predicts is counted, and no real position sees it).
    assert float(result.gradient[0][1, 9:].abs().max()) == 0.0


def test_first_order_effects_are_minus_activation_times_decoder_direction_times_gradient():
    rng = np.random.default_rng(2)
    dense = rng.exponential(size=(30, 12)) * (rng.random((30, 12)) < 0.2)
    gradients, decoder = rng.normal(size=(30, 5)), rng.normal(size=(12, 5))
    effects = first_order_effects(scipy.sparse.csr_matrix(dense), gradients, decoder)
    expected = -dense * (gradients @ decoder.T)
    np.testing.assert_allclose(effects.toarray(), expected, atol=1e-12)
    assert effects.nnz == np.count_nonzero(dense)  # the codes' sparsity: no effect where a feature is silent


@pytest.mark.parametrize("architecture", ["llama", "gemma3", "gpt_neox"])
def test_exact_effects_equal_a_full_forward_with_the_contribution_removed(architecture):
    model = tiny(architecture)
    ids, mask = batch(n_rows=1, length=10, seed=3)
    mask = torch.ones_like(ids)
    layer = 1
    clean = loss_gradients(model, ids, mask, [layer])
    rng = np.random.default_rng(4)
    items = [(position, rng.normal(size=16) * scale) for position, scale in ((0, 1.0), (4, 0.3), (9, 2.0), (4, 0.0))]
    measured = exact_effects(model, ids, mask, layer, clean.hidden[layer], items, items_per_pass=3)
    baseline = hf_row_losses(model, ids, mask)[0]
    expected = [ablated_loss(model, ids, layer, position, vector) - baseline for position, vector in items]
    np.testing.assert_allclose(measured, expected, rtol=1e-8, atol=1e-10)
    assert measured[3] == 0.0 and measured[2] == pytest.approx(0.0, abs=1e-12)  # the last position predicts nothing
    # Small removals: the first-order estimate is the exact effect to first order.
    small = [(position, vector * 1e-4) for position, vector in items[:2]]
    exact = exact_effects(model, ids, mask, layer, clean.hidden[layer], small)
    first = [-float(clean.gradient[layer][0, position] @ torch.as_tensor(vector)) for position, vector in small]
    np.testing.assert_allclose(exact, first, rtol=1e-2)  # float32 norms inside: roughly


def test_agreement_reports_correlation_slope_and_signs():
    first = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
    exact = 2 * first + np.array([0.1, -0.1, 0.0, 0.0, 0.2])
    result = agreement(first, exact)
    assert result["pearson"] == pytest.approx(np.corrcoef(first, exact)[0, 1])
    assert result["slope"] == pytest.approx(first @ exact / (first @ first))
    assert result["sign_agreement"] == pytest.approx(4 / 5)  # the last: 0 against 0.2
    assert result["n_items"] == 5
    assert np.isnan(agreement(first[:2], exact[:2])["pearson"])


def test_paired_and_matrix_correlations_are_pearson_and_weighted_ones_repeat_rows():
    from sae_universality.causal.agreement import correlation_matrix, column_pair_correlations

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    y[:, 0] += 2 * x[:, 0]
    x[:, 3] = 1.0  # constant: undefined
    expected = [np.corrcoef(x[:, i], y[:, i])[0, 1] if i < 3 else np.nan for i in range(4)]
    np.testing.assert_allclose(column_pair_correlations(x, y), expected, atol=1e-12)
    matrix = correlation_matrix(x, y)
    np.testing.assert_allclose(matrix[1, 2], np.corrcoef(x[:, 1], y[:, 2])[0, 1], atol=1e-12)
    assert np.isnan(matrix[3]).all()
    weights = rng.integers(0, 4, size=50)
    repeated = np.repeat(np.arange(50), weights)
    np.testing.assert_allclose(column_pair_correlations(x[:, :3], y[:, :3], weights.astype(float)),
                               column_pair_correlations(x[repeated, :3], y[repeated, :3]), atol=1e-12)


def test_per_pair_p_ranks_each_pair_among_its_a_features_random_partners():
    from sae_universality.causal.agreement import per_pair_p

    matrix = np.array([[0.9, 0.1, 0.95], [0.2, 0.1, 0.3], [np.nan, 0.0, np.nan]])
    # Row 0: 0.95 beats 0.9 -> (1 + 1) / 3; row 1: 0.2 and 0.3 beat 0.1 -> 3 / 3; row 2: undefined.
    np.testing.assert_allclose(per_pair_p(matrix), [2 / 3, 1.0, np.nan])


def test_token_residuals_remove_each_tokens_mean_fitted_on_the_other_fold():
    from sae_universality.causal.agreement import token_residuals

    rng = np.random.default_rng(6)
    tokens, folds = rng.integers(0, 5, 40), rng.integers(0, 2, 40)
    tokens[0], folds[0] = 99, 0  # a token only one fold holds keeps its value
    values = rng.normal(size=(40, 2))
    expected = values.copy()
    for row in range(40):
        other = (folds != folds[row]) & (tokens == tokens[row])
        if other.any():
            expected[row] -= values[other].mean(axis=0)
    np.testing.assert_allclose(token_residuals(values, tokens, folds), expected, atol=1e-12)


def test_output_overlap_is_the_jaccard_of_whitespace_normalized_strings():
    from sae_universality.causal.agreement import overlap_matrix

    overlaps = overlap_matrix([[" and", "of ", "the"], ["x"]], [["and", "the", "\\nof"], ["and  y", ""]])
    # {"and", "of", "the"} and {"and", "the", "\\nof"}: 2 shared of 4; "\\nof" is a literal backslash, not "of".
    assert overlaps[0, 0] == pytest.approx(2 / 4)
    assert overlaps[0, 1] == 0.0 and overlaps[1, 1] == 0.0
    assert overlap_matrix([[" The"]], [["The\n"]])[0, 0] == 1.0


def test_a_planted_shared_effect_is_found_and_random_pairings_are_not():
    """Profiles where each kept pair's B effect is its A effect plus noise, on sparse firing: the mean paired
    correlation stands far above the random-pairing null, most pairs agree on their own, and the window bootstrap
    interval holds the estimate; shuffled partners fall back to the null."""
    from sae_universality.causal.agreement import (correlation_matrix, pairing_null, per_pair_p, window_bootstrap)
    from sae_universality.similarity.baselines import adjust_p_values

    rng = np.random.default_rng(7)
    n, k = 2000, 60
    firing = rng.random((n, k)) < 0.05
    x = np.where(firing, rng.normal(size=(n, k)), 0.0)
    y = np.where(firing, x + 0.3 * rng.normal(size=(n, k)), 0.0)
    windows = np.repeat(np.arange(40), n // 40)
    matrix = correlation_matrix(x, y)
    observed = np.nanmean(np.diag(matrix))
    null = pairing_null(matrix, 200, rng)
    assert observed > 0.9 and abs(null.mean()) < 0.02 and observed > null.max()
    assert np.mean(adjust_p_values(per_pair_p(matrix), "bh") < 0.05) > 0.9
    low, high = window_bootstrap(x, y, windows, 50, rng)
    assert low < observed < high and high - low < 0.1
    shuffled = correlation_matrix(x, y[:, rng.permutation(k)])
    assert abs(np.nanmean(np.diag(shuffled))) < 0.05
