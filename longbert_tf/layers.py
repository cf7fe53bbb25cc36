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


def _code_chunks(matrix, chunk_size):
    """`[codes, hidden]` -> `[num_chunks, chunk_size, hidden]`, zero-padded at the end."""
    num_codes, hidden_size = tf.shape(matrix)[0], tf.shape(matrix)[1]
    num_chunks = (num_codes + chunk_size - 1) // chunk_size
    padded = tf.pad(matrix, [[0, num_chunks * chunk_size - num_codes], [0, 0]])
    return tf.reshape(padded, [num_chunks, chunk_size, hidden_size])


def chunked_label_logits(tokens, mask, queries, weights, chunk_size, compute_dtype=tf.float32):
    """Label attention logits without biases, `chunk_size` codes at a time.

    Equal to `LabelAttention` (dense): logit_c = sum_i a_ci <e_i, w_c> with
    a_c = masked softmax of <e_i, q_c>. Each chunk's scores and softmax live
    only while that chunk is processed, and the backward pass recomputes them
    (custom gradient) instead of keeping `[batch, codes, tokens]` tensors, so
    memory is O(batch x chunk_size x tokens + batch x tokens x hidden + codes x
    hidden). Matrix products run in `compute_dtype` (e.g. bfloat16); softmax
    statistics, logits and gradients are float32.

    Args:
      tokens: float `[batch, num_tokens, hidden]`; mask: `[batch, num_tokens]`.
      queries, weights: float32 `[codes, hidden]`.

    Returns:
      float32 `[batch, codes]`.
    """
    mask = tf.cast(mask, tf.float32)

    @tf.custom_gradient
    def attend(tokens, queries, weights):
        num_codes = tf.shape(queries)[0]
        # Queries and weights of a chunk side by side: one product gives scores and values.
        paired = tf.concat(
            [_code_chunks(queries, chunk_size), _code_chunks(weights, chunk_size)], 1
        )
        num_chunks = tf.shape(paired)[0]
        tokens_compute = tf.cast(tokens, compute_dtype)

        def attention_and_values(index):
            """`a` (softmax of <e, q>) and `v` (<e, w>), float32 `[batch, chunk, tokens]`."""
            products = tf.einsum(
                "bnh,kh->bkn", tokens_compute, tf.cast(paired[index], compute_dtype)
            )
            products = tf.cast(products, tf.float32)
            return masked_softmax(products[:, :chunk_size], mask), products[:, chunk_size:]

        def forward_chunk(index, logits):
            attention, values = attention_and_values(index)
            return index + 1, logits.write(index, tf.reduce_sum(attention * values, axis=-1))

        _, chunk_logits = tf.while_loop(
            lambda index, _: index < num_chunks,
            forward_chunk,
            (0, tf.TensorArray(tf.float32, size=num_chunks)),
            parallel_iterations=1,
        )
        batch_size = tf.shape(tokens)[0]
        logits = tf.transpose(chunk_logits.stack(), [1, 0, 2])
        logits = tf.reshape(logits, [batch_size, num_chunks * chunk_size])[:, :num_codes]

        def grad(upstream):
            padding = num_chunks * chunk_size - num_codes
            upstream = tf.reshape(
                tf.pad(upstream, [[0, 0], [0, padding]]), [batch_size, num_chunks, -1]
            )
            upstream = tf.transpose(upstream, [1, 0, 2])  # [num_chunks, batch, chunk]

            def backward_chunk(index, token_grads, paired_grads):
                attention, values = attention_and_values(index)
                gradient = upstream[index][:, :, tf.newaxis]
                value_grads = gradient * attention  # d logit / d v
                attention_grads = gradient * values  # d logit / d a
                score_grads = attention * (
                    attention_grads - tf.reduce_sum(attention * attention_grads, -1, keepdims=True)
                )
                both = tf.cast(tf.concat([score_grads, value_grads], 1), compute_dtype)
                paired_grads = paired_grads.write(
                    index, tf.cast(tf.einsum("bkn,bnh->kh", both, tokens_compute), tf.float32)
                )
                chunk = tf.cast(paired[index], compute_dtype)
                token_grads += tf.cast(tf.einsum("bkn,kh->bnh", both, chunk), tf.float32)
                return index + 1, token_grads, paired_grads

            _, token_grads, paired_grads = tf.while_loop(
                lambda index, *_: index < num_chunks,
                backward_chunk,
                (0, tf.zeros_like(tokens, tf.float32), tf.TensorArray(tf.float32, size=num_chunks)),
                parallel_iterations=1,
            )
            paired_grads = paired_grads.stack()  # [num_chunks, 2 * chunk, hidden]
            hidden_size = tf.shape(queries)[1]

            def unchunk(chunks):
                return tf.reshape(chunks, [num_chunks * chunk_size, hidden_size])[:num_codes]

            return (
                tf.cast(token_grads, tokens.dtype),
                unchunk(paired_grads[:, :chunk_size]),
                unchunk(paired_grads[:, chunk_size:]),
            )

        return logits, grad

    return attend(tokens, queries, weights)


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
      chunk_size: None computes all codes at once (`[batch, codes, tokens]`
        scores); an integer computes `chunk_size` codes at a time and recomputes
        in the backward pass (`chunked_label_logits`), same results, far less memory.
      matmul_dtype: dtype of the matrix products ("float32" or "bfloat16");
        softmax statistics, logits and the loss stay float32.

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

    def __init__(
        self,
        num_labels,
        seed=0,
        kernel_initializer=None,
        chunk_size=None,
        matmul_dtype="float32",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_labels = num_labels
        self.seed = seed
        self.chunk_size = chunk_size
        self.matmul_dtype = matmul_dtype
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
        if self.chunk_size:
            logits = chunked_label_logits(
                tokens,
                mask,
                tf.convert_to_tensor(self.label_queries),
                tf.convert_to_tensor(self.label_weights),
                self.chunk_size,
                self.matmul_dtype,
            )
            return logits + self.label_biases
        tokens = tf.cast(tokens, self.matmul_dtype)
        queries = tf.cast(self.label_queries, self.matmul_dtype)
        scores = tf.cast(tf.einsum("bnh,ch->bcn", tokens, queries), tf.float32)
        weights = masked_softmax(scores, mask)  # [batch, C, num_tokens]
        label_context = tf.einsum("bcn,bnh->bch", tf.cast(weights, self.matmul_dtype), tokens)
        label_context = tf.cast(label_context, tf.float32)  # z_c
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
            num_labels=self.num_labels,
            seed=self.seed,
            kernel_initializer=self.kernel_initializer,
            chunk_size=self.chunk_size,
            matmul_dtype=self.matmul_dtype,
        )
        return config
