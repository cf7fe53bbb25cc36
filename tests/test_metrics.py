"""The library's metrics (streamed: `split_metrics` from `score_counts`) against scikit-learn,
and the references (`tests/reference_metrics.py`) against hand-computed values."""

import numpy as np
import pytest
from sklearn import metrics as sk

from longbert_tf.evaluation import metrics, split_metrics
from longbert_tf.framework import tf
from tests import reference_metrics as reference
from tests.streamed_scores import count


@pytest.fixture
def multilabel():
    """Labels, logits correlated with them and the float32 probabilities the counting computes
    from those; codes 3 and 7 lack positives, code 5 negatives. Logits are multiples of 1/32,
    a coarse logit bin (`score_counts.MACRO_BINS`), so the binned AUCs are exact; the first five
    notes' are whole numbers (ties)."""
    rng = np.random.default_rng(7)
    y_true = (rng.random((60, 12)) < 0.25).astype(np.float32)
    y_true[:, [3, 7]] = 0
    y_true[:, 5] = 1
    logits = 2.0 * y_true + rng.normal(-1.0, 1.5, y_true.shape)
    logits[:5] = np.round(logits[:5])
    logits = (np.round(logits * 32) / 32).astype(np.float32)
    return y_true, logits, tf.sigmoid(logits).numpy()


def streamed(y_true, logits, threshold: float) -> dict:
    return split_metrics.evaluate(count(y_true, logits), threshold, np.shape(y_true)[1])


def test_micro_precision_recall_f1_match_sklearn(multilabel):
    y_true, logits, y_prob = multilabel
    for threshold in (0.2, 0.5, 0.8, 0.99):
        predicted = (y_prob >= threshold).astype(int)
        expected = (
            sk.precision_score(y_true, predicted, average="micro", zero_division=0),
            sk.recall_score(y_true, predicted, average="micro", zero_division=0),
            sk.f1_score(y_true, predicted, average="micro", zero_division=0),
        )
        results = streamed(y_true, logits, threshold)
        np.testing.assert_allclose(
            [results[f"micro_{name}"] for name in ("precision", "recall", "f1")], expected
        )


def test_tune_threshold_finds_the_best_grid_threshold(multilabel):
    y_true, logits, y_prob = multilabel
    grid = metrics.THRESHOLD_GRID
    f1s = [
        sk.f1_score(y_true, (y_prob >= t).astype(int), average="micro", zero_division=0)
        for t in grid
    ]
    threshold, f1 = split_metrics.tune_threshold(count(y_true, logits))
    assert threshold == grid[int(np.argmax(f1s))]
    assert f1 == pytest.approx(max(f1s))


def test_tune_threshold_counts_a_probability_equal_to_the_threshold_as_positive():
    """Codes 0 and 2 (true) score exactly 0.5 (logit 0), code 1 just under it: 0.5 predicts
    exactly the true codes only if a probability equal to the threshold counts."""
    y_true = np.float32([[1, 0, 1, 0]])
    logits = np.float32([[0.0, -0.02, 0.0, -3.0]])
    assert tf.sigmoid(logits).numpy()[0, 0] == 0.5
    assert split_metrics.tune_threshold(count(y_true, logits)) == (0.5, 1.0)
    y_prob = np.float32([[0.3, 0.2, 0.3, 0.1]])
    assert reference.best_grid_threshold(y_true, y_prob, [0.1, 0.2, 0.3, 0.4]) == (0.3, 1.0)


def test_aucs_match_sklearn(multilabel):
    y_true, logits, y_prob = multilabel
    results = streamed(y_true, logits, 0.5)
    assert results["micro_pr_auc"] == pytest.approx(
        sk.average_precision_score(y_true, y_prob, average="micro")
    )
    assert results["micro_roc_auc"] == pytest.approx(
        sk.roc_auc_score(y_true, y_prob, average="micro")
    )
    defined = [c for c in range(y_true.shape[1]) if 0 < y_true[:, c].sum() < len(y_true)]
    assert results["macro_roc_auc"] == pytest.approx(
        sk.roc_auc_score(y_true[:, defined], y_prob[:, defined], average="macro")
    )


def test_macro_f1_averages_codes_with_positives(multilabel):
    y_true, logits, y_prob = multilabel
    with_positives = y_true.any(axis=0)
    predicted = (y_prob >= 0.5).astype(int)
    expected = sk.f1_score(
        y_true[:, with_positives], predicted[:, with_positives], average="macro", zero_division=0
    )
    assert streamed(y_true, logits, 0.5)["macro_f1"] == pytest.approx(expected)


