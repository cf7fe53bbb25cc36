"""The tf.data pipelines: every note once, and training batches by seed and step."""

import numpy as np

from longbert_tf.configs import SegmentConfig
from longbert_tf.data import pipeline, segmentation, token_cache, tokenization


def test_pipeline_handles_empty_notes_and_notes_without_codes(edge_dataset):
    dataset_dir, vocab = edge_dataset
    records = token_cache.build(dataset_dir, "dev", vocab)
    segments = SegmentConfig(seq_len=256, segment_length=128)
    batches = list(
        pipeline.segment_dataset(
            records,
            segmentation.bert_segmenter(segments, vocab),
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
    records = token_cache.build(tiny_dataset_dir, "train", vocab)
    segments = SegmentConfig(seq_len=512, segment_length=128)
    num_notes = 0
    widths = set()
    for features, labels in pipeline.segment_dataset(
        records, segmentation.bert_segmenter(segments, vocab), segments.max_segments, 12, 3
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
    dataset = pipeline.training_dataset(
        records,
        segmentation.bert_segmenter(segments, vocab),
        segments.max_note_tokens,
        12,
        4,
        **kwargs,
    )
    return [f["note_index"].numpy().tolist() for f, _ in dataset.take(batches)]


def test_training_order_is_a_function_of_seed_and_position(tiny_dataset_dir, tiny_encoder_dir):
    vocab = tokenization.Vocab(f"{tiny_encoder_dir}/assets/vocab.txt", lower_case=True)
    records = token_cache.build(tiny_dataset_dir, "train", vocab)
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
    records = token_cache.build(tiny_dataset_dir, "train", vocab)
    lengths = token_cache.read_index(records)[:, 2]
    batches = np.array(pipeline.epoch_batches(lengths, batch_size=4, seed=0, epoch=3))
    assert batches.shape == (6, 4) and sorted(batches.ravel()) == list(range(24))
    sorted_spread = np.mean([np.ptp(lengths[batch]) for batch in batches])
    random_spread = np.mean([np.ptp(lengths[batch]) for batch in np.arange(24).reshape(6, 4)])
    assert sorted_spread < 0.5 * random_spread
    # A last batch short of notes is filled with notes from the epoch's start.
    ragged = np.array(pipeline.epoch_batches(lengths[:10], batch_size=4, seed=0, epoch=0))
    assert ragged.shape == (3, 4) and set(ragged.ravel()) == set(range(10))


def test_input_pipelines_split_each_step_of_the_global_batch(tiny_dataset_dir, tiny_encoder_dir):
    """Two pipelines (workers) of 4 notes a step see, step by step and across epochs, the notes
    one pipeline of 2 x 4 sees: a step's notes follow the global batch, not the workers."""
    vocab = tokenization.Vocab(f"{tiny_encoder_dir}/assets/vocab.txt", lower_case=True)
    records = token_cache.build(tiny_dataset_dir, "train", vocab)
    segments = SegmentConfig(seq_len=256, segment_length=128)
    steps = 7  # 24 notes, 8 a step: three steps an epoch
    one = _training_notes(records, segments, vocab, 2 * steps, seed=0, batches_per_step=2)
    shards = [
        _training_notes(records, segments, vocab, steps, seed=0, shard=(2, index))
        for index in range(2)
    ]
    for step in range(steps):
        together = shards[0][step] + shards[1][step]
        assert sorted(together) == sorted(one[2 * step] + one[2 * step + 1]), step
        assert len(set(together)) == 8
    for later in (1, 4):  # resumed later, each pipeline continues where it was
        resumed = _training_notes(
            records, segments, vocab, steps - later, seed=0, shard=(2, 1), first_step=later
        )
        assert resumed == shards[1][later:]
