"""Streaming counts: exact threshold counts, counts that add up over parts, coverage checks."""

import numpy as np
import pytest

from longbert_tf.evaluation import score_counts
from tests.streamed_scores import count, scores


def test_thresholds_reached_are_exact_at_the_float32_neighbours_of_every_threshold():
    thresholds = score_counts.COUNT_THRESHOLDS
    nearest = thresholds.astype(np.float32)
    probabilities = np.concatenate(
        [
            nearest,
            np.nextafter(nearest, np.float32(0)),
            np.nextafter(nearest, np.float32(1)),
            np.float32([0.0, 1e-30, 0.5, 1.0]),
        ]
    ).astype(np.float32)
    expected = np.searchsorted(thresholds, probabilities.astype(np.float64), side="right")
    np.testing.assert_array_equal(score_counts.thresholds_reached(probabilities), expected)


def test_counts_of_parts_add_up_to_the_counts_of_the_whole():
    labels, logits = scores(num_notes=90, num_labels=40, seed=1)
    tracked = np.flatnonzero(labels.sum(0))  # one set of per-code rows, as workers share
    whole = count(labels, logits, tracked=tracked)
    first = count(labels[:50], logits[:50], tracked=tracked)
    second = count(labels[50:], logits[50:], tracked=tracked)
    for name, value in whole.items():
        if name == "note_counts":
            continue  # each part numbers its notes from 0
        np.testing.assert_allclose(first[name] + second[name], value, err_msg=name)


def test_a_true_code_that_is_not_tracked_is_refused():
    labels, logits = scores(num_notes=20, num_labels=10)
    tracked = np.flatnonzero(labels.sum(0))[1:]
    with pytest.raises(ValueError, match=r"codes \[\d+\] are true in this split but not tracked"):
        count(labels, logits, tracked=tracked)


def test_a_note_counted_twice_or_never_is_refused():
    labels, logits = scores(num_notes=20, num_labels=10)
    counts = count(labels, logits)
    score_counts.check_coverage(counts, "dev")
    counts["note_counts"][3] = 2
    counts["note_counts"][5] = 0
    with pytest.raises(RuntimeError, match=r"dev: notes \[3, 5\] were counted \[2, 0\] times"):
        score_counts.check_coverage(counts, "dev")


def test_untrained_codes_have_their_own_logit_histograms():
    """They are the histograms of every score of a split holding the untrained codes alone."""
    labels, logits = scores(num_notes=50, num_labels=30, seed=2)
    untrained = np.arange(30) % 3 == 0
    counts = count(labels, logits, untrained=untrained)
    alone = count(labels[:, untrained], logits[:, untrained])
    np.testing.assert_array_equal(counts["untrained_all"], alone["micro_all"])
    np.testing.assert_array_equal(counts["untrained_positive"], alone["micro_positive"])
    assert counts["untrained_all"].sum() == 50 * 10 and counts["untrained_positive"].sum() > 0
    assert not count(labels, logits)["untrained_all"].any()  # by default every code trained
