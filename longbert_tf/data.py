"""Dataset format, tokenization cache and the tf.data segment pipeline.

A prepared dataset is a folder holding `labels.txt` (one code a line, in
label-index order) and, per split, `{split}.jsonl.gz`: one JSON object a line
with `note_id` (str), `subject_id` (str), `text` (str) and `codes` (list of str,
each listed in `labels.txt`). An empty text is allowed (it becomes a single
`[CLS] [SEP]` segment), and so is an empty code list (a note with no codes is a
negative for every code). Optionally `descriptions.tsv`: each code's
description (see `longbert_tf.descriptions`). Every `data_prep` module writes
this format.
"""

import functools
import gzip
import hashlib
import json
import os

import numpy as np
import pandas as pd
from absl import logging

from longbert_tf import descriptions, files, tokenization
from longbert_tf.configs import SegmentConfig
from longbert_tf.framework import tf

SPLITS = ("train", "dev", "test")
NOTE_COLUMNS = ("note_id", "subject_id", "text", "codes")
LABELS_FILE = "labels.txt"
TOKEN_CACHE_DIR = "token_cache"
TOKENIZE_BATCH_SIZE = 64
TOKEN_CACHE_FORMAT = 2  # 2: with the note index file (record offsets and token counts)
# Training batches are formed from windows of this many batches of shuffled notes, each
# window sorted by note length: batches of alike lengths, little padding.
SORT_WINDOW_BATCHES = 32


