"""Dataset format, token cache and the segment pipeline."""

import gzip
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from longbert_tf import data, files, tokenization
from longbert_tf.configs import SegmentConfig
from longbert_tf.framework import tf

CLS, SEP, PAD = 101, 102, 0


def reference_segments(tokens, segments: SegmentConfig):
    """Plain-Python segmentation: windows of content_length tokens every stride tokens."""
    content = segments.content_length
    kept = list(tokens[: segments.max_note_tokens])
    rows, start = [], 0
    while True:
        piece = kept[start : start + content]
        rows.append([CLS] + piece + [SEP] + [PAD] * (content - len(piece)))
        if start + content >= len(kept):
            return rows
        start += segments.stride


@pytest.mark.parametrize("num_tokens", [0, 1, 511, 512, 513, 8192, 10000])
@pytest.mark.parametrize("stride", [None, 256])
def test_segment_tokens_matches_reference(num_tokens, stride):
    segments = SegmentConfig(seq_len=8192, segment_length=512, segment_stride=stride)
    tokens = np.arange(1000, 1000 + num_tokens)
    word_ids, mask = data.segment_tokens(tf.constant(tokens), segments, CLS, SEP, PAD)
    expected = np.array(reference_segments(tokens.tolist(), segments))
    np.testing.assert_array_equal(word_ids.numpy(), expected)
    np.testing.assert_array_equal(mask.numpy(), (expected != PAD).astype(np.int32))


def test_segment_counts_without_and_with_overlap():
    def count(num_tokens, stride=None):
        segments = SegmentConfig(seq_len=8192, segment_length=512, segment_stride=stride)
        word_ids, _ = data.segment_tokens(tf.range(num_tokens), segments, CLS, SEP, PAD)
        return word_ids.shape[0]

    # 510 note tokens fit a segment beside [CLS] and [SEP].
    assert [count(n) for n in (1, 510, 511, 512, 513, 8160, 8192, 10000)] == [
        1,
        1,
        2,
        2,
        2,
        16,
        16,
        16,
    ]
    # Stride 256: segment k starts at token 256 k; 16 segments reach token 15 * 256 + 510.
    assert [count(n, 256) for n in (1, 510, 511, 767, 4350, 10000)] == [1, 1, 2, 3, 16, 16]


def test_segment_config_rejects_bad_geometry():
    with pytest.raises(
        ValueError, match="seq_len=1000 is not a positive multiple of segment_length=512"
    ):
        SegmentConfig(seq_len=1000)
    with pytest.raises(ValueError, match="seq_len=256"):
        SegmentConfig(seq_len=256)
    with pytest.raises(ValueError, match="segment_stride=511 must be between 1 and"):
        SegmentConfig(seq_len=1024, segment_stride=511)


def _write_jsonl(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as notes_file:
        notes_file.writelines(line + "\n" for line in lines)


def _note(**overrides):
    record = dict(note_id="1", subject_id="9", text="chest pain", codes=["401.9"])
    record.update(overrides)
    return json.dumps(record)


def test_write_then_read_round_trips(tmp_path):
    notes = pd.DataFrame(
        dict(
            note_id=["0012", "7"],
            subject_id=["3", "3"],
            text=["Pt with CHF.", ""],
            codes=[["428.0", "401.9"], []],
        )
    )
    dataset_dir = data.write_dataset(str(tmp_path / "ds"), {"train": notes}, ["401.9", "428.0"])
    read = data.read_notes(dataset_dir, "train")
    pd.testing.assert_frame_equal(read, notes)
    assert data.read_labels(dataset_dir) == ["401.9", "428.0"]
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary folder left behind


def test_write_dataset_refuses_unknown_codes_and_keeps_the_old_folder(tmp_path):
    good = pd.DataFrame(dict(note_id=["1"], subject_id=["1"], text=["x"], codes=[["A"]]))
    dataset_dir = data.write_dataset(str(tmp_path / "ds"), {"train": good}, ["A"])
    bad = good.assign(codes=[["B"]])
    with pytest.raises(ValueError, match=r"note_id '1'.*\['B'\] are not in labels.txt"):
        data.write_dataset(dataset_dir, {"train": bad}, ["A"])
    assert data.read_notes(dataset_dir, "train").codes.tolist() == [["A"]]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"train.jsonl.gz, line 2: not valid JSON"),
        (_note(note_id=1), r"line 2: field 'note_id' must be a string"),
        (
            json.dumps(dict(note_id="2", subject_id="9", codes=[])),
            r"line 2: field 'text' is missing",
        ),
        (_note(note_id="2", codes="401.9"), r"line 2: field 'codes' must be a list of strings"),
        (_note(), r"line 2: note_id '1' repeats line 1"),
    ],
)
def test_read_notes_names_file_and_line_of_bad_rows(tmp_path, line, message):
    _write_jsonl(str(tmp_path / "train.jsonl.gz"), [_note(), line])
    with pytest.raises(ValueError, match=message):
        data.read_notes(str(tmp_path), "train")


