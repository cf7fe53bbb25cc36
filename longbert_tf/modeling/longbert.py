"""LongBERT (segment-wise BERT, then label attention) and what it shares with CAML (`caml`).

Both models are Keras-serialisable: `get_config`/`from_config`, and
`model.save("model.keras")` then `keras.models.load_model` without
`custom_objects` (importing `longbert_tf.modeling.longbert` registers LongBERT,
`longbert_tf.modeling.caml` CAML).
"""

import numpy as np

from longbert_tf.framework import hub, keras, tf
from longbert_tf.modeling.label_attention import LabelAttention


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
