"""The BERT building blocks against NumPy re-derivations."""

import numpy as np

from longbert_tf.framework import keras, tf
from longbert_tf.modeling.bert_layers import PositionEmbedding, SelfAttention
from tests.layer_checks import check_layer


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
