"""Splitting a note into segments, against a plain-Python reference."""

import numpy as np
import pytest

from longbert_tf.configs import SegmentConfig
from longbert_tf.data import segmentation
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
    word_ids, mask = segmentation.segment_tokens(tf.constant(tokens), segments, CLS, SEP, PAD)
    expected = np.array(reference_segments(tokens.tolist(), segments))
    np.testing.assert_array_equal(word_ids.numpy(), expected)
    np.testing.assert_array_equal(mask.numpy(), (expected != PAD).astype(np.int32))


def test_segment_counts_without_and_with_overlap():
    def count(num_tokens, stride=None):
        segments = SegmentConfig(seq_len=8192, segment_length=512, segment_stride=stride)
        word_ids, _ = segmentation.segment_tokens(tf.range(num_tokens), segments, CLS, SEP, PAD)
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
