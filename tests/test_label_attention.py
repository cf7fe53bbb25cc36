"""LabelAttention and the BERT building blocks against NumPy re-derivations."""

import numpy as np
import pytest

from longbert_tf.framework import tf
from longbert_tf.modeling.label_attention import LabelAttention
from tests.dtypes import tolerance
from tests.layer_checks import check_layer


def numpy_label_attention(tokens, mask, queries, weights, biases):
    """Eq. 1 of the paper, note by note and code by code."""
    batch_size, _, _ = tokens.shape
    logits = np.zeros((batch_size, len(queries)))
    for b in range(batch_size):
        real = tokens[b][mask[b] == 1]
        for c in range(len(queries)):
            scores = real @ queries[c]
            attention = np.exp(scores - scores.max())
            attention /= attention.sum()
            logits[b, c] = (attention @ real) @ weights[c] + biases[c]
    return logits


def test_label_attention_matches_numpy(token_batch):
    tokens, mask = token_batch
    layer = LabelAttention(num_labels=5, seed=1)
    logits = check_layer(layer, dict(tokens=tf.constant(tokens), mask=tf.constant(mask)))
    # check_layer trained the layer one step; compare with its current weights.
    queries, weights, biases = (w.numpy() for w in layer.weights)
    expected = numpy_label_attention(tokens, mask, queries, weights, biases)
    np.testing.assert_allclose(layer(tokens, mask).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert logits.dtype == tf.float32 and logits.shape == (3, 5)


def test_label_attention_gives_padding_no_weight(token_batch):
    tokens, mask = token_batch
    layer = LabelAttention(num_labels=4)
    logits = layer(tokens, mask)
    noisy = np.where(mask[..., None] == 1, tokens, 1e4).astype(np.float32)
    np.testing.assert_array_equal(layer(noisy, mask).numpy(), logits.numpy())


def test_label_attention_is_stable_for_large_scores_and_empty_rows():
    layer = LabelAttention(num_labels=2)
    tokens = np.full((2, 4, 3), 300.0, np.float32)  # scores far beyond exp's float32 range
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], np.int32)
    logits = layer(tokens, mask).numpy()
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(logits[1], layer.label_biases.numpy())  # z_c = 0 without tokens


def test_label_attention_computes_in_float32_for_bfloat16_tokens(token_batch):
    tokens, mask = token_batch
    layer = LabelAttention(num_labels=3)
    logits = layer(tf.cast(tokens, tf.bfloat16), mask)
    assert logits.dtype == tf.float32


