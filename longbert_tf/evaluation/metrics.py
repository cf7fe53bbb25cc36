"""Multi-label metrics for ICD coding, on NumPy arrays `[num_notes, num_labels]`.

`y_true` is 0/1, `y_prob` holds probabilities (any score works for the
AUCs and P@k). A code is predicted when its probability is >= the threshold.
Ratios with a zero denominator are 0 (precision with no predictions, F1 with
P = R = 0); an AUC that is undefined (no positives or no negatives) is NaN.
Macro averages run over the codes that have at least one positive note, except
the CAML-style macro precision / recall / F1, which run over every code of the
label space (`caml_macro_precision_recall_f1`).
"""

import numpy as np
from scipy import stats

THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)
PRECISION_AT = (5, 8, 15)


def ratio(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def f1_score(precision, recall):
    return ratio(2 * precision * recall, precision + recall)


def micro_precision_recall_f1(y_true, y_prob, threshold: float) -> tuple:
    """Micro-averaged (precision, recall, F1) of the predictions `y_prob >= threshold`."""
    y_true = np.asarray(y_true, dtype=bool)
    predicted = np.asarray(y_prob) >= threshold
    true_positives = np.sum(predicted & y_true)
    precision = float(ratio(true_positives, predicted.sum()))
    recall = float(ratio(true_positives, y_true.sum()))
    return precision, recall, float(f1_score(precision, recall))


def tune_threshold(y_true, y_prob, grid=THRESHOLD_GRID) -> tuple:
    """The threshold of `grid` with the highest micro F1, and that F1 (the lowest on ties).

    One pass over the data: each probability is counted under the number of
    grid thresholds it reaches.
    """
    grid = np.sort(np.asarray(grid, dtype=np.float64))
    y_true = np.asarray(y_true, dtype=bool).ravel()
    reached = np.searchsorted(grid, np.asarray(y_prob, dtype=np.float64).ravel(), side="right")
    # predicted[j]: probabilities >= grid[j], i.e. that reached more than j thresholds.
    positives_reached = np.bincount(reached[y_true], minlength=len(grid) + 1)
    all_reached = np.bincount(reached, minlength=len(grid) + 1)
    true_positives = positives_reached[::-1].cumsum()[::-1][1:]
    predicted = all_reached[::-1].cumsum()[::-1][1:]
    f1 = f1_score(ratio(true_positives, predicted), ratio(true_positives, y_true.sum()))
    best = int(np.argmax(f1))
    return float(grid[best]), float(f1[best])


def _ranked_counts(y_true, y_score):
    """Cumulative true and false positives at each distinct score, highest score first."""
    order = np.argsort(-y_score, kind="stable")
    y_score, y_true = y_score[order], y_true[order]
    last_of_score = np.r_[np.flatnonzero(np.diff(y_score)), y_true.size - 1]
    true_positives = np.cumsum(y_true)[last_of_score]
    false_positives = last_of_score + 1 - true_positives
    return true_positives, false_positives


def average_precision(y_true, y_score) -> float:
    """Area under the precision-recall curve as the step sum of precision over recall gains."""
    y_true = np.asarray(y_true, dtype=bool).ravel()
    if not y_true.any():
        return float("nan")
    true_positives, false_positives = _ranked_counts(
        y_true, np.asarray(y_score, dtype=np.float64).ravel()
    )
    precision = true_positives / (true_positives + false_positives)
    recall_gain = np.diff(np.r_[0, true_positives]) / y_true.sum()
    return float(np.sum(precision * recall_gain))


def mean_average_precision(y_true, y_score) -> float:
    """Mean over notes with a true code of each note's `average_precision` over its codes: the
    mean, over its true codes, of the precision among the codes scored at least as high (NaN
    when no note has a true code)."""
    y_true = np.asarray(y_true, dtype=bool)
    notes = np.flatnonzero(y_true.any(axis=1))
    if not len(notes):
        return float("nan")
    return float(np.mean([average_precision(y_true[n], np.asarray(y_score)[n]) for n in notes]))


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count half)."""
    y_true = np.asarray(y_true, dtype=bool).ravel()
    num_positive = int(y_true.sum())
    num_negative = y_true.size - num_positive
    if num_positive == 0 or num_negative == 0:
        return float("nan")
    ranks = stats.rankdata(np.asarray(y_score, dtype=np.float64).ravel())
    rank_sum = ranks[y_true].sum() - num_positive * (num_positive + 1) / 2
    return float(rank_sum / (num_positive * num_negative))


def macro_f1(y_true, y_prob, threshold: float) -> float:
    """Mean per-code F1 over the codes with at least one positive note (`metrics.json`'s
    `macro_f1`).

    Each code's F1 is `2 TP / (2 TP + FP + FN)` (0 when the code is never
    predicted); codes without a positive note are left out, so the label space
    does not matter. This is scikit-learn's `f1_score(average="macro")` on
    those codes, and the macro F1 Edin et al. (2023) compute. It is not the
    macro F1 CAML and most ICD-coding papers report: that is
    `caml_macro_precision_recall_f1`. NaN when no code has a positive note.
    """
    y_true = np.asarray(y_true, dtype=bool)
    predicted = np.asarray(y_prob) >= threshold
    has_positive = y_true.any(axis=0)
    if not has_positive.any():
        return float("nan")
    true_positives = np.sum(predicted & y_true, axis=0)
    precision = ratio(true_positives, predicted.sum(axis=0))
    recall = ratio(true_positives, y_true.sum(axis=0))
    return float(np.mean(f1_score(precision, recall)[has_positive]))


def caml_macro_precision_recall_f1(y_true, y_prob, threshold: float) -> tuple:
    """Macro (precision, recall, F1) as CAML's `evaluation.py` (Mullenbach et al. 2018) and most
    ICD-coding papers after it compute them (`metrics.json`'s `caml_macro_precision`,
    `caml_macro_recall`, `caml_macro_f1`).

    With per-code counts over the notes, the average runs over every column of
    `y_true`, i.e. every code of the label space (CAML: its whole label
    dictionary), codes absent from the split included:
      precision = mean over codes of TP / (TP + FP), 0 for a code never predicted;
      recall = mean over codes of TP / (TP + FN), 0 for a code without a positive note;
      F1 = 2 P R / (P + R), 0 when P = R = 0.
    So F1 is the harmonic mean of the two means, not the mean of per-code F1s
    (that is `macro_f1`), and codes without positives lower all three. CAML
    adds 1e-10 to each denominator instead of mapping 0 / 0 to 0: the same
    zeros, and other ratios differ by less than 1e-10 relatively.
    """
    y_true = np.asarray(y_true, dtype=bool)
    predicted = np.asarray(y_prob) >= threshold
    true_positives = np.sum(predicted & y_true, axis=0)
    precision = float(np.mean(ratio(true_positives, predicted.sum(axis=0))))
    recall = float(np.mean(ratio(true_positives, y_true.sum(axis=0))))
    return precision, recall, float(f1_score(precision, recall))


def macro_roc_auc(y_true, y_score) -> float:
    """Mean per-code ROC-AUC over codes with both positive and negative notes."""
    y_true = np.asarray(y_true, dtype=bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    aucs = [
        roc_auc(y_true[:, code], y_score[:, code])
        for code in np.flatnonzero(y_true.any(axis=0) & ~y_true.all(axis=0))
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def precision_at_k(y_true, y_score, k: int) -> float:
    """Mean over notes of the share of the k highest-scored codes that are true."""
    y_true = np.asarray(y_true, dtype=bool)
    k = min(k, y_true.shape[1])
    top_k = np.argpartition(-np.asarray(y_score), k - 1, axis=1)[:, :k]
    return float(np.mean(np.take_along_axis(y_true, top_k, axis=1).sum(axis=1) / k))


def evaluate(y_true, y_prob, threshold: float) -> dict:
    """All metrics of a split at `threshold`."""
    precision, recall, f1 = micro_precision_recall_f1(y_true, y_prob, threshold)
    results = dict(
        threshold=float(threshold),
        micro_f1=f1,
        micro_precision=precision,
        micro_recall=recall,
        micro_pr_auc=average_precision(y_true, y_prob),
        micro_roc_auc=roc_auc(y_true, y_prob),
        map=mean_average_precision(y_true, y_prob),
        macro_f1=macro_f1(y_true, y_prob, threshold),
        macro_roc_auc=macro_roc_auc(y_true, y_prob),
        num_notes=int(np.shape(y_true)[0]),
    )
    caml = caml_macro_precision_recall_f1(y_true, y_prob, threshold)
    results.update(zip(("caml_macro_precision", "caml_macro_recall", "caml_macro_f1"), caml))
    for k in PRECISION_AT:
        results[f"precision_at_{k}"] = precision_at_k(y_true, y_prob, k)
    return results