def test_caml_macro_f1_by_hand():
    """Codes: 0 (2 positives, 1 found, 2 predicted), 1 (no positive, predicted once), 2 (a
    positive, never predicted), 3 (nothing at all): P = (1/2 + 0 + 0 + 0) / 4, R = (1/2) / 4.
    scikit-learn's macro precision and recall over every code, as the references compute them;
    `test_split_metrics.test_streamed_macro_f1s_by_hand` holds the library to the same."""
    y_true = np.array([[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    y_prob = np.array([[0.9, 0.1, 0.2, 0.0], [0.3, 0.1, 0.1, 0.0], [0.8, 0.6, 0.0, 0.0]])
    precision, recall, f1 = reference.caml_macro_precision_recall_f1(y_true, y_prob, 0.5)
    assert (precision, recall) == (0.125, 0.125) and f1 == pytest.approx(0.125)
    # Not the mean per-code F1 over the codes with positives: (1/2 + 0) / 2.
    assert reference.macro_f1(y_true, y_prob, 0.5) == pytest.approx(0.25)
    # Four more codes, absent from the split: the CAML means halve (0.5 / 8), the per-code mean
    # (over codes with positives) stays.
    wider_true, wider_prob = np.pad(y_true, [(0, 0), (0, 4)]), np.pad(y_prob, [(0, 0), (0, 4)])
    assert reference.caml_macro_precision_recall_f1(wider_true, wider_prob, 0.5) == (
        pytest.approx(0.0625),
        pytest.approx(0.0625),
        pytest.approx(0.0625),
    )
    assert reference.macro_f1(wider_true, wider_prob, 0.5) == pytest.approx(0.25)


def caml_reference(y_true, predicted):
    """CAML's macro precision / recall / F1 as its evaluation.py writes them: per-code ratios
    with 1e-10 added to every denominator, averaged over every column."""
    true_positives = np.sum(y_true * predicted, axis=0)
    precision = np.mean(true_positives / (predicted.sum(axis=0) + 1e-10))
    recall = np.mean(true_positives / (y_true.sum(axis=0) + 1e-10))
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, f1


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 0.99])
def test_caml_macro_matches_scikit_learn_and_the_reference_formula(multilabel, threshold):
    y_true, logits, _ = multilabel
    y_true[:, 0], logits[:, 0] = 0, -10.0  # no positive, never predicted
    logits[:, 1] = -5.0  # positives, never predicted
    logits[0, 3] = 3.0  # no positive (code 3), predicted up to 0.95
    y_prob = tf.sigmoid(logits).numpy()
    predicted = (y_prob >= threshold).astype(int)
    if threshold <= 0.8:
        assert not y_true[:, 0].any() and not predicted[:, 0].any()
        assert y_true[:, 1].any() and not predicted[:, 1].any()
        assert not y_true[:, 3].any() and predicted[:, 3].any()
    precision = sk.precision_score(y_true, predicted, average="macro", zero_division=0)
    recall = sk.recall_score(y_true, predicted, average="macro", zero_division=0)
    harmonic = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    results = streamed(y_true, logits, threshold)
    actual = tuple(results[f"caml_macro_{name}"] for name in ("precision", "recall", "f1"))
    assert actual == pytest.approx((precision, recall, harmonic), abs=1e-12)
    assert actual == pytest.approx(caml_reference(y_true, predicted), rel=1e-9, abs=1e-12)
    with_positives = y_true.any(axis=0)
    assert results["macro_f1"] == pytest.approx(
        sk.f1_score(
            y_true[:, with_positives],
            predicted[:, with_positives],
            average="macro",
            zero_division=0,
        ),
        abs=1e-12,
    )


def test_precision_at_k_by_hand():
    y_true = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]])
    y_score = np.array([[0.9, 0.8, 0.7, 0.1, 0.0], [0.5, 0.4, 0.3, 0.2, 0.1]])
    # Note 1: top 2 = codes 0, 1 -> 1/2; note 2: top 2 = codes 0, 1 -> 0/2.
    assert reference.precision_at_k(y_true, y_score, 2) == pytest.approx(0.25)
    # Note 1: top 3 -> 2/3; note 2: top 3 -> 0.
    assert reference.precision_at_k(y_true, y_score, 3) == pytest.approx(1 / 3)


def test_mean_average_precision_by_hand():
    y_true = np.float32([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    y_score = np.array([[0.9, 0.8, 0.7, 0.1], [0.5, 0.5, 0.5, 0.2], [0.9, 0.1, 0.1, 0.1]])
    logits = np.log(y_score / (1 - y_score)).astype(np.float32)  # ties stay ties
    # Note 1: code 0 at rank 1 (1/1), code 2 at rank 3 (2/3). Note 2: code 1 tied with two
    # others at the top: precision 1/3. Note 3 has no code and is left out.
    expected = ((1 + 2 / 3) / 2 + 1 / 3) / 2
    assert reference.mean_average_precision(y_true, y_score) == pytest.approx(expected)
    assert streamed(y_true, logits, 0.5)["map"] == pytest.approx(expected, abs=1e-6)
    assert np.isnan(reference.mean_average_precision(y_true[2:], y_score[2:]))
    assert np.isnan(streamed(y_true[2:], logits[2:], 0.5)["map"])


def test_undefined_aucs_are_nan():
    y_true = np.zeros((4, 3), np.float32)
    logits = np.zeros((4, 3), np.float32)  # probability 0.5
    results = streamed(y_true, logits, 0.5)
    assert np.isnan(results["micro_pr_auc"])
    assert np.isnan(results["micro_roc_auc"])
    assert np.isnan(results["macro_roc_auc"])
    assert [results[f"micro_{name}"] for name in ("precision", "recall", "f1")] == [0.0] * 3


def test_evaluate_reports_every_metric(multilabel):
    y_true, logits, _ = multilabel
    results = streamed(y_true, logits, 0.5)
    assert set(results) == {
        "threshold",
        "micro_f1",
        "micro_precision",
        "micro_recall",
        "micro_pr_auc",
        "micro_roc_auc",
        "map",
        "macro_f1",
        "macro_roc_auc",
        "caml_macro_precision",
        "caml_macro_recall",
        "caml_macro_f1",
        "num_notes",
        "precision_at_5",
        "precision_at_8",
        "precision_at_15",
    }
    assert results["num_notes"] == 60
    assert results["precision_at_15"] == pytest.approx(y_true.sum() / (60 * 12))
