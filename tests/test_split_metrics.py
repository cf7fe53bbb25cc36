"""Streaming evaluation against scikit-learn on the whole arrays (`tests/reference_metrics.py`)."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from longbert_tf.evaluation import score_counts, split_metrics
from longbert_tf.framework import tf
from tests import reference_metrics as reference
from tests.streamed_scores import count, scores


def test_streaming_metrics_equal_the_exact_ones():
    labels, logits = scores()
    probabilities = tf.sigmoid(logits).numpy()
    counts = count(labels, logits)
    threshold, f1 = split_metrics.tune_threshold(counts)
    best_threshold, best_f1 = reference.best_grid_threshold(labels, probabilities)
    assert threshold == best_threshold and f1 == pytest.approx(best_f1, abs=1e-12)
    streamed = split_metrics.evaluate(counts, threshold, labels.shape[1])
    exact = reference.evaluate(labels, probabilities, threshold)
    assert streamed.keys() == exact.keys()
    for key in ("threshold", "micro_f1", "micro_precision", "micro_recall", "macro_f1"):
        assert streamed[key] == pytest.approx(exact[key], abs=1e-12), key
    for key in ("caml_macro_precision", "caml_macro_recall", "caml_macro_f1"):
        assert streamed[key] == pytest.approx(exact[key], abs=1e-12), key
    assert (labels.sum(0) == 0).any()  # codes without positives count in the CAML averages
    for key in ("precision_at_5", "precision_at_8", "precision_at_15"):
        assert streamed[key] == pytest.approx(exact[key], abs=1e-12), key
    assert streamed["map"] == pytest.approx(exact["map"], abs=1e-6)  # float32 sums per note
    assert streamed["num_notes"] == 600
    # Binned AUCs: within the stated tolerances of scikit-learn's exact ones.
    flat_labels, flat_scores = labels.ravel(), probabilities.ravel()
    assert streamed["micro_roc_auc"] == pytest.approx(
        sk_metrics.roc_auc_score(flat_labels, flat_scores), abs=1e-4
    )
    assert streamed["micro_pr_auc"] == pytest.approx(
        sk_metrics.average_precision_score(flat_labels, flat_scores), abs=1e-4
    )
    both = (labels.sum(0) > 0) & (labels.sum(0) < len(labels))
    assert streamed["macro_roc_auc"] == pytest.approx(
        sk_metrics.roc_auc_score(labels[:, both], probabilities[:, both], average="macro"),
        abs=1e-3,
    )
    # At a threshold other than the tuned one too.
    streamed, exact = (
        split_metrics.evaluate(counts, 0.7, labels.shape[1]),
        reference.evaluate(labels, probabilities, 0.7),
    )
    for key in ("micro_f1", "macro_f1"):
        assert streamed[key] == pytest.approx(exact[key], abs=1e-12), key
    assert streamed["caml_macro_f1"] == pytest.approx(exact["caml_macro_f1"], abs=1e-12)


def logits_of(probabilities):
    probabilities = np.clip(np.asarray(probabilities, np.float64), 1e-6, 1 - 1e-6)
    return np.log(probabilities / (1 - probabilities)).astype(np.float32)


def test_streamed_map_is_the_mean_per_note_average_precision_with_ties():
    labels, logits = scores(num_notes=300, num_labels=80, seed=2)
    logits = np.round(logits * 2) / 2  # many ties within a note
    labels[:30] = 0  # notes without a true code are left out of the mean
    counts = count(labels, logits)
    streamed = split_metrics.evaluate(counts, 0.5, labels.shape[1])["map"]
    with_codes = np.flatnonzero(labels.any(axis=1))
    assert len(with_codes) < len(labels) - 30  # some notes had no code before
    per_note = [sk_metrics.average_precision_score(labels[n], logits[n]) for n in with_codes]
    assert streamed == pytest.approx(np.mean(per_note), abs=1e-6)
    assert np.isnan(split_metrics.evaluate(count(labels[:30], logits[:30]), 0.5, 80)["map"])


def test_gold_codes_outside_the_label_space_count_as_missed():
    """Each note's codes outside the space are gold columns no score reaches: scikit-learn on
    the matrix with those columns scored below everything, and never retrieved for the
    rankings (average precision scaled by the share of gold codes in the space)."""
    labels, logits = scores(num_notes=200, num_labels=60, seed=5)
    outside = np.random.default_rng(5).integers(0, 3, len(labels))
    outside[labels.sum(1) == 0] = 1  # notes whose only gold codes are outside the space
    seen = np.zeros(np.count_nonzero(labels.sum(0)), bool)  # every tracked code was trained on
    streamed = split_metrics.evaluate(
        count(labels, logits, outside_codes=outside), 0.5, 60, unseen_rows=seen
    )
    # Every (note, code) pair of the space, then the outside pairs, scored below everything.
    gold = np.concatenate([labels.ravel(), np.ones(outside.sum())])
    scored = np.concatenate([logits.ravel(), np.full(outside.sum(), -1e9)])
    predicted = tf.sigmoid(scored).numpy() >= 0.5
    assert streamed["micro_recall"] == pytest.approx(sk_metrics.recall_score(gold, predicted))
    assert streamed["micro_precision"] == pytest.approx(sk_metrics.precision_score(gold, predicted))
    in_space = labels.sum() / gold.sum()
    assert streamed["micro_pr_auc"] == pytest.approx(
        sk_metrics.average_precision_score(labels.ravel(), logits.ravel()) * in_space, abs=1e-4
    )
    assert streamed["micro_roc_auc"] == pytest.approx(
        sk_metrics.roc_auc_score(gold, scored), abs=1e-4
    )
    per_note = [
        sk_metrics.average_precision_score(labels[n], logits[n])
        * labels[n].sum()
        / (labels[n].sum() + outside[n])
        if labels[n].any()
        else 0.0
        for n in range(len(labels))
    ]
    assert streamed["map"] == pytest.approx(np.mean(per_note), abs=1e-6)
    assert streamed["outside_code_pairs"] == outside.sum()
    assert streamed["unseen_code_pairs"] == outside.sum() and streamed["unseen_code_recall"] == 0


def test_streamed_macro_f1s_by_hand():
    """`test_metrics.test_caml_macro_f1_by_hand`'s notes: code 1 (no positive, predicted) and
    code 3 (nothing) are not tracked, yet count in the CAML means."""
    labels = np.float32([[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    logits = logits_of([[0.9, 0.1, 0.2, 0.0], [0.3, 0.1, 0.1, 0.0], [0.8, 0.6, 0.0, 0.0]])
    counts = count(labels, logits, batch_size=2)
    results = split_metrics.evaluate(counts, 0.5, num_labels=4)
    assert results["macro_f1"] == pytest.approx(0.25)
    for key in ("caml_macro_precision", "caml_macro_recall", "caml_macro_f1"):
        assert results[key] == pytest.approx(0.125), key
    # Four more codes in the label space, absent from the split: the CAML means halve.
    results = split_metrics.evaluate(counts, 0.5, num_labels=8)
    assert results["macro_f1"] == pytest.approx(0.25)
    assert results["caml_macro_f1"] == pytest.approx(0.0625)
    with pytest.raises(ValueError, match=r"num_labels=1 is smaller than the 2 codes counted"):
        split_metrics.evaluate(counts, 0.5, num_labels=1)


def test_streamed_macro_f1s_match_scikit_learn_with_empty_and_unpredicted_codes():
    labels, logits = scores(num_notes=200, num_labels=60, seed=3)
    labels[:, :4] = 0  # no positive: codes 0, 1 never predicted, 2, 3 predicted
    logits[:, :2] = -10.0
    logits[:7, 2:4] = 3.0
    labels[:9, 4], logits[:, 4] = 1, -10.0  # positives, never predicted
    probabilities = tf.sigmoid(logits).numpy()
    counts = count(labels, logits)
    for threshold in (0.3, 0.5, 0.9):
        predicted = (probabilities >= threshold).astype(int)
        assert not predicted[:, [0, 1, 4]].any() and predicted[:, [2, 3]].any(0).all()
        streamed = split_metrics.evaluate(counts, threshold, labels.shape[1])
        precision = sk_metrics.precision_score(labels, predicted, average="macro", zero_division=0)
        recall = sk_metrics.recall_score(labels, predicted, average="macro", zero_division=0)
        expected = dict(
            caml_macro_precision=precision,
            caml_macro_recall=recall,
            caml_macro_f1=2 * precision * recall / (precision + recall),
        )
        for key, value in expected.items():
            assert streamed[key] == pytest.approx(value, abs=1e-12), (key, threshold)
        positive = labels.any(0)
        assert streamed["macro_f1"] == pytest.approx(
            sk_metrics.f1_score(
                labels[:, positive], predicted[:, positive], average="macro", zero_division=0
            ),
            abs=1e-12,
        )


def test_pr_curve_counts_match_direct_counting():
    labels, logits = scores(num_notes=100, num_labels=30, seed=2)
    probabilities = tf.sigmoid(logits).numpy().astype(np.float64)
    curve = split_metrics.pr_curve(count(labels, logits))
    points = np.append(0.0, score_counts.COUNT_THRESHOLDS)
    predicted = probabilities.ravel()[np.newaxis, :] >= points[:, np.newaxis]
    positive = labels.ravel().astype(bool)
    np.testing.assert_array_equal(curve["true_positive_counts"], (predicted & positive).sum(1))
    np.testing.assert_array_equal(curve["false_positive_counts"], (predicted & ~positive).sum(1))
    np.testing.assert_array_equal(curve["false_negative_counts"], (~predicted & positive).sum(1))
    np.testing.assert_array_equal(curve["true_negative_counts"], (~predicted & ~positive).sum(1))


def test_only_grid_thresholds_can_be_evaluated():
    labels, logits = scores(num_notes=20, num_labels=10)
    with pytest.raises(ValueError, match="threshold=0.555 is not on the grid"):
        split_metrics.evaluate(count(labels, logits), 0.555, labels.shape[1])


def test_the_untrained_offset_undoes_a_planted_shift_and_is_best_by_scikit_learn():
    """Codes without a training note scored 5 logits too high (as an untrained description path
    scores them): the fitted offset brings them back, and no other offset on a coarse grid has
    a higher exact micro PR-AUC."""
    labels, logits = scores(num_notes=400, num_labels=200, seed=4)
    untrained = np.arange(200) % 4 == 0
    flooded = (logits + 5.0 * untrained).astype(np.float32)
    offset = split_metrics.fit_untrained_offset(count(labels, flooded, untrained=untrained))
    assert offset == pytest.approx(-5.0, abs=0.75)

    def exact_pr_auc(shift):
        return sk_metrics.average_precision_score(
            labels.ravel(), (flooded + shift * untrained).ravel()
        )

    fitted = exact_pr_auc(offset)
    assert fitted > exact_pr_auc(0.0) + 0.01
    for other in np.arange(-12.0, 4.5, 1.0):
        assert fitted >= exact_pr_auc(other) - 1e-4, other
    # Nothing to fit: every code trained, or no untrained code scored positive or not.
    assert split_metrics.fit_untrained_offset(count(labels, flooded)) == 0.0
    assert (
        split_metrics.fit_untrained_offset(count(0 * labels, flooded, untrained=untrained)) == 0.0
    )


def test_an_untrained_code_that_never_occurs_is_moved_below_the_others():
    labels, logits = scores(num_notes=100, num_labels=50, seed=5)
    untrained = np.arange(50) >= 45
    labels[:, untrained] = 0
    raised = (logits + 3.0 * untrained).astype(np.float32)
    offset = split_metrics.fit_untrained_offset(count(labels, raised, untrained=untrained))
    assert offset <= -3.0


def test_unseen_code_recall_is_nan_without_unseen_pairs():
    labels, logits = scores(num_notes=40, num_labels=20, seed=6)
    counts = count(labels, logits)
    tracked = np.flatnonzero(labels.sum(0))
    results = split_metrics.evaluate(counts, 0.5, 20, unseen_rows=np.zeros(len(tracked), bool))
    assert results["unseen_code_pairs"] == 0 and np.isnan(results["unseen_code_recall"])
    unseen = np.arange(len(tracked)) == 0  # one unseen code: a number again
    results = split_metrics.evaluate(counts, 0.5, 20, unseen_rows=unseen)
    assert results["unseen_code_pairs"] == labels[:, tracked[0]].sum()
    assert 0 <= results["unseen_code_recall"] <= 1
