"""Label attention: one attention query and one linear classifier per code."""

from longbert_tf.framework import keras, tf


def masked_softmax(scores, mask):
    """Softmax of `scores` `[batch, K, tokens]` over the tokens where `mask` `[batch, tokens]` is 1.

    Computed in float32 with the maximum subtracted; masked positions get
    exactly zero weight, and a row with no unmasked position is all zeros.
    """
    is_token = tf.cast(mask, tf.bool)[:, tf.newaxis, :]
    scores = tf.where(is_token, scores, float("-inf"))
    max_score = tf.reduce_max(scores, axis=-1, keepdims=True)
    max_score = tf.where(tf.math.is_finite(max_score), max_score, 0.0)
    unnormalised = tf.exp(scores - max_score)  # exactly 0 on padding
    total = tf.reduce_sum(unnormalised, axis=-1, keepdims=True)
    return unnormalised / tf.maximum(total, 1e-30)


class LabelAttention(keras.layers.Layer):
    """Per-code attention over token representations, then per-code logits.

    For code c with query q_c, weight w_c and bias b_c (the paper's Eq. 1):
    a_c = softmax_i(<e_i, q_c>) over the unmasked tokens i,
    z_c = sum_i a_ci e_i, logit_c = <z_c, w_c> + b_c (sigmoid gives f_c).

    Args:
      num_labels: number of codes C.
      seed: seed of the initializers of q and w.
      kernel_initializer: initializer of q and w (name or config; BERT's
        truncated normal with stddev 0.02 by default, CAML uses glorot_uniform).

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

    def __init__(self, num_labels, seed=0, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_labels = num_labels
        self.seed = seed
        self.kernel_initializer = kernel_initializer or dict(
            class_name="TruncatedNormal", config=dict(stddev=0.02)
        )

    def _initializer(self, seed):
        initializer = keras.initializers.get(self.kernel_initializer)
        return initializer.__class__.from_config({**initializer.get_config(), "seed": seed})

    def build(self, input_shape):
        hidden_size = input_shape[-1]
        self.label_queries = self.add_weight(
            "label_queries",
            shape=[self.num_labels, hidden_size],
            initializer=self._initializer(self.seed),
        )
        self.label_weights = self.add_weight(
            "label_weights",
            shape=[self.num_labels, hidden_size],
            initializer=self._initializer(self.seed + 1),
        )
        self.label_biases = self.add_weight(
            "label_biases", shape=[self.num_labels], initializer="zeros"
        )
        super().build(input_shape)

    def call(self, tokens, mask):
        tokens = tf.cast(tokens, tf.float32)
        scores = tf.einsum("bnh,ch->bcn", tokens, self.label_queries)
        weights = masked_softmax(scores, mask)  # [batch, C, num_tokens]
        label_context = tf.einsum("bcn,bnh->bch", weights, tokens)  # z_c
        return tf.einsum("bch,ch->bc", label_context, self.label_weights) + self.label_biases

    def attention_weights(self, tokens, mask, label_indices):
        """Attention of chosen codes: `label_indices` int `[batch, K]` -> `[batch, K, num_tokens]`.

        The weights `call` uses for those codes (the evidence a code's score rests on).
        """
        queries = tf.gather(self.label_queries, label_indices)  # [batch, K, hidden]
        scores = tf.einsum("bnh,bkh->bkn", tf.cast(tokens, tf.float32), queries)
        return masked_softmax(scores, mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_labels=self.num_labels, seed=self.seed, kernel_initializer=self.kernel_initializer
        )
        return config
