"""LabelAttention and the BERT building blocks against NumPy re-derivations."""

import numpy as np
import pytest

from longbert_tf.bert import PositionEmbedding, SelfAttention
from longbert_tf.framework import keras, tf
from longbert_tf.layers import LabelAttention
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


@pytest.fixture
def token_batch():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(3, 10, 8)).astype(np.float32)
    mask = np.ones((3, 10), np.int32)
    mask[0, 6:] = 0
    mask[2, 1:] = 0
    return tokens, mask


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


def numpy_self_attention(hidden, mask, layer, num_heads):
    query, key, value, output = (
        (d.kernel.numpy(), d.bias.numpy())
        for d in (layer.query, layer.key, layer.value, layer.attention_output)
    )
    batch_size, length, width = hidden.shape
    head_size = width // num_heads

    def heads(projection):
        x = hidden @ projection[0] + projection[1]
        return x.reshape(batch_size, length, num_heads, head_size).transpose(0, 2, 1, 3)

    scores = heads(query) @ heads(key).transpose(0, 1, 3, 2) / np.sqrt(head_size)
    scores = scores + (1 - mask[:, None, None, :]) * -10000.0
    probabilities = np.exp(scores - scores.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    context = (probabilities @ heads(value)).transpose(0, 2, 1, 3).reshape(hidden.shape)
    return context @ output[0] + output[1]


def test_self_attention_matches_numpy(token_batch):
    hidden, mask = token_batch
    initializers = [keras.initializers.GlorotUniform(seed=s) for s in range(4)]
    layer = SelfAttention(num_heads=2, dropout_rate=0.0, initializers=initializers)
    check_layer(layer, dict(hidden=tf.constant(hidden), mask=tf.constant(mask)))
    expected = numpy_self_attention(hidden, mask, layer, num_heads=2)
    np.testing.assert_allclose(layer(hidden, mask).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_position_embedding_slices_to_the_input_length():
    layer = PositionEmbedding(max_positions=16, initializer="glorot_uniform")
    inputs = tf.zeros([2, 5, 4])
    assert check_layer(layer, dict(inputs=inputs)).shape == (1, 5, 4)
    np.testing.assert_array_equal(layer(inputs)[0].numpy(), layer.embeddings.numpy()[:5])


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 23, 64])
def test_chunked_label_attention_equals_dense_with_gradients(token_batch, chunk_size):
    tokens, mask = token_batch  # padding, and note 2 has a single token
    tokens = np.concatenate([tokens, tokens[:1]])  # note 3 has none at all
    mask = np.concatenate([mask, np.zeros_like(mask[:1])])
    dense = LabelAttention(num_labels=23, seed=2)
    chunked = LabelAttention(num_labels=23, seed=2, chunk_size=chunk_size)
    dense(tokens, mask)
    chunked(tokens, mask)
    dense.label_biases.assign(np.linspace(-3, 1, 23))
    chunked.set_weights(dense.get_weights())
    labels = tf.constant(np.random.default_rng(5).random((4, 23)) < 0.3, tf.float32)

    @tf.function
    def logits_loss_and_grads(layer):
        token_tensor = tf.constant(tokens)
        with tf.GradientTape() as tape:
            tape.watch(token_tensor)
            loss = layer.loss(token_tensor, mask, labels, denominator=4)
        grads = tape.gradient(loss, [token_tensor] + layer.trainable_weights)
        return [layer(token_tensor, mask), loss] + grads

    for expected, actual in zip(logits_loss_and_grads(dense), logits_loss_and_grads(chunked)):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)


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
    for layer in layers[1:]:
        logits = layer(tokens, mask)
        assert logits.dtype == tf.float32
        np.testing.assert_allclose(logits.numpy(), reference, atol=2e-2)


def test_chunked_bfloat16_gradients_stay_within_one_percent_of_float32():
    """64 notes, 9 codes in chunks of 4: the gradients of the bfloat16 chunked loss are within
    1% (q, w, b) and 3% (tokens) of the largest float32 dense gradient of that tensor; the
    per-note products are bfloat16 (8 significant bits), their sums over notes are float32."""
    rng = np.random.default_rng(4)
    tokens = tf.constant(rng.normal(size=(64, 40, 16)).astype(np.float32))
    mask = tf.constant((rng.random((64, 40)) > 0.1).astype(np.int32))
    labels = tf.constant((rng.random((64, 9)) > 0.5).astype(np.float32))
    layers = [
        LabelAttention(num_labels=9, seed=3, chunk_size=chunk, matmul_dtype=dtype)
        for chunk, dtype in [(None, "float32"), (4, "bfloat16")]
    ]
    layers[0](tokens, mask)
    for weight in layers[0].trainable_weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape).astype(np.float32))
    layers[1](tokens, mask)
    layers[1].set_weights(layers[0].get_weights())
    gradients = []
    for layer in layers:
        with tf.GradientTape() as tape:
            tape.watch(tokens)
            loss = layer.loss(tokens, mask, labels, 64)
        gradients.append(tape.gradient(loss, [tokens, *layer.trainable_weights]))
    # Measured: 1.8% for the token gradients (the dense bfloat16 layer: 1.5%), 0.3-0.6% for q, w, b.
    for reference, bfloat16, tolerance in zip(*gradients, [3e-2, 1e-2, 1e-2, 1e-2]):
        assert bfloat16.dtype == tf.float32
        scale = np.abs(reference.numpy()).max()
        np.testing.assert_allclose(bfloat16.numpy(), reference.numpy(), atol=tolerance * scale)


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
    for weight in layer.trainable_weights:
        weight.assign(weight + rng.normal(scale=0.3, size=weight.shape).astype(np.float32))
    return layer


def numpy_described_parameters(layer):
    """q_c = m_c q'_c + A d_c, w_c = m_c w'_c + B d_c, b_c = m_c b'_c + <beta, d_c> + beta_0."""
    d = layer.code_descriptions.numpy()
    m = layer.trained_codes.numpy()
    queries = m[:, None] * layer.label_queries.numpy() + d @ layer.description_queries.numpy()
    weights = m[:, None] * layer.label_weights.numpy() + d @ layer.description_weights.numpy()
    biases = (
        m * layer.label_biases.numpy()
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


@pytest.mark.parametrize("chunk_size", [2, 4])
def test_chunked_described_label_attention_equals_dense_with_gradients(token_batch, chunk_size):
    tokens, mask = token_batch
    dense = described_layer(tokens, mask)
    chunked = described_layer(tokens, mask, chunk_size)
    labels = tf.constant(np.random.default_rng(5).random((3, 6)) < 0.3, tf.float32)

    def loss_and_grads(layer):
        with tf.GradientTape() as tape:
            loss = layer.loss(tf.constant(tokens), mask, labels, denominator=3)
        return [loss] + tape.gradient(loss, layer.trainable_weights)

    for expected, actual in zip(loss_and_grads(dense), loss_and_grads(chunked)):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    # The own parameters of codes without training notes get no gradient.
    own_query_grads = loss_and_grads(dense)[1 + dense.trainable_weights.index(dense.label_queries)]
    np.testing.assert_array_equal(own_query_grads.numpy()[4:], 0.0)
