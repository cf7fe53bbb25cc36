"""Masked-LM pretraining of an encoder on unlabelled in-domain text (BERT's recipe).

Text: the training notes of a dataset (its token cache; never dev or test) and
any extra texts (tokenized once into a token cache of their own). Each text is
cut into windows of `segment_length - 2` tokens, each window one segment
`[CLS] tokens [SEP]`. Epoch e visits the windows in an order that is a
function of (seed, e) alone, so a checkpoint needs only the step. In each
window 15% of the tokens are chosen (`mask_tokens`): 80% of them become
`[MASK]`, 10% a random token, 10% stay; the loss is the cross-entropy of the
chosen tokens' original ids. The head is BERT's (dense + GELU + layer norm,
then the word embeddings transposed plus a bias). The result is written as a
TF-Hub-format encoder (same contract, `vocab.txt` asset, lower-casing flag)
that `--encoder=DIR` reads.
"""

import dataclasses
import json
import os

import numpy as np
from absl import logging

from longbert_tf import files
from longbert_tf.data import token_cache
from longbert_tf.framework import hub, keras, tf
from longbert_tf.modeling import bert, bert_layers, encoder_specs
from longbert_tf.training import optimization
from longbert_tf.training.loss_scale import loss_scale_for
from longbert_tf.training.trainer import Trainer

MASK_RATE = 0.15  # share of a window's tokens the loss is taken on
MASK_TOKEN_SHARE = 0.8  # of those, replaced by [MASK]
RANDOM_TOKEN_SHARE = 0.1  # replaced by a random token; the rest stay as they are


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run: encoder handle, data, and BERT's optimisation settings."""

    encoder: str  # a resolved handle of a TF-Hub-format encoder this package built or converted
    token_caches: tuple  # token caches of the texts (training notes, extra texts)
    out_dir: str
    segment_length: int = 128
    batch_size: int = 16
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    train_steps: int = 2000
    checkpoint_every: int = 200
    log_every: int = 20
    seed: int = 0
    compute_dtype: str = "float32"  # of the encoder's products (resolved: not "auto")

    def __post_init__(self):
        for name in ("segment_length", "batch_size", "train_steps", "checkpoint_every"):
            if getattr(self, name) < (3 if name == "segment_length" else 1):
                raise ValueError(f"{name}={getattr(self, name)} is too small")
        if not self.token_caches:
            raise ValueError("pretraining needs at least one token cache of texts")


