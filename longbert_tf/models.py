"""LongBERT (segment-wise BERT, then label attention) and the CAML baseline.

Both models are Keras-serialisable: `get_config`/`from_config`, and
`model.save("model.keras")` then `keras.models.load_model` without
`custom_objects` (importing this module registers the classes).
"""

import numpy as np

from longbert_tf.framework import hub, keras, tf
from longbert_tf.layers import LabelAttention


class NoteClassifier(keras.Model):
    """What LongBERT and CAML share: `call` is label attention over `encode(inputs)`, the
    training loss is its binary cross-entropy (`trainer.TrainableModel`), and a model
    loaded from a config creates its weights by reading one empty note."""

    def encode(self, inputs, training=None):
        """Token features `[batch, tokens, features]` and their mask `[batch, tokens]`."""
        raise NotImplementedError

    def call(self, inputs, training=None):
        return self.label_attention(*self.encode(inputs, training=training))

    def loss(self, features, targets, global_batch_size: int) -> tuple:
        """Binary cross-entropy of the codes `targets` (float32 `[batch, num_labels]`): its mean
        over codes, summed over the notes and divided by `global_batch_size`; no metrics."""
        tokens, mask = self.encode(features, training=True)
        return self.label_attention.loss(tokens, mask, targets, global_batch_size), {}

    @property
    def head_variables(self) -> list:
        return self.label_attention.trainable_variables

    def get_config(self):
        # keras.Model's config is empty once a subclass overrides get_config.
        config = super().get_config()
        config.update(name=self.name, trainable=self.trainable)
        return config

    def get_build_config(self):
        # A subclassed model records no input shape of its own; without this a loaded
        # model would have no weights to receive the saved values.
        return {"built": self.built}

    def build_from_config(self, config):
        if config["built"]:
            empty = tf.zeros([1, 1, 1], tf.int32)  # one note, one segment of one padding token
            self(dict(input_word_ids=empty, input_mask=empty))


@keras.utils.register_keras_serializable(package="longbert_tf")
class LongBERT(NoteClassifier):
    """Segment-wise BERT with label attention over all tokens of a note.

    The encoder runs on all segments of the batch in one call
    (`[batch, num_segments, width]` -> `[batch * num_segments, width]`); the
    token representations of a note's segments are concatenated and
    `LabelAttention` turns them into one logit per code. BERT-baseline is this
    model with a single segment (seq_len 512).

    Args:
      encoder: a `hub.KerasLayer` over a TF-Hub BERT encoder. Its config keeps
        only the handle: a loaded model reads the encoder from the handle (which
        must still resolve) and then takes the saved, fine-tuned weights.
      num_labels: number of codes.
      seed: seed of the label attention initializers.
      label_attention_args: `chunk_size`, `matmul_dtype` and `described` of `LabelAttention`.
      normalize_tokens: standardise every token vector (zero mean, unit variance
        over its features, no learned scale) before label attention.
      special_token_ids: the ids of `[CLS]` and `[SEP]`. A note with no other
        token (an empty text) attends to nothing, so its logits are the biases.
      attend_special_tokens: whether label attention reads the special tokens
        of notes that have other tokens.

    Call arguments: a dict with `input_word_ids` and `input_mask`, int32
    `[batch, num_segments, width]` (mask 0 on padding). Returns float32 logits
    `[batch, num_labels]`.
    """

    def __init__(
        self,
        encoder,
        num_labels,
        seed=0,
        label_attention_args=None,
        normalize_tokens=False,
        special_token_ids=(),
        attend_special_tokens=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.num_labels = num_labels
        self.seed = seed
        self.label_attention_args = label_attention_args
        self.normalize_tokens = normalize_tokens
        self.special_token_ids = tuple(special_token_ids)
        self.attend_special_tokens = attend_special_tokens
        self.label_attention = LabelAttention(
            num_labels, seed=seed, name="label_attention", **(label_attention_args or {})
        )

    def encode(self, inputs, training=None):
        """Token representations of the notes: `([batch, num_segments * width, hidden], mask)`.

        The mask is 1 on the tokens label attention reads: not padding, no
        special token unless `attend_special_tokens`, and none at all in a
        note made of special tokens only.
        """
        word_ids = inputs["input_word_ids"]
        mask = inputs["input_mask"]
        shape = tf.shape(word_ids)
        batch_size, num_segments, width = shape[0], shape[1], shape[2]
        flat_ids = tf.reshape(word_ids, [batch_size * num_segments, width])
        flat_mask = tf.reshape(mask, [batch_size * num_segments, width])
        outputs = self.encoder(
            dict(
                input_word_ids=flat_ids,
                input_mask=flat_mask,
                input_type_ids=tf.zeros_like(flat_ids),
            ),
            training=training,
        )
        sequence = outputs["sequence_output"]
        if self.normalize_tokens:
            mean, variance = tf.nn.moments(sequence, axes=[-1], keepdims=True)
            sequence = (sequence - mean) * tf.math.rsqrt(variance + 1e-6)
        content = mask
        for token_id in self.special_token_ids:
            content *= tf.cast(word_ids != token_id, mask.dtype)
        if self.attend_special_tokens:
            mask *= tf.reduce_max(content, axis=[1, 2], keepdims=True)  # 0 for an empty note
        else:
            mask = content
        tokens = tf.reshape(sequence, [batch_size, num_segments * width, sequence.shape[-1]])
        return tokens, tf.reshape(mask, [batch_size, num_segments * width])

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.layers.serialize(self.encoder),
            num_labels=self.num_labels,
            seed=self.seed,
            label_attention_args=(
                None if self.label_attention_args is None else dict(self.label_attention_args)
            ),
            normalize_tokens=self.normalize_tokens,
            special_token_ids=list(self.special_token_ids),
            attend_special_tokens=self.attend_special_tokens,
        )
        return config

    @classmethod
    def from_config(cls, config):
        # hub.KerasLayer is not registered with Keras: name it here so callers need no
        # custom_objects.
        encoder = keras.layers.deserialize(
            config["encoder"], custom_objects={"KerasLayer": hub.KerasLayer}
        )
        return cls(**{**config, "encoder": encoder})


