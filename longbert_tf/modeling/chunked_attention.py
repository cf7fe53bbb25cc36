"""Label attention a chunk of codes at a time, with its gradients in the same pass.

`LabelAttention` with a `chunk_size` uses these: only one chunk's
`[batch, chunk, tokens]` scores exist at a time, and `chunked_loss` returns
the loss with hand-written gradients (derived in `_chunk_loss` and
`_chunk_gradients`), so the backward pass recomputes nothing.
"""

from longbert_tf.framework import tf


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


def _chunk_gradients(
    chunk, matmul_tokens, mask_bias, has_token, biases, labels, is_code, matmul_dtype
):
    """One chunk's loss and the gradients of its parameters and of the tokens.

    `chunk` `[2 * chunk, hidden]` holds the chunk's q_c, then its w_c. Returns
    float32 `(loss [batch], parameter gradients [2 * chunk, hidden] summed over
    notes, token gradients [batch, tokens, hidden], bias gradients [chunk])`.
    The products s_ci = <e_i, q_c> and v_ci = <e_i, w_c> are linear in both
    factors, so with the product gradients of `_chunk_loss`:
    d/dq_c = sum_i (d/ds_ci) e_i, d/dw_c = sum_i (d/dv_ci) e_i (summed over the
    notes too), and d/de_i = sum_c (d/ds_ci) q_c + (d/dv_ci) w_c. Each note's
    products run in `matmul_dtype`, their sum over the batch in float32.
    """
    products = tf.matmul(chunk, matmul_tokens, transpose_b=True)
    note_loss, bias_grads, product_grads = _chunk_loss(
        products, mask_bias, has_token, biases, labels, is_code, matmul_dtype
    )
    note_grads = tf.cast(tf.matmul(product_grads, matmul_tokens), tf.float32)
    token_grads = tf.cast(tf.matmul(product_grads, chunk, transpose_a=True), tf.float32)
    return note_loss, tf.reduce_sum(note_grads, 0), token_grads, bias_grads


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

    One function: `tf.custom_gradient` needs the chunk loop and the gradient
    function that returns its sums in one closure.
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
            note_loss, chunk_grads, chunk_token_grads, chunk_bias_grads = _chunk_gradients(
                chunks[index],
                matmul_tokens,
                mask_bias,
                has_token,
                bias_chunks[index],
                label_chunks[index],
                is_code[index],
                matmul_dtype,
            )
            return (
                index + 1,
                loss + note_loss,
                token_grads + chunk_token_grads,
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
        scale = 1.0 / tf.cast(tf.maximum(num_codes, 1), tf.float32)  # the mean over codes

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
