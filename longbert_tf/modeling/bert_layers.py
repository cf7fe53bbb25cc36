"""The layers of the package's BERT (`bert`): position embeddings, self-attention with a padding
mask, exact GELU and dropout whose random state is checkpointed.

Under a mixed precision policy the matrix products run in the compute dtype
(bfloat16) while the attention softmax, like Keras' layer normalisation,
computes in float32.
"""

from longbert_tf.framework import keras, tf


@keras.utils.register_keras_serializable(package="longbert_tf")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embeddings `[max_positions, hidden]`, cut to the input length."""

    def __init__(self, max_positions, initializer, **kwargs):
        super().__init__(**kwargs)
        self.max_positions = max_positions
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            "embeddings",
            shape=[self.max_positions, input_shape[-1]],
            initializer=self.initializer,
        )
        super().build(input_shape)

    def call(self, inputs):
        """`inputs` `[batch, length, hidden]` -> position embeddings `[1, length, hidden]`."""
        length = tf.shape(inputs)[1]
        return tf.expand_dims(self.embeddings[:length], 0)

    def get_config(self):
        config = super().get_config()
        config.update(
            max_positions=self.max_positions,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config


@keras.utils.register_keras_serializable(package="longbert_tf")
class SelfAttention(keras.layers.Layer):
    """Multi-head self-attention with padding mask, as in BERT.

    Args:
      num_heads: attention heads; `hidden / num_heads` is the head size.
      dropout_rate: dropout on the attention probabilities.
      initializers: four kernel initializers (query, key, value, output).

    Call arguments: `hidden` `[batch, length, hidden]` and `mask` `[batch, length]`
    (1 for real tokens). Keys where `mask` is 0 get no attention weight.
    """

    def __init__(self, num_heads, dropout_rate, initializers, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate
        self.initializers = [keras.initializers.get(init) for init in initializers]

    def build(self, input_shape):
        hidden_size = input_shape[-1]
        self.head_size = hidden_size // self.num_heads
        self.query, self.key, self.value, self.attention_output = (
            keras.layers.Dense(hidden_size, kernel_initializer=init, name=name)
            for init, name in zip(self.initializers, ["query", "key", "value", "output"])
        )
        self.dropout = dropout_layer(self.dropout_rate)
        super().build(input_shape)

    def _split_heads(self, x):
        """`[batch, length, hidden]` -> `[batch, heads, length, head_size]`."""
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], self.num_heads, self.head_size])
        return tf.transpose(x, [0, 2, 1, 3])

    def call(self, hidden, mask, training=None):
        query = self._split_heads(self.query(hidden))
        key = self._split_heads(self.key(hidden))
        value = self._split_heads(self.value(hidden))
        # The products run in the compute dtype; the softmax statistics always in float32.
        scores = tf.cast(tf.matmul(query, key, transpose_b=True), tf.float32)
        scores *= self.head_size**-0.5
        # Padding keys get a large negative score: exp() underflows to exactly 0.
        key_is_padding = tf.cast(1 - mask, tf.float32)[:, tf.newaxis, tf.newaxis, :]
        scores += key_is_padding * -10000.0
        probabilities = tf.cast(tf.nn.softmax(scores, axis=-1), value.dtype)
        probabilities = self.dropout(probabilities, training=training)
        context = tf.transpose(tf.matmul(probabilities, value), [0, 2, 1, 3])
        shape = tf.shape(hidden)
        context = tf.reshape(context, [shape[0], shape[1], self.num_heads * self.head_size])
        return self.attention_output(context)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            dropout_rate=self.dropout_rate,
            initializers=[keras.initializers.serialize(init) for init in self.initializers],
        )
        return config


def gelu(x):
    """GELU with the exact normal CDF (erf), as Hugging Face's BERT computes it."""
    return keras.activations.gelu(x, approximate=False)


def gelu_tanh(x):
    """GELU with the tanh approximation, as Google's BERT and TF Model Garden compute it."""
    return keras.activations.gelu(x, approximate=True)


ACTIVATIONS = {"gelu": gelu, "gelu_tanh": gelu_tanh}


def dropout_layer(rate: float) -> keras.layers.Dropout:
    """Dropout whose random state is a `tf.random.Generator`: it is saved with the encoder and
    restored with a run's checkpoint, so a resumed run draws the masks an uninterrupted one
    would (Keras' default stateful ops keep their state outside any checkpoint)."""
    return keras.layers.Dropout(rate, rng_type="stateful")