def longbert_for(config, encoder, num_labels: int) -> LongBERT:
    """The LongBERT an `ExperimentConfig` describes (its `compute_dtype` resolved, see
    `runs.resolve_compute_dtype`), over a loaded `encoders.Encoder`."""
    vocab = encoder.vocab
    return LongBERT(
        encoder.layer,
        num_labels=num_labels,
        seed=config.seed,
        label_attention_args=config.label_attention_args,
        normalize_tokens=config.normalize_tokens,
        special_token_ids=(vocab.cls_id, vocab.sep_id),
        attend_special_tokens=config.attend_special_tokens,
    )


def set_label_priors(label_attention: LabelAttention, label_counts, num_notes: int) -> None:
    """Starts each code's bias at the log-odds of its training frequency (add-one smoothed).

    With thousands of rare codes, zero biases start every code at probability
    0.5 and the first thousands of Adam steps go into pulling them down; the
    prior starts the classifier where those steps would have taken it. A
    described layer's shared bias starts at the prior of a code without
    training notes, and each code's own bias at the rest of its prior. The
    layer must be built.
    """

    def log_odds(counts):
        prior = (np.asarray(counts, np.float64) + 1) / (num_notes + 2)
        return np.log(prior / (1 - prior))

    priors = log_odds(label_counts)
    if label_attention.described:
        unseen = log_odds(0)
        label_attention.shared_bias.assign(unseen)
        priors -= unseen
    label_attention.label_biases.assign(priors)


