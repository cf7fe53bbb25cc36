"""Label attention: one attention query and one linear classifier per code."""

from longbert_tf.framework import keras, tf


class LabelAttention(keras.layers.Layer):
    """Per-code attention over token representations, then per-code logits.

    For code c with query q_c, weight w_c and bias b_c (the paper's Eq. 1):
    a_c = softmax_i(<e_i, q_c>) over the unmasked tokens i,
    z_c = sum_i a_ci e_i, logit_c = <z_c, w_c> + b_c (sigmoid gives f_c).

    Args:
      num_labels: number of codes C.
      seed: seed of the initializers of q and w (truncated normal, stddev 0.02).

    Call arguments:
      tokens: `[batch, num_tokens, hidden]` token representations e_i.
      mask: `[batch, num_tokens]`, 1 for real tokens, 0 for padding. Padding
        gets exactly zero attention weight. A row with no real token gets zero
        weight everywhere (z_c = 0) instead of NaN.

    Returns:
      float32 logits `[batch, num_labels]`. Scores and the softmax are computed
      in float32 whatever the input dtype.

    Weights: `label_queries` `[C, hidden]` (the attention layer),
    `label_weights` `[C, hidden]` and `label_biases` `[C]` (the classifier).
    """

    def __init__(self, num_labels, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.num_labels = num_labels
        self.seed = seed

    def build(self, input_shape):
        hidden_size = input_shape[-1]
        self.label_queries = self.add_weight(
            "label_queries",
            shape=[self.num_labels, hidden_size],
            initializer=keras.initializers.TruncatedNormal(stddev=0.02, seed=self.seed),
        )
        self.label_weights = self.add_weight(
            "label_weights",
            shape=[self.num_labels, hidden_size],
            initializer=keras.initializers.TruncatedNormal(stddev=0.02, seed=self.seed + 1),
        )
        self.label_biases = self.add_weight(
            "label_biases", shape=[self.num_labels], initializer="zeros"
        )
        super().build(input_shape)

    def call(self, tokens, mask):
        tokens = tf.cast(tokens, tf.float32)
        scores = tf.einsum("bnh,ch->bcn", tokens, self.label_queries)
        is_token = tf.cast(mask, tf.bool)[:, tf.newaxis, :]  # [batch, 1, num_tokens]
        scores = tf.where(is_token, scores, float("-inf"))
        max_score = tf.reduce_max(scores, axis=-1, keepdims=True)
        max_score = tf.where(tf.math.is_finite(max_score), max_score, 0.0)
        unnormalised = tf.exp(scores - max_score)  # exactly 0 on padding
        total = tf.reduce_sum(unnormalised, axis=-1, keepdims=True)
        weights = unnormalised / tf.maximum(total, 1e-30)  # [batch, C, num_tokens]
        label_context = tf.einsum("bcn,bnh->bch", weights, tokens)  # z_c
        return tf.einsum("bch,ch->bc", label_context, self.label_weights) + self.label_biases

    def get_config(self):
        config = super().get_config()
        config.update(num_labels=self.num_labels, seed=self.seed)
        return config