def test_missing_files_say_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="dev.jsonl.gz does not exist: prepare"):
        data.read_notes(str(tmp_path), "dev")
    with pytest.raises(FileNotFoundError, match="labels.txt does not exist"):
        data.read_labels(str(tmp_path))


def test_read_labels_rejects_duplicates_and_blanks(tmp_path):
    (tmp_path / "labels.txt").write_text("401.9\n428.0\n401.9\n")
    with pytest.raises(ValueError, match="line 3: code '401.9' repeats line 1"):
        data.read_labels(str(tmp_path))
    (tmp_path / "labels.txt").write_text("401.9\n\n")
    with pytest.raises(ValueError, match="line 2: blank"):
        data.read_labels(str(tmp_path))


def test_label_ids_names_the_note_with_an_unknown_code():
    notes = pd.DataFrame(dict(note_id=["a", "b"], codes=[["X"], ["X", "Y", "X"]]))
    assert data.label_ids(notes.iloc[:1], ["Y", "X"], "src") == [[1]]
    with pytest.raises(ValueError, match=r"src, note 2 \(note_id 'b'\): codes \['Y'\]"):
        data.label_ids(notes, ["X"], "src")


@pytest.fixture
def edge_dataset(tmp_path, tiny_encoder_dir):
    """Notes with no text, no codes, one token and many tokens, tokenized with the tiny vocab."""
    notes = pd.DataFrame(
        dict(
            note_id=["empty", "no_codes", "short", "long"],
            subject_id=["1", "2", "3", "4"],
            text=["", "patient stable", "pain", " ".join(["patient"] * 300)],
            codes=[["B"], [], ["A", "C"], ["C"]],
        )
    )
    dataset_dir = data.write_dataset(
        str(tmp_path / "edge"), {"train": notes, "dev": notes, "test": notes}, ["A", "B", "C"]
    )
    vocab = tokenization.Vocab(f"{tiny_encoder_dir}/assets/vocab.txt", lower_case=True)
    return dataset_dir, vocab


def test_pipeline_handles_empty_notes_and_notes_without_codes(edge_dataset):
    dataset_dir, vocab = edge_dataset
    records = data.token_cache(dataset_dir, "dev", vocab)
    segments = SegmentConfig(seq_len=256, segment_length=128)
    batches = list(
        data.segment_dataset(
            records,
            data.bert_segmenter(segments, vocab),
            segments.max_segments,
            3,
            batch_size=4,
        )
    )
    by_note = {}
    for features, labels in batches:
        for row, note_index in enumerate(features["note_index"].numpy()):
            by_note[int(note_index)] = (
                features["input_word_ids"][row].numpy(),
                features["input_mask"][row].numpy(),
                labels[row].numpy(),
            )
    assert sorted(by_note) == [0, 1, 2, 3]
    empty_ids, empty_mask, empty_labels = by_note[0]
    assert empty_ids[0, :2].tolist() == [vocab.cls_id, vocab.sep_id]
    assert empty_mask.sum() == 2
    np.testing.assert_array_equal(empty_labels, [0, 1, 0])
    np.testing.assert_array_equal(by_note[1][2], [0, 0, 0])
    np.testing.assert_array_equal(by_note[2][2], [1, 0, 1])
    long_ids, long_mask, _ = by_note[3]
    assert long_mask.shape == (2, 128) and long_mask.sum() == 256  # cut at seq_len
    assert (long_ids[:, 0] == vocab.cls_id).all() and (long_ids[:, -1] == vocab.sep_id).all()


def test_batches_hold_one_segment_count_and_are_padded_to_their_longest_note(
    tiny_dataset_dir, tiny_encoder_dir
):
    vocab = tokenization.Vocab(f"{tiny_encoder_dir}/assets/vocab.txt", lower_case=True)
    records = data.token_cache(tiny_dataset_dir, "train", vocab)
    segments = SegmentConfig(seq_len=512, segment_length=128)
    num_notes = 0
    widths = set()
    for features, labels in data.segment_dataset(
        records, data.bert_segmenter(segments, vocab), segments.max_segments, 12, 3
    ):
        mask = features["input_mask"].numpy()
        num_notes += len(mask)
        # Every note of the batch fills its last segment slot: same count, no padding segment.
        assert (mask[:, -1, 0] == 1).all()
        assert mask.sum(axis=-1).max() == mask.shape[-1]  # width is the longest segment
        widths.add(mask.shape[-1])
        assert labels.shape == (len(mask), 12)
    assert num_notes == 24
    assert 128 in widths and min(widths) < 128  # single-segment batches are trimmed


