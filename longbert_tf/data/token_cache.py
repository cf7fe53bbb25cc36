"""The token cache: every note of a split tokenized once, in a TFRecord file with a note index.

Per note an example holds `note_index`, `token_ids` (the whole note's WordPiece
ids, no special tokens) and `label_ids`; beside the file, the note index
(`read_index`) gives each note's byte offset, byte length and token count, so
a note can be read alone (`note_reader`), and `{split}.json` records what the
cache was built from and a summary of it.
"""

import hashlib
import json
import os

import numpy as np
from absl import logging

from longbert_tf import files
from longbert_tf.data import dataset
from longbert_tf.framework import tf

TOKENIZE_BATCH_SIZE = 64
FORMAT = 2  # 2: with the note index file (record offsets and token counts)


def build(dataset_dir: str, split: str, vocab) -> str:
    """Returns the TFRecord file of one split tokenized with `vocab`, writing it if needed.

    `vocab` has a `fingerprint` and `tokenize(texts)` (see `longbert_tf.data.tokenization`).

    The cache lives in `dataset_dir/token_cache/<vocab fingerprint>/` and holds,
    per note, the token ids of the whole note (no special tokens) and its label
    ids, and beside it the note index (see `read_index`). Its files are named
    by what they were built from (`<split>-<key>`): when the notes, the labels or
    the vocabulary change, a new cache is written beside the old one, which is
    never rewritten, so a job reading the old one by byte offset keeps reading
    what it indexed.
    """
    source = dict(
        notes_sha256=files.file_sha256(dataset.notes_path(dataset_dir, split)),
        labels_sha256=files.file_sha256(os.path.join(dataset_dir, dataset.LABELS_FILE)),
        vocab_fingerprint=vocab.fingerprint,
        format=FORMAT,
    )
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = os.path.join(dataset_dir, dataset.TOKEN_CACHE_DIR, vocab.fingerprint)
    path = os.path.join(cache_dir, f"{split}-{key}.tfrecord")
    info_path = path.replace(".tfrecord", ".json")
    if all(map(os.path.exists, (info_path, path, _index_path(path)))):
        return path

    notes = dataset.read_notes(dataset_dir, split)
    labels = dataset.read_labels(dataset_dir)
    ids = dataset.label_ids(notes, labels)
    lengths = write(notes.text.tolist(), ids, vocab, path)
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
    return path


def write(texts: list, ids: list, vocab, path: str) -> list:
    """Writes a token cache file and its note index (see `build`); returns token counts.

    `ids` holds each text's label ids. Both files appear complete or not at all.
    """
    lengths, index_rows, file_offset = [], [], 0
    with files.atomic_file(path) as temporary, tf.io.TFRecordWriter(temporary) as writer:
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
                index_rows.append((file_offset + 12, len(serialized), len(token_ids)))
                file_offset += 16 + len(serialized)
        with files.atomic_file(_index_path(path)) as index_temporary:
            with open(index_temporary, "wb") as index_file:
                np.save(index_file, np.array(index_rows, np.int64).reshape([-1, 3]))
    return lengths


def _int64_feature(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _index_path(path: str) -> str:
    return path.replace(".tfrecord", ".index.npy")


def read_index(path: str) -> np.ndarray:
    """int64 `[num_notes, 3]`, per note in note order: the byte offset and byte length of its
    serialized example in the token cache, and its number of WordPiece tokens."""
    return np.load(_index_path(path))


def num_notes(path: str, max_notes: int | None = None) -> int:
    """Notes in a token cache, or the first `max_notes` of them if fewer."""
    with open(path.replace(".tfrecord", ".json")) as info_file:
        return min(json.load(info_file)["num_notes"], max_notes or np.inf)


def token_lengths(path: str) -> np.ndarray:
    """WordPiece tokens per note of a token cache, in note order (no special tokens)."""
    return read_index(path)[:, 2]


def label_counts(path: str, num_labels: int, max_notes: int | None = None) -> np.ndarray:
    """Notes carrying each code, `[num_labels]`, among the first `max_notes` of a token cache."""
    spec = dict(label_ids=tf.io.VarLenFeature(tf.int64))
    label_ids = (
        tf.data.TFRecordDataset(path)
        .take(max_notes or -1)
        .map(lambda serialized: tf.io.parse_single_example(serialized, spec)["label_ids"].values)
    )
    counts = label_ids.reduce(
        tf.zeros([num_labels], tf.int64),
        lambda total, ids: (
            total
            + tf.math.bincount(ids, minlength=num_labels, maxlength=num_labels, dtype=tf.int64)
        ),
    )
    return counts.numpy()


def note_reader(paths: list, note_indexes: list):
    """`row -> dataset of one serialized example`, reading one note by its byte offset.

    Rows number the notes of `note_indexes` (`read_index` arrays, or
    selections of their rows), one per token cache of `paths`, one
    after the other.
    """
    row_paths = tf.constant(
        [path for path, index in zip(paths, note_indexes) for _ in range(len(index))]
    )
    file_sizes = tf.constant(
        np.concatenate(
            [np.full(len(index), os.path.getsize(path)) for path, index in zip(paths, note_indexes)]
        ),
        tf.int64,
    )
    offsets, sizes = (
        tf.constant(np.concatenate([index[:, column] for index in note_indexes]), tf.int64)
        for column in (0, 1)
    )

    def read(row):
        return tf.data.FixedLengthRecordDataset(
            row_paths[row],
            record_bytes=sizes[row],
            header_bytes=offsets[row],
            footer_bytes=file_sizes[row] - offsets[row] - sizes[row],
            buffer_size=1 << 16,
        )

    return read
