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


def _code_chunks(values, chunk_size):
    """`[codes, ...]` -> `[num_chunks, chunk_size, ...]`, zero-padded at the end."""
    num_codes = tf.shape(values)[0]
    num_chunks = (num_codes + chunk_size - 1) // chunk_size
    padding = [[0, num_chunks * chunk_size - num_codes]] + [[0, 0]] * (len(values.shape) - 1)
    shape = tf.concat([[num_chunks, chunk_size], tf.shape(values)[1:]], 0)
    return tf.reshape(tf.pad(values, padding), shape)


def _unchunk(chunks, num_codes):
    """`[num_chunks, chunk_size, ...]` -> `[num_codes, ...]`."""
    shape = tf.concat([[-1], tf.shape(chunks)[2:]], 0)
    return tf.reshape(chunks, shape)[:num_codes]


@tf.function(jit_compile=True)
def _chunk_attention(products, mask_bias, has_token):
    """One chunk's attention terms, fused by XLA (matrix products stay outside).

    Args:
      products: `[batch, 2 * chunk, tokens]`, <e_i, q_c> for the chunk's codes, then <e_i, w_c>.
      mask_bias: float32 `[batch, 1, tokens]`, 0 on tokens and -1e30 on padding.
      has_token: float32 `[batch, 1]`, 0 for a note without any token.

    Returns:
      `(attention, classifier_products, attended)`: float32 `[batch, chunk, tokens]`
      a_ci and <e_i, w_c>, and `[batch, chunk]` attended = sum_i a_ci <e_i, w_c>
      = <z_c, w_c> (0 for an empty note).
    """
    products = tf.cast(products, tf.float32)
    chunk_size = tf.shape(products)[1] // 2
    attention = tf.nn.softmax(products[:, :chunk_size] + mask_bias, axis=-1)
    classifier_products = products[:, chunk_size:]
    attended = tf.reduce_sum(attention * classifier_products, -1) * has_token
    return attention, classifier_products, attended


@tf.function(jit_compile=True)
def _chunk_loss(products, mask_bias, has_token, biases, labels, is_code, grad_dtype):
    """One chunk's summed cross-entropy and its gradients, fused by XLA.

    `biases`, `is_code` `[chunk]` and `labels` `[batch, chunk]` belong to the
    chunk (padding codes have `is_code` 0). Returns `(loss [batch], bias
    gradients [chunk], product gradients [batch, 2 * chunk, tokens])`, the
    last in `grad_dtype` for the matrix products that follow.

    With s_ci = <e_i, q_c>, v_ci = <e_i, w_c>, a_c = softmax_i(s_ci) and
    logit_c = sum_i a_ci v_ci + b_c, the cross-entropy's gradient is
    g_c = sigmoid(logit_c) - y_c for logit_c and b_c; then
    d/dv_ci = g_c a_ci (the logit is linear in v), and, since
    d a_cj / d s_ci = a_cj (delta_ij - a_ci),
    d/ds_ci = g_c a_ci (v_ci - sum_j a_cj v_cj) = g_c a_ci (v_ci - attended_c).
    """
    attention, classifier_products, attended = _chunk_attention(products, mask_bias, has_token)
    logits = attended + biases
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels, logits) * is_code
    logit_grads = (tf.sigmoid(logits) - labels) * is_code  # g_c, [batch, chunk]
    attended_grads = logit_grads * has_token  # an empty note's logits are its biases alone
    classifier_product_grads = attention * attended_grads[:, :, tf.newaxis]  # d/dv
    score_grads = classifier_product_grads * (classifier_products - attended[:, :, tf.newaxis])
    grads = tf.cast(tf.concat([score_grads, classifier_product_grads], 1), grad_dtype)
    return tf.reduce_sum(loss, -1), tf.reduce_sum(logit_grads, 0), grads


def _prepare(tokens, mask, queries, classifiers, chunk_size, matmul_dtype):
    """Tokens in `matmul_dtype`, the mask as a bias, and each chunk's queries beside its
    classifier vectors: `[num_chunks, 2 * chunk, hidden]`."""
    mask = tf.cast(mask, tf.float32)
    mask_bias = (1.0 - mask)[:, tf.newaxis, :] * -1e30
    has_token = tf.cast(tf.reduce_any(mask > 0, axis=-1), tf.float32)[:, tf.newaxis]
    chunks = tf.concat(
        [_code_chunks(queries, chunk_size), _code_chunks(classifiers, chunk_size)], axis=1
    )
    return tf.cast(tokens, matmul_dtype), mask_bias, has_token, tf.cast(chunks, matmul_dtype)


