"""Splitting a note's WordPiece tokens into BERT segments (see `configs.SegmentConfig`)."""

import functools

from longbert_tf.configs import SegmentConfig
from longbert_tf.data import tokenization
from longbert_tf.framework import tf


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
