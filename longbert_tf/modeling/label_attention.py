"""Label attention: one attention query and one linear classifier per code."""

from longbert_tf.framework import keras, tf
from longbert_tf.modeling.chunked_attention import chunked_logits, chunked_loss


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


@keras.utils.register_keras_serializable(package="longbert_tf")
class LabelAttention(keras.layers.Layer):
    """Per-code attention over token representations, then per-code logits.

    For code c with query q_c, weight w_c and bias b_c (the paper's Eq. 1):
    a_c = softmax_i(<e_i, q_c>) over the unmasked tokens i,
    z_c = sum_i a_ci e_i, logit_c = <z_c, w_c> + b_c (sigmoid gives f_c).

    Args:
      num_labels: number of codes C.
      seed: seed of the initializers of q and w.
      kernel_initializer: initializer of q and w (name, config or object; BERT's
        truncated normal with stddev 0.02 by default, CAML uses glorot_uniform).
      chunk_size: None computes all codes at once (`[batch, codes, tokens]`
        scores); an integer computes `chunk_size` codes at a time
        (`chunked_logits`, `chunked_loss`): same results, far less memory.
      matmul_dtype: dtype of the matrix products ("float32", "bfloat16", "float16");
        softmax statistics, logits and the loss stay float32.
      described: condition every code's parameters on its description (below).

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

    With `described`, each code's parameters also depend on its description
    embedding d_c (unit length, `[C, hidden]`, set by `set_descriptions`)
    through parameters shared by all codes, so that a code without training
    notes can still be scored from its description:
    q_c = m_c q'_c + A d_c, w_c = m_c w'_c + B d_c,
    b_c = m_c b'_c + (1 - m_c) delta + <beta, d_c> + beta_0, where m_c is 1 for codes with a
    training note and 0 for the others (their own parameters could only learn
    "never"). A and B start as the identity and q', w', beta at 0, so the
    untrained layer attends to the tokens nearest each description and scores
    how close the attended tokens are to it. Extra weights:
    `description_queries` A and `description_weights` B `[hidden, hidden]`,
    `description_biases` beta `[hidden]`, `shared_bias` beta_0, and the
    non-trainable `code_descriptions` `[C, hidden]` and `trained_codes` `[C]`.

    The loss never sees the codes without training notes, so nothing in
    training sets how their logits compare with the trained codes': the
    non-trainable `untrained_offset` delta (a logit, added to their biases;
    0 until set) is fitted on validation scores instead
    (`split_metrics.fit_untrained_offset`). Without it, on CodiEsp's 50,207-code
    space, untrained codes filled the top of every note's ranking.
    """

    def __init__(
        self,
        num_labels,
        seed=0,
        kernel_initializer=None,
        chunk_size=None,
        matmul_dtype="float32",
        described=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_labels = num_labels
        self.seed = seed
        self.chunk_size = chunk_size
        self.matmul_dtype = matmul_dtype
        self.described = described
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.TruncatedNormal(stddev=0.02)
        )

    def _initializer(self, seed):
        initializer = self.kernel_initializer
        return initializer.__class__.from_config({**initializer.get_config(), "seed": seed})

    def build(self, input_shape):
        hidden_size = input_shape[-1]
        # Described codes start from their descriptions alone (see the class docstring).
        own_initializer = "zeros" if self.described else None
        self.label_queries = self.add_weight(
            "label_queries",
            shape=[self.num_labels, hidden_size],
            initializer=own_initializer or self._initializer(self.seed),
        )
        self.label_weights = self.add_weight(
            "label_weights",
            shape=[self.num_labels, hidden_size],
            initializer=own_initializer or self._initializer(self.seed + 1),
        )
        self.label_biases = self.add_weight(
            "label_biases", shape=[self.num_labels], initializer="zeros"
        )
        if self.described:
            self.code_descriptions = self.add_weight(
                "code_descriptions",
                shape=[self.num_labels, hidden_size],
                initializer="zeros",
                trainable=False,
            )
            self.trained_codes = self.add_weight(
                "trained_codes", shape=[self.num_labels], initializer="ones", trainable=False
            )
            for name in ("description_queries", "description_weights"):
                weight = self.add_weight(
                    name, shape=[hidden_size, hidden_size], initializer="identity"
                )
                setattr(self, name, weight)
            self.description_biases = self.add_weight(
                "description_biases", shape=[hidden_size], initializer="zeros"
            )
            self.shared_bias = self.add_weight("shared_bias", shape=[], initializer="zeros")
            self.untrained_offset = self.add_weight(
                "untrained_offset", shape=[], initializer="zeros", trainable=False
            )
        super().build(input_shape)

    def set_descriptions(self, code_descriptions, trained_codes) -> None:
        """Sets d_c (float `[C, hidden]`, unit or zero rows) and m_c (bool `[C]`) once built."""
        if not self.described:
            raise ValueError(f"layer {self.name} was not built with described=True")
        self.code_descriptions.assign(tf.cast(code_descriptions, tf.float32))
        self.trained_codes.assign(tf.cast(trained_codes, tf.float32))

    def code_parameters(self, codes=None) -> tuple:
        """`(queries, classifiers, biases)` q_c, w_c, b_c as the logits use them: `[C, hidden]`
        twice and `[C]`, or only those of `codes` (int `[n]`)."""
        own = [self.label_queries, self.label_weights, self.label_biases]
        if self.described:
            own += [self.trained_codes, self.code_descriptions]
        if codes is not None:
            own = [tf.gather(parameter, codes) for parameter in own]
        if not self.described:
            return tuple(own)
        own_queries, own_classifiers, own_biases, trained, descriptions = own
        queries = trained[:, tf.newaxis] * own_queries
        queries += tf.matmul(descriptions, self.description_queries)
        classifiers = trained[:, tf.newaxis] * own_classifiers
        classifiers += tf.matmul(descriptions, self.description_weights)
        biases = trained * own_biases + (1 - trained) * self.untrained_offset + self.shared_bias
        biases += tf.linalg.matvec(descriptions, self.description_biases)
        return queries, classifiers, biases

    @property
    def _codes_per_chunk(self) -> int:
        return min(self.chunk_size, self.num_labels)  # no padding codes when there are few

    def call(self, tokens, mask):
        return self._logits(tokens, mask, *self.code_parameters())

    def _logits(self, tokens, mask, queries, classifiers, biases):
        """float32 `[batch, codes]` logits of the codes whose parameters are given."""
        if self.chunk_size:
            logits = chunked_logits(
                tokens, mask, queries, classifiers, self._codes_per_chunk, self.matmul_dtype
            )
            return logits + biases
        tokens = tf.cast(tokens, self.matmul_dtype)
        scores = tf.einsum("bnh,ch->bcn", tokens, tf.cast(queries, self.matmul_dtype))
        attention = masked_softmax(tf.cast(scores, tf.float32), mask)  # [batch, C, num_tokens]
        label_context = tf.einsum("bcn,bnh->bch", tf.cast(attention, self.matmul_dtype), tokens)
        label_context = tf.cast(label_context, tf.float32)  # z_c
        return tf.einsum("bch,ch->bc", label_context, classifiers) + biases

    def loss(self, tokens, mask, labels, denominator):
        """Sum over notes of the mean binary cross-entropy over the codes in the loss, divided by
        `denominator`.

        `labels` float32 `[batch, codes]`; `denominator` is the global batch
        size (`tf.nn.compute_average_loss`'s convention, right under any
        distribution strategy). Every code is in the loss, except, with
        `described`, the codes without training notes (m_c = 0): they could
        only teach the shared maps that a description means "absent", so they
        are scored but never trained on, and the loss and its gradients are
        computed for the trained codes alone (a step over ICD-10-CM's 50,000
        codes costs what one over the training codes does). With `chunk_size`,
        the gradients come from `chunked_loss`'s single pass.
        """
        if not self.built:
            self(tokens, mask)  # creates the weights
        if self.described:
            trained = tf.where(self.trained_codes > 0)[:, 0]
            parameters = self.code_parameters(trained)
            labels = tf.gather(labels, trained, axis=1)
        else:
            parameters = self.code_parameters()
        if self.chunk_size:
            total = chunked_loss(
                tokens, mask, labels, *parameters, self._codes_per_chunk, self.matmul_dtype
            )
        else:
            logits = self._logits(tokens, mask, *parameters)
            cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
            num_codes = tf.maximum(tf.shape(labels)[1], 1)  # none trained: loss 0
            total = tf.reduce_sum(cross_entropy) / tf.cast(num_codes, tf.float32)
        return total / tf.cast(denominator, tf.float32)

    def attention_weights(self, tokens, mask, label_indices):
        """Attention of chosen codes: `label_indices` int `[batch, K]` -> `[batch, K, num_tokens]`.

        The weights `call` uses for those codes (the evidence a code's score rests on).
        """
        queries = tf.gather(self.code_parameters()[0], label_indices)  # [batch, K, hidden]
        scores = tf.einsum("bnh,bkh->bkn", tf.cast(tokens, tf.float32), queries)
        return masked_softmax(scores, mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_labels=self.num_labels,
            seed=self.seed,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            chunk_size=self.chunk_size,
            matmul_dtype=self.matmul_dtype,
            described=self.described,
        )
        return config