def mask_tokens(word_ids, input_mask, vocab_size: int, mask_id: int, special_ids, seed):
    """BERT's masking of a batch of segments.

    Args:
      word_ids, input_mask: int32 `[batch, length]`.
      special_ids: token ids never chosen (`[CLS]`, `[SEP]`, `[PAD]`, ...).
      seed: int `[2]`, the stateless random seed of this batch.

    Returns:
      `(inputs, targets, weights)`: the masked word ids, the original ids, and
      float32 1.0 at the chosen positions (`MASK_RATE` of the real, non-special
      tokens), else 0.
    """
    word_ids = tf.cast(word_ids, tf.int32)
    shape = tf.shape(word_ids)
    seed = tf.cast(seed, tf.int64)
    is_special = tf.reduce_any(
        word_ids[..., tf.newaxis] == tf.constant(special_ids, tf.int32), axis=-1
    )
    selectable = (input_mask > 0) & ~is_special
    chosen = selectable & (tf.random.stateless_uniform(shape, seed) < MASK_RATE)
    action = tf.random.stateless_uniform(shape, seed + [0, 1])
    random_ids = tf.random.stateless_uniform(
        shape, seed + [0, 2], minval=0, maxval=vocab_size, dtype=tf.int32
    )
    inputs = tf.where(chosen & (action < MASK_TOKEN_SHARE), mask_id, word_ids)
    random_choice = (action >= MASK_TOKEN_SHARE) & (action < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
    inputs = tf.where(chosen & random_choice, random_ids, inputs)
    return inputs, word_ids, tf.cast(chosen, tf.float32)


def windows(note_indexes: list, content_length: int) -> np.ndarray:
    """int64 `[num_windows, 3]`: (`token_cache.note_reader` row, first token, tokens) per window."""
    rows, row = [], 0
    for index in note_indexes:
        for num_tokens in index[:, 2]:
            for start in range(0, max(num_tokens, 1), content_length):
                rows.append((row, start, min(content_length, num_tokens - start)))
            row += 1
    return np.array(rows, np.int64).reshape([-1, 3])


def window_dataset(config: PretrainConfig, vocab, first_step: int = 0) -> tf.data.Dataset:
    """Batches of masked windows from step `first_step`: `(features, targets)`, the encoder's
    inputs (int32 `[batch, segment_length]` each) and the original `token_ids` with the
    float32 `weights` of the tokens the loss is taken on (see `mask_tokens`)."""
    note_indexes = [token_cache.read_index(path) for path in config.token_caches]
    read = token_cache.note_reader(list(config.token_caches), note_indexes)
    content_length = config.segment_length - 2
    table = tf.constant(windows(note_indexes, content_length))
    num_windows = int(table.shape[0])
    steps_per_epoch = -(-num_windows // config.batch_size)
    first_epoch, skip = divmod(first_step, steps_per_epoch)
    spec = dict(token_ids=tf.io.VarLenFeature(tf.int64))

    def epoch_windows(epoch):
        order = tf.argsort(
            tf.random.stateless_uniform([num_windows], tf.stack([config.seed, 2 * epoch]))
        )
        total = steps_per_epoch * config.batch_size
        order = tf.tile(order, [-(-total // num_windows)])[:total]  # fill up the last batch
        return tf.data.Dataset.from_tensor_slices(tf.gather(table, order))

    def segment(serialized, window):
        token_ids = tf.sparse.to_dense(tf.io.parse_single_example(serialized, spec)["token_ids"])
        tokens = tf.cast(token_ids[window[1] : window[1] + window[2]], tf.int32)
        ids = tf.concat([[vocab.cls_id], tokens, [vocab.sep_id]], 0)
        padding = config.segment_length - tf.size(ids)
        return tf.pad(ids, [[0, padding]]), tf.pad(tf.ones_like(ids), [[0, padding]])

    def mask(step, batch):
        word_ids, input_mask = batch
        seed = tf.stack([tf.cast(config.seed, tf.int64), step + (1 << 32)])
        special_ids = [vocab.token_id(token) for token in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")]
        return mask_tokens(
            word_ids, input_mask, len(vocab.tokens), vocab.token_id("[MASK]"), special_ids, seed
        ) + (input_mask,)

    dataset = (
        tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
        .flat_map(epoch_windows)
        .skip(skip * config.batch_size)
        .map(lambda window: (read(window[0]).get_single_element(), window))
        .map(segment, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(config.batch_size, drop_remainder=True)
    )
    dataset = tf.data.Dataset.zip(
        tf.data.Dataset.range(first_step, np.iinfo(np.int64).max), dataset
    ).map(mask)
    return dataset.map(
        lambda inputs, targets, weights, input_mask: (
            dict(
                input_word_ids=inputs, input_mask=input_mask, input_type_ids=tf.zeros_like(inputs)
            ),
            dict(token_ids=targets, weights=weights),
        )
    ).prefetch(tf.data.AUTOTUNE)


class MaskedLM(keras.Model):
    """An encoder (`hub.KerasLayer`) with BERT's masked-LM head tied to its word embeddings.

    Call arguments: the encoder's inputs, `[batch, length]` each. Returns
    float32 logits over the vocabulary, `[batch, length, vocab size]`.
    """

    def __init__(self, encoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        tables = [w for w in encoder.weights if "word_embeddings" in w.name]
        if len(tables) != 1:
            raise ValueError("the encoder has no single word_embeddings table to tie the head to")
        self.word_embeddings = tables[0]
        hidden = int(self.word_embeddings.shape[1])
        self.transform = keras.layers.Dense(hidden, activation=bert_layers.gelu, name="transform")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=1e-12, name="layer_norm")
        self.output_bias = self.add_weight(
            name="output_bias", shape=[self.word_embeddings.shape[0]], initializer="zeros"
        )

    def call(self, inputs, training=None):
        sequence = self.encoder(inputs, training=training)["sequence_output"]
        hidden = self.layer_norm(self.transform(sequence))
        return tf.matmul(hidden, self.word_embeddings, transpose_b=True) + self.output_bias

    def loss(self, features, targets, global_batch_size: int) -> tuple:
        """`trainer.TrainableModel.loss`: the masked-LM loss and accuracy of the batch's chosen
        tokens (`targets`: `token_ids` and `weights`, see `window_dataset`), each weighted by
        the replica's share of the global batch."""
        logits = self(features, training=True)
        token_ids, weights = targets["token_ids"], targets["weights"]
        share = tf.cast(tf.shape(weights)[0], tf.float32) / global_batch_size
        correct = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == token_ids, tf.float32)
        accuracy = tf.reduce_sum(correct * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
        loss = masked_lm_loss(logits, token_ids, weights)
        return loss * share, dict(masked_lm_accuracy=accuracy * share)

    @property
    def head_variables(self) -> list:
        return [
            *self.transform.trainable_variables,
            *self.layer_norm.trainable_variables,
            self.output_bias,
        ]


def masked_lm_loss(logits, targets, weights):
    """Mean cross-entropy of the chosen tokens (0 when none is chosen)."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def save_encoder(layer: hub.KerasLayer, handle: str, vocab, out_dir: str) -> str:
    """Writes the (trained) encoder of `layer` as a TF-Hub-format SavedModel, atomically, in
    float32 whatever dtype it trained in (a run picks its own)."""
    arch = bert.own_architecture(handle, "pretraining writes back")
    model = bert.build_bert_encoder(arch)
    bert.assign_weights(
        model, {variable.name.removesuffix(":0"): variable.numpy() for variable in layer.weights}
    )
    return bert.save_hub_format(model, arch, vocab.tokens, vocab.lower_case, out_dir)


def pretrain(config: PretrainConfig, vocab) -> dict:
    """Runs (or resumes) masked-LM training; writes `out_dir/encoder`. Returns the last loss.

    `out_dir` holds `checkpoints/` (weights, Adam moments, step), `train/`
    (TensorBoard: loss, masked-token accuracy) and, at the end, `encoder/`.
    """
    results_path = os.path.join(config.out_dir, "pretraining.json")
    if os.path.exists(results_path):
        logging.info("%s is finished; delete %s to run again", config.out_dir, results_path)
        with open(results_path) as results_file:
            return json.load(results_file)
    handle = encoder_specs.with_compute_dtype(config.encoder, config.compute_dtype)
    encoder = hub.KerasLayer(handle, trainable=True, name="encoder")
    model = MaskedLM(encoder)
    probe = tf.ones([1, 3], tf.int32)
    model(dict(input_word_ids=probe, input_mask=probe, input_type_ids=probe * 0))
    schedule = optimization.WarmupSchedule(
        config.learning_rate, "linear", config.warmup_steps, config.train_steps
    )
    group = optimization.OptimizerGroup(
        keras.optimizers.Adam(learning_rate=schedule), model.trainable_variables
    )
    group.optimizer.build(group.variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    loss_scale = loss_scale_for(config.compute_dtype)
    state = tf.train.Checkpoint(
        model=model,
        optimizer=group.optimizer,
        step=step,
        **({"loss_scale": loss_scale} if loss_scale else {}),
    )
    manager = tf.train.CheckpointManager(
        state, os.path.join(config.out_dir, "checkpoints"), max_to_keep=1
    )
    if manager.latest_checkpoint:
        state.restore(manager.latest_checkpoint).expect_partial()
        logging.info("Resumed %s at step %d", manager.latest_checkpoint, int(step))
    train_step = Trainer(
        model, [group], tf.distribute.get_strategy(), config.batch_size, loss_scale=loss_scale
    )
    writer = tf.summary.create_file_writer(os.path.join(config.out_dir, "train"))
    batches = iter(window_dataset(config, vocab, int(step)))
    outputs = dict(loss=float("nan"), masked_lm_accuracy=float("nan"))
    while int(step) < config.train_steps:
        outputs = train_step(batches)
        step.assign_add(1)
        current = int(step)
        if current % config.log_every == 0 or current == config.train_steps:
            _log_step(current, config.train_steps, outputs, group.optimizer, writer)
        if current % config.checkpoint_every == 0 or current == config.train_steps:
            manager.save(checkpoint_number=current)
    encoder_dir = os.path.join(config.out_dir, "encoder")
    if not os.path.exists(encoder_dir):
        save_encoder(encoder, config.encoder, vocab, encoder_dir)
    results = dict(
        loss=float(outputs["loss"]),
        accuracy=float(outputs["masked_lm_accuracy"]),
        encoder=encoder_dir,
    )
    files.write_json(results_path, results)
    return results


def _log_step(step: int, train_steps: int, outputs: dict, optimizer, writer) -> None:
    """The masked-LM loss, accuracy and learning rate to the log and TensorBoard."""
    loss, accuracy = float(outputs["loss"]), float(outputs["masked_lm_accuracy"])
    logging.info(
        "step %d/%d  masked-LM loss %.4f  accuracy %.3f", step, train_steps, loss, accuracy
    )
    with writer.as_default(step=step):
        tf.summary.scalar("masked_lm_loss", loss)
        tf.summary.scalar("masked_lm_accuracy", accuracy)
        tf.summary.scalar("learning_rate", float(optimizer.learning_rate))
