"""The CAML baseline (Mullenbach et al. 2018): word embeddings, one convolution, label attention."""

import numpy as np

from longbert_tf.framework import keras, tf
from longbert_tf.modeling.label_attention import LabelAttention
from longbert_tf.modeling.longbert import NoteClassifier


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