def chunked_logits(tokens, mask, queries, classifiers, chunk_size, matmul_dtype="float32"):
    """Label attention logits without biases, `chunk_size` codes at a time: `[batch, codes]`.

    `queries` q_c and `classifiers` w_c are `[codes, hidden]`. Equal to the
    dense computation; only one chunk's `[batch, chunk, tokens]` scores exist
    at a time. For training use `chunked_loss`, which computes the gradients
    in the same pass.
    """
    matmul_tokens, mask_bias, has_token, chunks = _prepare(
        tokens, mask, queries, classifiers, chunk_size, matmul_dtype
    )

    def body(index, attended):
        products = tf.matmul(chunks[index], matmul_tokens, transpose_b=True)
        return index + 1, attended.write(index, _chunk_attention(products, mask_bias, has_token)[2])

    num_chunks = tf.shape(chunks)[0]
    _, attended = tf.while_loop(
        lambda index, _: index < num_chunks,
        body,
        (0, tf.TensorArray(tf.float32, size=num_chunks)),
        parallel_iterations=1,
    )
    attended = tf.transpose(attended.stack(), [0, 2, 1])  # [num_chunks, chunk, batch]
    return tf.transpose(_unchunk(attended, tf.shape(queries)[0]))


def chunked_loss(
    tokens, mask, labels, queries, classifiers, biases, chunk_size, matmul_dtype="float32"
):
    """Sum over notes of the mean binary cross-entropy over codes, `chunk_size` codes at a time.

    Equal (value and gradients) to the dense `LabelAttention` followed by the
    loss, but each chunk's gradients are computed in the same pass as its
    logits (custom gradient), so neither `[batch, codes, tokens]` tensors nor a
    recomputation in the backward pass are needed: memory is O(batch x chunk x
    tokens + batch x tokens x hidden + codes x hidden). Matrix products run in
    `matmul_dtype`; softmax statistics, logits, loss and gradients are float32.

    Args:
      tokens: `[batch, tokens, hidden]`; mask: `[batch, tokens]`; labels:
        float32 `[batch, codes]`; queries q_c, classifiers w_c: `[codes, hidden]`;
        biases `[codes]`.

    Returns:
      float32 scalar.
    """
    num_codes = tf.shape(queries)[0]

    @tf.custom_gradient
    def loss_and_grads(tokens, queries, classifiers, biases):
        matmul_tokens, mask_bias, has_token, chunks = _prepare(
            tokens, mask, queries, classifiers, chunk_size, matmul_dtype
        )
        bias_chunks = _code_chunks(biases, chunk_size)
        label_chunks = tf.transpose(_code_chunks(tf.transpose(labels), chunk_size), [0, 2, 1])
        is_code = _code_chunks(tf.ones([num_codes]), chunk_size)

        def body(index, loss, token_grads, query_grads, classifier_grads, bias_grads):
            chunk = chunks[index]  # [2 * chunk, hidden]: q_c, then w_c
            products = tf.matmul(chunk, matmul_tokens, transpose_b=True)
            note_loss, chunk_bias_grads, product_grads = _chunk_loss(
                products,
                mask_bias,
                has_token,
                bias_chunks[index],
                label_chunks[index],
                is_code[index],
                matmul_dtype,
            )
            # The products are linear in both factors: d/dq_c = sum_i (d/ds_ci) e_i,
            # d/dw_c = sum_i (d/dv_ci) e_i (summed over notes too), and
            # d/de_i = sum_c (d/ds_ci) q_c + (d/dv_ci) w_c. Each note's products in
            # matmul_dtype, their sum over the batch in float32.
            note_grads = tf.cast(tf.matmul(product_grads, matmul_tokens), tf.float32)
            chunk_grads = tf.reduce_sum(note_grads, 0)  # [2 * chunk, hidden]
            token_grads += tf.cast(tf.matmul(product_grads, chunk, transpose_a=True), tf.float32)
            return (
                index + 1,
                loss + note_loss,
                token_grads,
                query_grads.write(index, chunk_grads[:chunk_size]),
                classifier_grads.write(index, chunk_grads[chunk_size:]),
                bias_grads.write(index, chunk_bias_grads),
            )

        num_chunks = tf.shape(chunks)[0]
        _, note_loss, token_grads, query_grads, classifier_grads, bias_grads = tf.while_loop(
            lambda index, *_: index < num_chunks,
            body,
            (0, tf.zeros([tf.shape(tokens)[0]]), tf.zeros(tf.shape(tokens), tf.float32))
            + tuple(tf.TensorArray(tf.float32, size=num_chunks) for _ in range(3)),
            parallel_iterations=1,
        )
        scale = 1.0 / tf.cast(num_codes, tf.float32)  # the mean over codes

        def grad(upstream):
            factor = upstream * scale
            return (
                tf.cast(factor * token_grads, tokens.dtype),
                factor * _unchunk(query_grads.stack(), num_codes),
                factor * _unchunk(classifier_grads.stack(), num_codes),
                factor * _unchunk(bias_grads.stack(), num_codes),
            )

        return tf.reduce_sum(note_loss) * scale, grad

    return loss_and_grads(tokens, queries, classifiers, biases)


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
      matmul_dtype: dtype of the matrix products ("float32" or "bfloat16");
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
    b_c = m_c b'_c + <beta, d_c> + beta_0, where m_c is 1 for codes with a
    training note and 0 for the others (their own parameters could only learn
    "never"). A and B start as the identity and q', w', beta at 0, so the
    untrained layer attends to the tokens nearest each description and scores
    how close the attended tokens are to it. Extra weights:
    `description_queries` A and `description_weights` B `[hidden, hidden]`,
    `description_biases` beta `[hidden]`, `shared_bias` beta_0, and the
    non-trainable `code_descriptions` `[C, hidden]` and `trained_codes` `[C]`.
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
        super().build(input_shape)

    def set_descriptions(self, code_descriptions, trained_codes) -> None:
        """Sets d_c (float `[C, hidden]`, unit or zero rows) and m_c (bool `[C]`) once built."""
        if not self.described:
            raise ValueError(f"layer {self.name} was not built with described=True")
        self.code_descriptions.assign(tf.cast(code_descriptions, tf.float32))
        self.trained_codes.assign(tf.cast(trained_codes, tf.float32))

    def code_parameters(self) -> tuple:
        """`(queries, classifiers, biases)` q_c, w_c, b_c as the logits use them: `[C, hidden]`
        twice and `[C]`."""
        if not self.described:
            return self.label_queries, self.label_weights, self.label_biases
        trained = self.trained_codes
        descriptions = self.code_descriptions
        queries = trained[:, tf.newaxis] * self.label_queries
        queries += tf.matmul(descriptions, self.description_queries)
        classifiers = trained[:, tf.newaxis] * self.label_weights
        classifiers += tf.matmul(descriptions, self.description_weights)
        biases = trained * self.label_biases + self.shared_bias
        biases += tf.linalg.matvec(descriptions, self.description_biases)
        return queries, classifiers, biases

    @property
    def _codes_per_chunk(self) -> int:
        return min(self.chunk_size, self.num_labels)  # no padding codes when there are few

    def call(self, tokens, mask):
        queries, classifiers, biases = self.code_parameters()
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
        """Sum over notes of the mean binary cross-entropy over codes, divided by `denominator`.

        `labels` float32 `[batch, codes]`; `denominator` is the global batch
        size (`tf.nn.compute_average_loss`'s convention, right under any
        distribution strategy). With `chunk_size`, the gradients come from
        `chunked_loss`'s single pass.
        """
        if not self.built:
            self(tokens, mask)  # creates the weights
        if self.chunk_size:
            total = chunked_loss(
                tokens,
                mask,
                labels,
                *self.code_parameters(),
                self._codes_per_chunk,
                self.matmul_dtype,
            )
        else:
            logits = self(tokens, mask)
            cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
            total = tf.reduce_sum(tf.reduce_mean(cross_entropy, axis=-1))
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
