"""tf.data pipelines of segment tensors: every note once (evaluation) and training batches.

Both read a token cache (`longbert_tf.data.token_cache`), turn each note into
segments with a segmenter (`segmentation.bert_segmenter`, or CAML's words), and pad
a batch only as far as its longest note needs.
"""

import numpy as np

from longbert_tf.data import token_cache
from longbert_tf.framework import tf

# Training batches are formed from windows of this many batches of shuffled notes, each
# window sorted by note length: batches of alike lengths, little padding.
SORT_WINDOW_BATCHES = 32


def _parser(segmenter, num_labels: int):
    """`serialized example -> (features, labels)` of one note (see `segment_dataset`)."""
    feature_spec = dict(
        note_index=tf.io.FixedLenFeature([], tf.int64),
        token_ids=tf.io.VarLenFeature(tf.int64),
        label_ids=tf.io.VarLenFeature(tf.int64),
    )

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, feature_spec)
        word_ids, mask = segmenter(tf.sparse.to_dense(example["token_ids"]))
        labels = tf.scatter_nd(
            example["label_ids"].values[:, tf.newaxis],
            tf.ones_like(example["label_ids"].values, tf.float32),
            [num_labels],
        )
        features = dict(input_word_ids=word_ids, input_mask=mask, note_index=example["note_index"])
        return features, labels

    return parse


def _trim_width(features, labels):
    """Cuts a batch's segments to its longest segment."""
    width = tf.maximum(tf.reduce_max(tf.reduce_sum(features["input_mask"], -1)), 1)
    features = dict(features)
    for key in ("input_word_ids", "input_mask"):
        features[key] = features[key][:, :, :width]
    return features, labels


PADDING_VALUES = (dict(input_word_ids=0, input_mask=0, note_index=np.int64(-1)), 0.0)


def segment_dataset(
    cache_path: str,
    segmenter,
    max_segments: int,
    num_labels: int,
    batch_size: int,
    max_notes: int | None = None,
) -> tf.data.Dataset:
    """Every note of a token cache (its first `max_notes`, if given) once, in batches.

    `segmenter` turns a note's token ids into `(ids, mask)`, int32
    `[num_segments, width]` with `num_segments <= max_segments` (see
    `bert_segmenter`; CAML uses a single segment of words).

    Yields `(features, labels)`: `features` has `input_word_ids` and
    `input_mask` (int32 `[batch, num_segments, width]`) and `note_index`
    (int64 `[batch]`); `labels` is float32 multi-hot `[batch, num_labels]`.
    Notes are bucketed by their number of segments and a batch is padded only
    to its longest note: `num_segments` is the batch maximum and `width` the
    longest segment of the batch. Padding is id 0 with `input_mask` 0.
    """
    dataset = tf.data.TFRecordDataset(cache_path).take(max_notes or -1)
    dataset = dataset.map(
        _parser(segmenter, num_labels), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda features, labels: tf.shape(features["input_word_ids"])[0],
        bucket_boundaries=list(range(2, max_segments + 1)),
        bucket_batch_sizes=[batch_size] * max_segments,
        padding_values=PADDING_VALUES,
    )
    return dataset.map(_trim_width).prefetch(tf.data.AUTOTUNE)


def epoch_batches(note_lengths, batch_size: int, seed: int, epoch):
    """The notes of one training epoch, int64 `[ceil(num_notes / batch_size), batch_size]`.

    Args:
      note_lengths: int `[num_notes]`, the tokens each note contributes (cut to what
        the model reads); the rows of the result index into it.
      epoch: int64 scalar; with `seed` it alone decides the order.

    The notes are shuffled, the last batch is filled up with the epoch's first
    notes, every window of `SORT_WINDOW_BATCHES` batches is sorted by length
    (batches of alike notes pad little) and the batches are shuffled again.
    """
    note_lengths = tf.cast(note_lengths, tf.int64)
    num_notes = tf.shape(note_lengths, out_type=tf.int64)[0]
    num_batches = (num_notes + batch_size - 1) // batch_size
    epoch_seed = tf.stack([tf.cast(seed, tf.int64), 2 * tf.cast(epoch, tf.int64)])
    order = tf.argsort(tf.random.stateless_uniform([num_notes], epoch_seed))
    order = tf.tile(order, [(num_batches * batch_size + num_notes - 1) // num_notes])
    order = order[: num_batches * batch_size]
    window = tf.range(num_batches * batch_size, dtype=tf.int64) // (
        batch_size * SORT_WINDOW_BATCHES
    )
    key = window * (tf.reduce_max(note_lengths) + 1) + tf.gather(note_lengths, order)
    batches = tf.reshape(tf.gather(order, tf.argsort(key, stable=True)), [-1, batch_size])
    batch_order = tf.argsort(tf.random.stateless_uniform([num_batches], epoch_seed + [0, 1]))
    return tf.gather(batches, batch_order)


def training_dataset(
    cache_path: str,
    segmenter,
    max_note_tokens: int,
    num_labels: int,
    batch_size: int,
    seed: int,
    batches_per_step: int = 1,
    first_step: int = 0,
    max_notes: int | None = None,
    shard: tuple = (1, 0),
) -> tf.data.Dataset:
    """Training batches of `batch_size` notes, repeated forever, from step `first_step` on.

    A step's notes are one row of `epoch_batches(..., global batch, seed,
    epoch)` over every note, the global batch being this pipeline's
    `batch_size * batches_per_step` (replicas x gradient accumulation) times
    the number of pipelines; `shard=(num_shards, index)` (one input pipeline of
    a distributed run) takes the `index`-th share of each row, in
    `batches_per_step` batches. So the notes of a step depend on the global
    batch alone, not on how many workers, replicas or micro-batches split it.
    The sequence is a function of `seed` and the notes alone: an input position
    is the step, and a resumed run continues exactly. Notes are read by their
    offsets in the token cache; no state holds anything of them.
    `max_note_tokens` is the longest note prefix the model reads (the length
    notes are sorted by). Elements are as in `segment_dataset`.
    """
    note_index = token_cache.read_index(cache_path)[: token_cache.num_notes(cache_path, max_notes)]
    if not len(note_index):
        raise ValueError(f"{cache_path} has no training notes")
    lengths = tf.constant(np.minimum(note_index[:, 2], max_note_tokens))
    num_shards, shard_index = shard
    notes_per_step = batch_size * batches_per_step  # this pipeline's share of a step
    step_notes = slice(shard_index * notes_per_step, (shard_index + 1) * notes_per_step)
    steps_per_epoch = -(-len(note_index) // (notes_per_step * num_shards))
    first_epoch, skip = divmod(first_step, steps_per_epoch)
    read = token_cache.note_reader([cache_path], [note_index])

    dataset = (
        tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
        .flat_map(
            lambda epoch: tf.data.Dataset.from_tensor_slices(
                epoch_batches(lengths, notes_per_step * num_shards, seed, epoch)[:, step_notes]
            )
        )
        .skip(skip)
        .unbatch()
        .interleave(read, cycle_length=4, num_parallel_calls=4, deterministic=True)
        .map(_parser(segmenter, num_labels), num_parallel_calls=tf.data.AUTOTUNE)
        .padded_batch(batch_size, padding_values=PADDING_VALUES)
    )
    return dataset.map(_trim_width).prefetch(tf.data.AUTOTUNE)
