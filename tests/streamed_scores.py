"""Scores shaped like a trained coder's, and their streaming counts (shared by tests)."""

import numpy as np

from longbert_tf.evaluation import score_counts
from longbert_tf.framework import tf


def scores(num_notes=600, num_labels=300, seed=0):
    """Labels and logits shaped like a trained coder's: rare codes, positives scored higher."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((num_notes, num_labels)) < rng.random(num_labels) * 0.1).astype(np.float32)
    logits = rng.normal(-4, 2, labels.shape) + labels * rng.normal(2.5, 1, labels.shape)
    return labels, logits.astype(np.float32)


def count(labels, logits, batch_size=7, tracked=None, outside_codes=None, untrained=None):
    """Streaming counts of `[notes, codes]` arrays, batch by batch (tracked: positive codes;
    outside_codes: each note's gold codes outside the label space; untrained: bool per code,
    True for the codes without a training note)."""
    tracked = np.flatnonzero(labels.sum(0)) if tracked is None else tracked
    split_counts = score_counts.SplitCounts(
        labels.shape[1], len(labels), tracked, outside_codes, untrained
    )
    for start in range(0, len(labels), batch_size):
        batch_labels, batch_logits = (
            labels[start : start + batch_size],
            logits[start : start + batch_size],
        )
        bins = score_counts.score_bins(
            tf.constant(batch_logits),
            tf.constant(batch_labels),
            split_counts.code_slots,
            split_counts.untrained,
        )
        top_codes = tf.math.top_k(batch_logits, min(15, labels.shape[1])).indices.numpy()
        note_index = np.arange(start, start + len(batch_labels))
        split_counts.add(
            {name: value.numpy() for name, value in bins.items()},
            batch_labels,
            top_codes,
            note_index,
        )
    return split_counts.counts()
