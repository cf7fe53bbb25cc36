"""The token cache: what it holds, when it is reused and when rebuilt."""

import json
import os
import shutil

import numpy as np

from longbert_tf import files
from longbert_tf.data import dataset, token_cache, tokenization
from longbert_tf.framework import tf


def cached_token_ids(records: str) -> list:
    """Each note's token ids in a token cache, in file order."""
    return [
        list(
            tf.train.Example.FromString(record.numpy())
            .features.feature["token_ids"]
            .int64_list.value
        )
        for record in tf.data.TFRecordDataset(records)
    ]


def test_token_cache_is_reused_and_rebuilt_when_inputs_change(edge_dataset, tmp_path):
    dataset_dir, vocab = edge_dataset
    records = token_cache.build(dataset_dir, "train", vocab)
    written = os.path.getmtime(records)
    assert token_cache.build(dataset_dir, "train", vocab) == records
    assert os.path.getmtime(records) == written
    # Another vocabulary (here: cased) gets its own cache, never the first one.
    cased = tokenization.Vocab(vocab.path, lower_case=False)
    assert token_cache.build(dataset_dir, "train", cased) != records
    # Changed notes get a new cache beside the old one, which a running job may still be
    # reading by byte offset: it is left exactly as it was.
    notes = dataset.read_notes(dataset_dir, "train")
    before = cached_token_ids(records)
    old_bytes, old_index = open(records, "rb").read(), token_cache.read_index(records)
    notes.loc[1, "text"] = "completely different words"
    dataset.write_dataset(
        dataset_dir, {"train": notes, "dev": notes, "test": notes}, ["A", "B", "C"]
    )
    rebuilt = token_cache.build(dataset_dir, "train", vocab)
    assert rebuilt != records and os.path.dirname(rebuilt) == os.path.dirname(records)
    assert open(records, "rb").read() == old_bytes and cached_token_ids(records) == before
    np.testing.assert_array_equal(token_cache.read_index(records), old_index)
    after = cached_token_ids(rebuilt)
    assert after[1] == vocab.tokenize(["completely different words"])[0] != before[1]
    assert after[:1] + after[2:] == before[:1] + before[2:]
    info = json.loads(open(rebuilt.replace(".tfrecord", ".json")).read())
    new_notes = files.file_sha256(dataset.notes_path(dataset_dir, "train"))
    assert info["source"]["notes_sha256"] == new_notes
    assert info["num_notes"] == 4 and info["empty_notes"] == 1 and info["notes_without_codes"] == 1


def test_a_cache_made_with_another_vocabulary_is_never_reused(edge_dataset):
    dataset_dir, vocab = edge_dataset
    records = token_cache.build(dataset_dir, "train", vocab)
    cased = tokenization.Vocab(vocab.path, lower_case=False)
    # A stale copy of the uncased cache sitting where the cased one belongs.
    shutil.copytree(
        os.path.dirname(records),
        os.path.join(dataset_dir, dataset.TOKEN_CACHE_DIR, cased.fingerprint),
    )
    rebuilt = token_cache.build(dataset_dir, "train", cased)
    with open(rebuilt.replace(".tfrecord", ".json")) as info_file:
        assert json.load(info_file)["source"]["vocab_fingerprint"] == cased.fingerprint


def test_vocabulary_ids_are_line_numbers_whatever_the_tokens_hold(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "odd\u2028piece", "fever"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    assert tokenization.Vocab(str(path), lower_case=True).tokens == tokens  # "fever" is id 6