def _training_notes(records, segments, vocab, batches, **kwargs):
    dataset = data.training_dataset(
        records, data.bert_segmenter(segments, vocab), segments.max_note_tokens, 12, 4, **kwargs
    )
    return [f["note_index"].numpy().tolist() for f, _ in dataset.take(batches)]


def test_training_order_is_a_function_of_seed_and_position(tiny_dataset_dir, tiny_encoder_dir):
    vocab = tokenization.Vocab(f"{tiny_encoder_dir}/assets/vocab.txt", lower_case=True)
    records = data.token_cache(tiny_dataset_dir, "train", vocab)
    segments = SegmentConfig(seq_len=256, segment_length=128)
    first = _training_notes(records, segments, vocab, 15, seed=1)
    assert first == _training_notes(records, segments, vocab, 15, seed=1)
    assert first != _training_notes(records, segments, vocab, 15, seed=2)
    # 24 notes in batches of 4: every epoch (6 batches) holds every note once, in a new order.
    epochs = [sorted(sum(first[start : start + 6], [])) for start in (0, 6)]
    assert epochs == [list(range(24))] * 2
    assert first[:6] != first[6:12]
    # Starting at a position gives what the sequence holds there, across epoch boundaries.
    for position in (1, 5, 6, 11):
        later = _training_notes(
            records, segments, vocab, 15 - position, seed=1, first_step=position
        )
        assert later == first[position:]


def test_training_batches_group_notes_of_alike_length(tiny_dataset_dir, tiny_encoder_dir):
    vocab = tokenization.Vocab(f"{tiny_encoder_dir}/assets/vocab.txt", lower_case=True)
    records = data.token_cache(tiny_dataset_dir, "train", vocab)
    lengths = data.read_note_index(records)[:, 2]
    batches = np.array(data.epoch_batches(lengths, batch_size=4, seed=0, epoch=3))
    assert batches.shape == (6, 4) and sorted(batches.ravel()) == list(range(24))
    sorted_spread = np.mean([np.ptp(lengths[batch]) for batch in batches])
    random_spread = np.mean([np.ptp(lengths[batch]) for batch in np.arange(24).reshape(6, 4)])
    assert sorted_spread < 0.5 * random_spread
    # A last batch short of notes is filled with notes from the epoch's start; shards are disjoint.
    ragged = np.array(data.epoch_batches(lengths[:10], batch_size=4, seed=0, epoch=0))
    assert ragged.shape == (3, 4) and set(ragged.ravel()) == set(range(10))
    segments = SegmentConfig(seq_len=256, segment_length=128)
    shards = [
        set(sum(_training_notes(records, segments, vocab, 3, seed=0, shard=(2, i)), []))
        for i in range(2)
    ]
    assert shards[0] | shards[1] == set(range(24)) and not shards[0] & shards[1]


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
    records = data.token_cache(dataset_dir, "train", vocab)
    written = os.path.getmtime(records)
    assert data.token_cache(dataset_dir, "train", vocab) == records
    assert os.path.getmtime(records) == written
    # Another vocabulary (here: cased) gets its own cache, never the first one.
    cased = tokenization.Vocab(vocab.path, lower_case=False)
    assert data.token_cache(dataset_dir, "train", cased) != records
    # Changed notes rebuild the cache in place: it holds the new note's tokens.
    notes = data.read_notes(dataset_dir, "train")
    before = cached_token_ids(records)
    notes.loc[1, "text"] = "completely different words"
    data.write_dataset(dataset_dir, {"train": notes, "dev": notes, "test": notes}, ["A", "B", "C"])
    assert data.token_cache(dataset_dir, "train", vocab) == records
    after = cached_token_ids(records)
    assert after[1] == vocab.tokenize(["completely different words"])[0] != before[1]
    assert after[:1] + after[2:] == before[:1] + before[2:]
    info = json.loads(open(records.replace(".tfrecord", ".json")).read())
    new_notes = files.file_sha256(data.notes_path(dataset_dir, "train"))
    assert info["source"]["notes_sha256"] == new_notes
    assert info["num_notes"] == 4 and info["empty_notes"] == 1 and info["notes_without_codes"] == 1


def test_a_cache_made_with_another_vocabulary_is_never_reused(edge_dataset):
    dataset_dir, vocab = edge_dataset
    records = data.token_cache(dataset_dir, "train", vocab)
    cased = tokenization.Vocab(vocab.path, lower_case=False)
    # A stale copy of the uncased cache sitting where the cased one belongs.
    shutil.copytree(
        os.path.dirname(records), os.path.join(dataset_dir, data.TOKEN_CACHE_DIR, cased.fingerprint)
    )
    rebuilt = data.token_cache(dataset_dir, "train", cased)
    with open(rebuilt.replace(".tfrecord", ".json")) as info_file:
        assert json.load(info_file)["source"]["vocab_fingerprint"] == cased.fingerprint
