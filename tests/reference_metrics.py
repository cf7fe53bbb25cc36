"""Every metric of `split_metrics.evaluate`, on whole `[notes, codes]` arrays with scikit-learn
(NumPy where it has no such metric): the references the streamed metrics are tested against.

`y_true` is 0/1; `y_prob` probabilities (the AUCs, MAP and P@k take any score). A code is
predicted when its probability is >= the threshold. Ratios with a zero denominator are 0; an
AUC that is undefined (no positive or no negative) is NaN, and so is MAP without a note that
has a true code.
"""

import numpy as np
from sklearn import metrics as sk

from longbert_tf.evaluation import metrics


def predicted_at(y_prob, threshold: float) -> np.ndarray:
    return (np.asarray(y_prob) >= threshold).astype(int)


def micro_precision_recall_f1(y_true, y_prob, threshold: float) -> tuple:
    predicted = predicted_at(y_prob, threshold)
    return tuple(
        float(score(y_true, predicted, average="micro", zero_division=0))
        for score in (sk.precision_score, sk.recall_score, sk.f1_score)
    )


def best_grid_threshold(y_true, y_prob, grid=metrics.THRESHOLD_GRID) -> tuple:
    """The threshold of `grid` with the highest micro F1, and that F1 (the lowest on ties)."""
    f1s = [
        sk.f1_score(y_true, predicted_at(y_prob, threshold), average="micro", zero_division=0)
        for threshold in grid
    ]
    best = int(np.argmax(f1s))
    return float(grid[best]), float(f1s[best])


def macro_f1(y_true, y_prob, threshold: float) -> float:
    """Mean per-code F1 over the codes with a positive note."""
    positive = np.asarray(y_true).any(axis=0)
    if not positive.any():
        return float("nan")
    predicted = predicted_at(y_prob, threshold)
    return float(
        sk.f1_score(
            np.asarray(y_true)[:, positive],
            predicted[:, positive],
            average="macro",
            zero_division=0,
        )
    )


def caml_macro_precision_recall_f1(y_true, y_prob, threshold: float) -> tuple:
    """Macro precision and recall over every code (column), and their harmonic mean."""
    predicted = predicted_at(y_prob, threshold)
    precision = sk.precision_score(y_true, predicted, average="macro", zero_division=0)
    recall = sk.recall_score(y_true, predicted, average="macro", zero_division=0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def micro_pr_auc(y_true, y_score) -> float:
    y_true = np.asarray(y_true).ravel()
    if not y_true.any():
        return float("nan")
    return float(sk.average_precision_score(y_true, np.asarray(y_score).ravel()))


def micro_roc_auc(y_true, y_score) -> float:
    y_true = np.asarray(y_true).ravel()
    if y_true.all() or not y_true.any():
        return float("nan")
    return float(sk.roc_auc_score(y_true, np.asarray(y_score).ravel()))


def macro_roc_auc(y_true, y_score) -> float:
    """Mean per-code ROC-AUC over the codes with positive and negative notes."""
    y_true = np.asarray(y_true)
    defined = y_true.any(axis=0) & ~y_true.all(axis=0)
    if not defined.any():
        return float("nan")
    return float(
        sk.roc_auc_score(y_true[:, defined], np.asarray(y_score)[:, defined], average="macro")
    )


def mean_average_precision(y_true, y_score) -> float:
    """Mean over the notes with a true code of each note's average precision over its codes."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    notes = np.flatnonzero(y_true.any(axis=1))
    if not len(notes):
        return float("nan")
    return float(np.mean([sk.average_precision_score(y_true[n], y_score[n]) for n in notes]))


def precision_at_k(y_true, y_score, k: int) -> float:
    """Mean over notes of the share of true codes among the k best scored (ties: lower code
    index first, as `tf.math.top_k`)."""
    y_true = np.asarray(y_true, bool)
    k = min(k, y_true.shape[1])
    top_k = np.argsort(-np.asarray(y_score), axis=1, kind="stable")[:, :k]
    return float(np.mean(np.take_along_axis(y_true, top_k, axis=1).sum(axis=1) / k))


def evaluate(y_true, y_prob, threshold: float) -> dict:
    """Every metric of a split at `threshold`, under `split_metrics.evaluate`'s keys."""
    precision, recall, f1 = micro_precision_recall_f1(y_true, y_prob, threshold)
    results = dict(
        threshold=float(threshold),
        micro_f1=f1,
        micro_precision=precision,
        micro_recall=recall,
        micro_pr_auc=micro_pr_auc(y_true, y_prob),
        micro_roc_auc=micro_roc_auc(y_true, y_prob),
        map=mean_average_precision(y_true, y_prob),
        macro_f1=macro_f1(y_true, y_prob, threshold),
        macro_roc_auc=macro_roc_auc(y_true, y_prob),
        num_notes=int(np.shape(y_true)[0]),
    )
    caml = caml_macro_precision_recall_f1(y_true, y_prob, threshold)
    results.update(zip(("caml_macro_precision", "caml_macro_recall", "caml_macro_f1"), caml))
    for k in metrics.PRECISION_AT:
        results[f"precision_at_{k}"] = precision_at_k(y_true, y_prob, k)
    return results