def test_loss_is_the_mean_cross_entropy_over_codes_summed_over_notes(token_batch):
    tokens, mask = token_batch
    layer = LabelAttention(num_labels=5)
    labels = np.eye(3, 5, dtype=np.float32)
    logits = layer(tokens, mask).numpy()
    probabilities = 1 / (1 + np.exp(-logits))
    cross_entropy = -(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    expected = cross_entropy.mean(axis=1).sum() / 6
    loss = float(layer.loss(tokens, mask, labels, denominator=6))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_bfloat16_products_stay_close_to_float32(token_batch):
    tokens, mask = token_batch
    layers = [
        LabelAttention(num_labels=9, seed=3, chunk_size=chunk, matmul_dtype=dtype)
        for chunk, dtype in [(None, "float32"), (None, "bfloat16"), (4, "bfloat16")]
    ]
    for layer in layers:
        layer(tokens, mask)
        layer.set_weights(layers[0].get_weights())
    reference = layers[0](tokens, mask).numpy()
    # Within one bfloat16 unit in the last place of the largest logit (measured: a quarter).
    atol = tolerance("bfloat16", 0.0, scale=np.abs(reference).max())
    for layer in layers[1:]:
        logits = layer(tokens, mask)
        assert logits.dtype == tf.float32
        np.testing.assert_allclose(logits.numpy(), reference, atol=atol)


def described_layer(tokens, mask, chunk_size=None):
    """A described LabelAttention of 6 codes (codes 4 and 5 without training notes and code 5
    without a description), its free and shared parameters moved off their initial values."""
    rng = np.random.default_rng(3)
    layer = LabelAttention(num_labels=6, chunk_size=chunk_size, described=True)
    layer(tokens, mask)
    descriptions = rng.normal(size=(6, 8)).astype(np.float32)
    descriptions /= np.linalg.norm(descriptions, axis=1, keepdims=True)
    descriptions[5] = 0.0
    layer.set_descriptions(descriptions, np.array([1, 1, 1, 1, 0, 0], bool))
    layer.untrained_offset.assign(-1.5)
    for weight in layer.trainable_weights:
        weight.assign(weight + rng.normal(scale=0.3, size=weight.shape).astype(np.float32))
    return layer


def numpy_described_parameters(layer):
    """q_c = m_c q'_c + A d_c, w_c = m_c w'_c + B d_c,
    b_c = m_c b'_c + (1 - m_c) delta + <beta, d_c> + beta_0."""
    d = layer.code_descriptions.numpy()
    m = layer.trained_codes.numpy()
    queries = m[:, None] * layer.label_queries.numpy() + d @ layer.description_queries.numpy()
    weights = m[:, None] * layer.label_weights.numpy() + d @ layer.description_weights.numpy()
    biases = (
        m * layer.label_biases.numpy()
        + (1 - m) * layer.untrained_offset.numpy()
        + d @ layer.description_biases.numpy()
        + layer.shared_bias.numpy()
    )
    return queries, weights, biases


def test_described_label_attention_matches_numpy(token_batch):
    tokens, mask = token_batch
    layer = described_layer(tokens, mask)
    check_layer(layer, dict(tokens=tf.constant(tokens), mask=tf.constant(mask)))
    expected = numpy_label_attention(tokens, mask, *numpy_described_parameters(layer))
    np.testing.assert_allclose(layer(tokens, mask).numpy(), expected, rtol=1e-5, atol=1e-5)
    # A code without training notes is scored from its description alone.
    own = layer.label_queries.numpy()
    layer.label_queries.assign(own + 5.0)
    np.testing.assert_allclose(layer(tokens, mask).numpy()[:, 4:], expected[:, 4:], rtol=1e-5)
    assert not np.allclose(layer(tokens, mask).numpy()[:, :4], expected[:, :4])
    # The offset moves the untrained codes' logits alone, by exactly itself.
    layer.label_queries.assign(own)
    layer.untrained_offset.assign_add(2.0)
    moved = layer(tokens, mask).numpy()
    np.testing.assert_allclose(moved[:, 4:], expected[:, 4:] + 2.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(moved[:, :4], expected[:, :4], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_codes_without_training_notes_are_scored_but_left_out_of_the_loss(token_batch, chunk_size):
    """Codes 4 and 5 have no training note: the loss is the mean cross-entropy over codes 0-3,
    and their labels move neither the loss nor any gradient."""
    tokens, mask = token_batch
    layer = described_layer(tokens, mask, chunk_size)
    labels = np.float32([[1, 0, 0, 1, 1, 0], [0, 1, 0, 0, 0, 1], [0, 0, 1, 0, 1, 1]])
    logits = numpy_label_attention(tokens, mask, *numpy_described_parameters(layer))
    cross_entropy = np.logaddexp(0, logits) - labels * logits
    expected = cross_entropy[:, :4].mean(axis=1).sum() / 3

    def loss_and_grads(labels):
        with tf.GradientTape() as tape:
            loss = layer.loss(tf.constant(tokens), mask, tf.constant(labels), denominator=3)
        gradients = tape.gradient(loss, layer.trainable_weights)
        return [loss.numpy()] + [tf.convert_to_tensor(g).numpy() for g in gradients]

    reference = loss_and_grads(labels)
    assert reference[0] == pytest.approx(expected, rel=1e-5)
    flipped = labels.copy()
    flipped[:, 4:] = 1 - flipped[:, 4:]
    for before, after in zip(reference, loss_and_grads(flipped)):
        np.testing.assert_array_equal(after, before)
    assert np.abs(layer(tokens, mask).numpy()[:, 4:] - logits[:, 4:]).max() < 1e-5  # scored
    layer.set_descriptions(layer.code_descriptions.numpy(), np.zeros(6, bool))  # none trained
    assert all(np.all(value == 0) for value in loss_and_grads(labels))


def test_described_label_attention_starts_from_its_descriptions(token_batch):
    tokens, mask = token_batch
    layer = LabelAttention(num_labels=6, described=True)
    layer(tokens, mask)
    descriptions = np.eye(6, 8, dtype=np.float32)
    layer.set_descriptions(descriptions, np.ones(6, bool))
    queries, weights, biases = (value.numpy() for value in layer.code_parameters())
    np.testing.assert_array_equal(queries, descriptions)
    np.testing.assert_array_equal(weights, descriptions)
    np.testing.assert_array_equal(biases, np.zeros(6))