def notes_path(dataset_dir: str, split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    return os.path.join(dataset_dir, f"{split}.jsonl.gz")


def _check_note(record, path: str, line_number: int) -> None:
    where = f"{path}, line {line_number}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for column in NOTE_COLUMNS:
        if column not in record:
            raise ValueError(f"{where}: field {column!r} is missing")
    for column in ("note_id", "subject_id", "text"):
        if not isinstance(record[column], str):
            raise ValueError(
                f"{where}: field {column!r} must be a string, got {record[column]!r:.80}"
            )
    codes = record["codes"]
    if not isinstance(codes, list) or not all(isinstance(code, str) for code in codes):
        raise ValueError(f"{where}: field 'codes' must be a list of strings, got {codes!r:.80}")


def read_notes(dataset_dir: str, split: str) -> pd.DataFrame:
    """Reads one split: columns `note_id`, `subject_id`, `text` (str) and `codes` (list of str)."""
    path = notes_path(dataset_dir, split)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: prepare the dataset with one of the data_prep modules"
        )
    records = []
    first_line = {}
    with gzip.open(path, "rt", encoding="utf-8") as notes_file:
        for line_number, line in enumerate(notes_file, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({error})") from None
            _check_note(record, path, line_number)
            note_id = record["note_id"]
            if note_id in first_line:
                raise ValueError(
                    f"{path}, line {line_number}: note_id {note_id!r} repeats line "
                    f"{first_line[note_id]}"
                )
            first_line[note_id] = line_number
            records.append([record[column] for column in NOTE_COLUMNS])
    return pd.DataFrame(records, columns=list(NOTE_COLUMNS))


def read_labels(dataset_dir: str) -> list:
    """Reads `labels.txt`: the codes in label-index order."""
    path = os.path.join(dataset_dir, LABELS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: prepare the dataset with one of the data_prep modules"
        )
    with open(path, encoding="utf-8") as labels_file:
        labels = labels_file.read().splitlines()
    first_line = {}
    for line_number, code in enumerate(labels, start=1):
        if not code.strip() or code != code.strip():
            raise ValueError(f"{path}, line {line_number}: blank or padded code {code!r}")
        if code in first_line:
            raise ValueError(
                f"{path}, line {line_number}: code {code!r} repeats line {first_line[code]}"
            )
        first_line[code] = line_number
    if not labels:
        raise ValueError(f"{path} lists no codes")
    return labels


def require_notes(dataset_dir: str, split: str, prepared_by: str) -> None:
    """Raises unless `split` holds a note (reads one line); `prepared_by` is the command to name."""
    path = notes_path(dataset_dir, split)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: prepare the dataset ({prepared_by})")
    with gzip.open(path, "rt", encoding="utf-8") as notes_file:
        if any(line.strip() for line in notes_file):
            return
    raise ValueError(
        f"{path} holds no notes: the {split} split is empty; prepare the dataset again "
        f"({prepared_by})"
    )


def labels_fingerprint(labels: list) -> str:
    """Identifies a label list and its order: equal fingerprints give equal label indices."""
    return hashlib.sha256("".join(f"{code}\n" for code in labels).encode()).hexdigest()[:16]


def label_ids(notes: pd.DataFrame, labels: list, source: str) -> list:
    """Maps each note's codes to sorted, unique label indices.

    Raises ValueError naming the note and code when a code is not in `labels`.
    """
    index = {code: position for position, code in enumerate(labels)}
    ids = []
    for row, (note_id, codes) in enumerate(zip(notes.note_id, notes.codes), start=1):
        unknown = [code for code in codes if code not in index]
        if unknown:
            raise ValueError(
                f"{source}, note {row} (note_id {note_id!r}): codes {unknown} are not in "
                f"{LABELS_FILE}; add them there or drop them when preparing the data"
            )
        ids.append(sorted({index[code] for code in codes}))
    return ids


def write_dataset(
    dataset_dir: str, splits: dict, labels: list, code_descriptions: dict | None = None
) -> str:
    """Writes `{split: notes DataFrame}`, `labels` and `{code: description}` (if given; only
    the labels' are kept) in the dataset format, atomically.

    The folder appears complete or not at all; an existing one is replaced,
    keeping its token caches (they are keyed by content, so stale ones are
    rebuilt when used).
    """
    label_ids(pd.concat(list(splits.values())), labels, source="notes to write")
    with files.atomic_dir(dataset_dir) as temporary:
        with open(os.path.join(temporary, LABELS_FILE), "w", encoding="utf-8") as labels_file:
            labels_file.writelines(f"{code}\n" for code in labels)
        if code_descriptions is not None:
            descriptions.write_descriptions(
                temporary, {code: code_descriptions.get(code, "") for code in labels}
            )
        for split, notes in splits.items():
            with gzip.open(notes_path(temporary, split), "wt", encoding="utf-8") as notes_file:
                records = notes[list(NOTE_COLUMNS)].to_dict("records")
                for row, record in enumerate(records, start=1):
                    _check_note(record, f"{split} notes to write", row)
                    notes_file.write(json.dumps(record, ensure_ascii=False) + "\n")
        if os.path.isdir(os.path.join(dataset_dir, TOKEN_CACHE_DIR)):
            os.rename(
                os.path.join(dataset_dir, TOKEN_CACHE_DIR), os.path.join(temporary, TOKEN_CACHE_DIR)
            )
    return dataset_dir


def token_cache(dataset_dir: str, split: str, vocab) -> str:
    """Returns the TFRecord file of one split tokenized with `vocab`, writing it if needed.

    `vocab` has a `fingerprint` and `tokenize(texts)` (see `longbert_tf.tokenization`).

    The cache lives in `dataset_dir/token_cache/<vocab fingerprint>/` and holds,
    per note, the token ids of the whole note (no special tokens) and its label
    ids, and beside it the note index (see `read_note_index`). It is rebuilt
    when the notes, the labels or the vocabulary change.
    """
    cache_dir = os.path.join(dataset_dir, TOKEN_CACHE_DIR, vocab.fingerprint)
    records_path = os.path.join(cache_dir, f"{split}.tfrecord")
    info_path = os.path.join(cache_dir, f"{split}.json")
    source = dict(
        notes_sha256=files.file_sha256(notes_path(dataset_dir, split)),
        labels_sha256=files.file_sha256(os.path.join(dataset_dir, LABELS_FILE)),
        vocab_fingerprint=vocab.fingerprint,
        format=TOKEN_CACHE_FORMAT,
    )
    if all(os.path.exists(path) for path in (info_path, records_path, _index_path(records_path))):
        with open(info_path) as info_file:
            if json.load(info_file)["source"] == source:
                return records_path

    notes = read_notes(dataset_dir, split)
    ids = label_ids(notes, read_labels(dataset_dir), source=notes_path(dataset_dir, split))
    lengths = write_token_records(notes.text.tolist(), ids, vocab, records_path)
    info = dict(
        source=source,
        num_notes=len(notes),
        empty_notes=int(sum(length == 0 for length in lengths)),
        notes_without_codes=int(sum(not note_ids for note_ids in ids)),
        token_percentiles={
            str(q): float(np.percentile(lengths, q)) if lengths else 0.0
            for q in (10, 25, 50, 75, 90, 99, 100)
        },
    )
    files.write_json(info_path, info)
    logging.info("Tokenized %s/%s: %s", dataset_dir, split, info)
    return records_path


def write_token_records(texts: list, ids: list, vocab, records_path: str) -> list:
    """Writes a token cache file and its note index (see `token_cache`); returns token counts.

    `ids` holds each text's label ids. Both files are written under temporary
    names and renamed.
    """
    os.makedirs(os.path.dirname(os.path.abspath(records_path)), exist_ok=True)
    lengths, note_index_rows, file_offset = [], [], 0
    temporary = f"{records_path}.tmp-{os.getpid()}"
    with tf.io.TFRecordWriter(temporary) as writer:
        for start in range(0, len(texts), TOKENIZE_BATCH_SIZE):
            batch = texts[start : start + TOKENIZE_BATCH_SIZE]
            for offset, token_ids in enumerate(vocab.tokenize(batch)):
                note_index = start + offset
                lengths.append(len(token_ids))
                features = dict(
                    note_index=_int64_feature([note_index]),
                    token_ids=_int64_feature(token_ids),
                    label_ids=_int64_feature(ids[note_index]),
                )
                example = tf.train.Example(features=tf.train.Features(feature=features))
                serialized = example.SerializeToString()
                writer.write(serialized)
                # A TFRecord is a length (8 bytes) and its CRC (4), the data, the data's CRC (4).
                note_index_rows.append((file_offset + 12, len(serialized), len(token_ids)))
                file_offset += 16 + len(serialized)
    index_temporary = f"{_index_path(records_path)}.tmp-{os.getpid()}.npy"
    np.save(index_temporary, np.array(note_index_rows, np.int64).reshape([-1, 3]))
    os.replace(index_temporary, _index_path(records_path))
    os.replace(temporary, records_path)
    return lengths


def _int64_feature(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _index_path(records_path: str) -> str:
    return records_path.replace(".tfrecord", ".index.npy")


def read_note_index(records_path: str) -> np.ndarray:
    """int64 `[num_notes, 3]`, per note in note order: the byte offset and byte length of its
    serialized example in the token cache, and its number of WordPiece tokens."""
    return np.load(_index_path(records_path))


def count_records(records_path: str, max_notes: int | None = None) -> int:
    """Notes in a token cache, or the first `max_notes` of them if fewer."""
    with open(records_path.replace(".tfrecord", ".json")) as info_file:
        return min(json.load(info_file)["num_notes"], max_notes or np.inf)


def token_lengths(records_path: str) -> np.ndarray:
    """WordPiece tokens per note of a token cache, in note order (no special tokens)."""
    return read_note_index(records_path)[:, 2]


def label_counts(records_path: str, num_labels: int, max_notes: int | None = None) -> np.ndarray:
    """Notes carrying each code, `[num_labels]`, among the first `max_notes` of a token cache."""
    spec = dict(label_ids=tf.io.VarLenFeature(tf.int64))
    dataset = (
        tf.data.TFRecordDataset(records_path)
        .take(max_notes or -1)
        .map(lambda serialized: tf.io.parse_single_example(serialized, spec)["label_ids"].values)
    )
    counts = dataset.reduce(
        tf.zeros([num_labels], tf.int64),
        lambda total, ids: (
            total
            + tf.math.bincount(ids, minlength=num_labels, maxlength=num_labels, dtype=tf.int64)
        ),
    )
    return counts.numpy()


def segment_layout(num_tokens, segments: SegmentConfig):
    """Where a note's tokens go in its segments.

    Args:
      num_tokens: int32 scalar, the note's WordPiece tokens (special tokens not counted).

    Returns:
      `(token_index, lengths)`: int32 `[num_segments, segment_length]` holding the
      note token at each position (-1 at `[CLS]`, `[SEP]` and padding), and the
      tokens of each segment `[num_segments]`. `num_segments = 1 + ceil(max(0,
      n - content_length) / stride)` for the `n = min(num_tokens,
      max_note_tokens)` tokens kept; segment k holds tokens `k * stride ...`.
    """
    num_tokens = tf.minimum(num_tokens, segments.max_note_tokens)
    remainder = tf.maximum(num_tokens - segments.content_length, 0)
    num_segments = 1 + (remainder + segments.stride - 1) // segments.stride
    starts = tf.range(num_segments) * segments.stride  # [num_segments]
    lengths = tf.minimum(num_tokens - starts, segments.content_length)
    positions = tf.range(segments.segment_length)[tf.newaxis, :]  # [1, segment_length]
    is_token = (positions >= 1) & (positions <= lengths[:, tf.newaxis])
    token_index = tf.where(is_token, starts[:, tf.newaxis] + positions - 1, -1)
    return token_index, lengths


def segment_tokens(token_ids, segments: SegmentConfig, cls_id: int, sep_id: int, pad_id: int):
    """Splits one note into BERT segments (see `segment_layout`).

    Args:
      token_ids: int `[num_tokens]`, the note's WordPiece ids without special tokens.

    Returns:
      `(word_ids, mask)`, both int32 `[num_segments, segment_length]`: segment k
      is `[CLS]`, its tokens, `[SEP]`, then `[PAD]`; `mask` is 1 on `[CLS]`,
      tokens and `[SEP]`.
    """
    token_ids = tf.cast(token_ids, tf.int32)
    token_index, lengths = segment_layout(tf.size(token_ids), segments)
    positions = tf.range(segments.segment_length)[tf.newaxis, :]
    word_ids = tf.gather(tf.concat([[pad_id], token_ids], 0), token_index + 1)
    word_ids = tf.where(positions == 0, cls_id, word_ids)
    word_ids = tf.where(positions == lengths[:, tf.newaxis] + 1, sep_id, word_ids)
    mask = tf.cast(positions <= lengths[:, tf.newaxis] + 1, tf.int32)
    return word_ids, mask


def bert_segmenter(segments: SegmentConfig, vocab: tokenization.Vocab):
    """`token_ids -> (word_ids, mask)` with `segment_tokens` and the vocabulary's special ids."""
    return functools.partial(
        segment_tokens,
        segments=segments,
        cls_id=vocab.cls_id,
        sep_id=vocab.sep_id,
        pad_id=vocab.pad_id,
    )


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
    records_path: str,
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
    dataset = tf.data.TFRecordDataset(records_path).take(max_notes or -1)
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


def record_reader(records_paths: list, note_indexes: list):
    """`row -> dataset of one serialized example`, reading one note by its byte offset.

    Rows number the notes of `note_indexes` (`read_note_index` arrays, or
    selections of their rows), one per token cache of `records_paths`, one
    after the other.
    """
    paths = tf.constant(
        [path for path, index in zip(records_paths, note_indexes) for _ in range(len(index))]
    )
    file_sizes = tf.constant(
        np.concatenate(
            [
                np.full(len(index), os.path.getsize(path))
                for path, index in zip(records_paths, note_indexes)
            ]
        ),
        tf.int64,
    )
    offsets, sizes = (
        tf.constant(np.concatenate([index[:, column] for index in note_indexes]), tf.int64)
        for column in (0, 1)
    )

    def read(row):
        return tf.data.FixedLengthRecordDataset(
            paths[row],
            record_bytes=sizes[row],
            header_bytes=offsets[row],
            footer_bytes=file_sizes[row] - offsets[row] - sizes[row],
            buffer_size=1 << 16,
        )

    return read


def training_dataset(
    records_path: str,
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

    A step takes `batches_per_step` batches (replicas x gradient accumulation),
    drawn from one row of `epoch_batches(..., batch_size * batches_per_step, seed,
    epoch)` over this shard's notes, so how a step's notes are split into
    batches does not change which notes it sees. The sequence is a function of
    `seed` and the notes alone: an input position is the step, and a resumed
    run continues exactly. Notes are read by their offsets in the token cache;
    no state holds anything of them. `shard=(num_shards, index)` keeps every
    `num_shards`-th note from the `index`-th on (one input pipeline of a
    distributed run); `max_note_tokens` is the longest note prefix the model
    reads (the length notes are sorted by). Elements are as in `segment_dataset`.
    """
    note_index = read_note_index(records_path)[: count_records(records_path, max_notes)]
    note_index = note_index[shard[1] :: shard[0]]
    if not len(note_index):
        raise ValueError(
            f"{records_path} has no training notes for input pipeline {shard[1]} of {shard[0]}"
        )
    lengths = tf.constant(np.minimum(note_index[:, 2], max_note_tokens))
    notes_per_step = batch_size * batches_per_step
    steps_per_epoch = -(-len(note_index) // notes_per_step)
    first_epoch, skip = divmod(first_step, steps_per_epoch)
    read = record_reader([records_path], [note_index])

    dataset = (
        tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
        .flat_map(
            lambda epoch: tf.data.Dataset.from_tensor_slices(
                epoch_batches(lengths, notes_per_step, seed, epoch)
            )
        )
        .skip(skip)
        .unbatch()
        .interleave(read, cycle_length=4, num_parallel_calls=4, deterministic=True)
        .map(_parser(segmenter, num_labels), num_parallel_calls=tf.data.AUTOTUNE)
        .padded_batch(batch_size, padding_values=PADDING_VALUES)
    )
    return dataset.map(_trim_width).prefetch(tf.data.AUTOTUNE)