@keras.utils.register_keras_serializable(package="longbert_tf")
class CAML(NoteClassifier):
    """Convolutional attention for multi-label classification (Mullenbach et al. 2018).

    Word embeddings (trained) -> dropout -> one 1-D convolution with `tanh` ->
    `LabelAttention` (CAML's per-code attention U and output vectors,
    glorot-uniform initialised as in CAML). Padding positions are zeroed
    before the convolution and masked in the attention, so a note's logits do
    not depend on how far its batch is padded.

    Args:
      embeddings: optional float32 `[vocab_size, embedding_size]` initial word
        embeddings, row 0 padding. Not part of the config: a saved model
        carries the trained table with its weights.
      num_labels: number of codes.
      vocab_size, embedding_size: the table's shape; taken from `embeddings`
        when given (then they must match it). Without `embeddings` the table
        starts uniform in [-0.05, 0.05] (seeded).
      kernel_size, num_filters, dropout_rate: CAML's 10, 50 and 0.2 by default.
      seed: seed of the initializers and of dropout.

    Call arguments: a dict with `input_word_ids` and `input_mask`, int32
    `[batch, 1, num_words]` (one segment of words). Returns float32 logits
    `[batch, num_labels]`.
    """

    def __init__(
        self,
        embeddings=None,
        *,
        num_labels,
        vocab_size=None,
        embedding_size=None,
        kernel_size=10,
        num_filters=50,
        dropout_rate=0.2,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_labels = num_labels
        self.vocab_size, self.embedding_size = _table_shape(embeddings, vocab_size, embedding_size)
        self.kernel_size = kernel_size
        self.num_filters = num_filters
        self.dropout_rate = dropout_rate
        self.seed = seed
        self.embedding = keras.layers.Embedding(
            self.vocab_size,
            self.embedding_size,
            embeddings_initializer=keras.initializers.RandomUniform(seed=seed),
            name="word_embeddings",
        )
        if embeddings is not None:
            # Assigned, not a Constant initializer, so that no layer config holds the table.
            self.embedding.build(None)
            self.embedding.embeddings.assign(embeddings)
        self.dropout = keras.layers.Dropout(dropout_rate, seed=seed)
        self.convolution = keras.layers.Conv1D(
            num_filters,
            kernel_size,
            padding="same",
            activation="tanh",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name="convolution",
        )
        self.label_attention = LabelAttention(
            num_labels, seed=seed, kernel_initializer="glorot_uniform", name="label_attention"
        )

    def encode(self, inputs, training=None):
        """Convolution features of the words and their mask: `([batch, words, filters], mask)`."""
        word_ids = inputs["input_word_ids"][:, 0, :]
        mask = inputs["input_mask"][:, 0, :]
        embedded = self.embedding(word_ids) * tf.cast(mask, tf.float32)[:, :, tf.newaxis]
        return self.convolution(self.dropout(embedded, training=training)), mask

    def get_config(self):
        config = super().get_config()
        config.update(
            num_labels=self.num_labels,
            vocab_size=self.vocab_size,
            embedding_size=self.embedding_size,
            kernel_size=self.kernel_size,
            num_filters=self.num_filters,
            dropout_rate=self.dropout_rate,
            seed=self.seed,
        )
        return config


def _table_shape(embeddings, vocab_size, embedding_size) -> tuple:
    """CAML's `(vocab_size, embedding_size)`: the table's shape, which given sizes must match."""
    if embeddings is None:
        if vocab_size is None or embedding_size is None:
            raise ValueError(
                f"CAML needs embeddings or both vocab_size and embedding_size; got "
                f"vocab_size={vocab_size}, embedding_size={embedding_size}"
            )
        return int(vocab_size), int(embedding_size)
    shape = np.shape(embeddings)
    if len(shape) != 2 or (vocab_size or shape[0], embedding_size or shape[1]) != shape:
        raise ValueError(
            f"embeddings of shape {shape} do not match vocab_size={vocab_size}, "
            f"embedding_size={embedding_size}; pass a [vocab_size, embedding_size] "
            "table, or only the table"
        )
    return int(shape[0]), int(shape[1])


def parameter_breakdown(encoder_parameters: int, hidden_size: int, num_labels: int) -> dict:
    """The paper's Table 1 rows, counted on a real `LabelAttention` of that size."""
    layer = LabelAttention(num_labels)
    layer.build([None, None, hidden_size])
    attention = layer.label_queries.shape.num_elements()
    classification = (
        layer.label_weights.shape.num_elements() + layer.label_biases.shape.num_elements()
    )
    return {
        "language model": encoder_parameters,
        "attention layer": attention,
        "classification layer": classification,
        "total": encoder_parameters + attention + classification,
    }
