"""Metrics of a split from its `score_counts` counts, at a threshold tuned on dev.

  exact: micro precision / recall / F1 at every grid threshold (hence the
    tuned threshold), at a grid threshold both macro F1s (`macro_f1` and the
    CAML-style `caml_macro_*`), precision at 5, 8, 15, and the mean over notes
    of each note's average precision (`map`, up to float32 sums);
  binned: micro PR-AUC and ROC-AUC from the `MICRO_BINS` histogram, macro
    ROC-AUC from per-code histograms of `MACRO_BINS` bins (MICRO_BINS /
    MACRO_BINS neighbouring bins merged); scores in one bin count as tied.
With real models' scores the binned AUCs are within 1e-4 (micro) and 1e-3
(macro) of the exact ones (tested against scikit-learn).

Macro averages run over the codes that have at least one positive note, except
the CAML-style macro precision / recall / F1, which run over every code of the
label space (`_macro_f1`, `_caml_macro`).
"""

import numpy as np

from longbert_tf.evaluation import metrics
from longbert_tf.evaluation.score_counts import HISTOGRAM_LOGIT_RANGE, MICRO_BINS

_CODES_AT_ONCE = 4096  # codes whose macro ROC-AUC is computed together
_BINS_PER_LOGIT = MICRO_BINS / (2 * HISTOGRAM_LOGIT_RANGE)
# Logit offsets tried for the codes without a training note: whole fine bins.
OFFSET_GRID = np.arange(-HISTOGRAM_LOGIT_RANGE, HISTOGRAM_LOGIT_RANGE + 0.125, 0.25)


def _at_or_above(histogram: np.ndarray) -> np.ndarray:
    """Counts at or above each bin along the last axis: `out[..., j] = sum(histogram[..., j:])`."""
    return np.flip(np.cumsum(np.flip(histogram, -1), -1), -1)


def threshold_counts(counts: dict) -> tuple:
    """`(true_positives, predicted, positives)`: micro counts at 0, then every count threshold;
    `positives` includes the gold pairs outside the label space (never predicted)."""
    predicted = _at_or_above(counts["reached_micro_all"])
    true_positives = _at_or_above(counts["reached_micro_positive"])
    return true_positives, predicted, int(true_positives[0] + counts["outside_pairs"][0])


def tune_threshold(counts: dict) -> tuple:
    """The grid threshold with the best micro F1 and that F1 (the lowest threshold on ties)."""
    true_positives, predicted, positives = threshold_counts(counts)
    grid = slice(1, len(metrics.THRESHOLD_GRID) + 1)
    f1 = metrics.f1_score(
        metrics.ratio(true_positives[grid], predicted[grid]),
        metrics.ratio(true_positives[grid], positives),
    )
    best = int(np.argmax(f1))
    return float(metrics.THRESHOLD_GRID[best]), float(f1[best])


def offset_histograms(counts: dict, offset: float) -> tuple:
    """`(all, positive)`: the fine logit histograms of every score, the codes without a
    training note moved by `offset` logits (rounded to whole bins; clipped into the end bins)."""
    shift = int(round(offset * _BINS_PER_LOGIT))
    positions = np.clip(np.arange(MICRO_BINS) + shift, 0, MICRO_BINS - 1)
    return tuple(
        counts[f"micro_{name}"]
        - counts[f"untrained_{name}"]
        + np.bincount(positions, counts[f"untrained_{name}"], MICRO_BINS).astype(np.int64)
        for name in ("all", "positive")
    )


def fit_untrained_offset(counts: dict) -> float:
    """The logit offset (of `OFFSET_GRID`) for the codes without a training note that gives
    the split's scores their highest micro PR-AUC; the one nearest 0 on ties, 0 when no such
    code was scored or no pair is positive.

    PR-AUC rather than F1: once those codes fall below the threshold F1 no
    longer changes, while PR-AUC still rewards ranking their true pairs above
    the trained codes' false ones (on CodiEsp dev it peaked at the offset
    where MAP did).
    """
    outside = int(counts["outside_pairs"][0])
    if not counts["untrained_all"].any() or not counts["micro_positive"].any():
        return 0.0
    candidates = sorted(OFFSET_GRID, key=abs)
    areas = [
        _average_precision(positive, total, outside)
        for total, positive in (offset_histograms(counts, offset) for offset in candidates)
    ]
    return float(candidates[int(np.argmax(areas))])


def _grid_index(threshold: float) -> int:
    """1 + the position of `threshold` in the grid: its column in `_at_or_above` counts."""
    matches = np.flatnonzero(np.isclose(metrics.THRESHOLD_GRID, threshold, rtol=0, atol=1e-9))
    if not len(matches):
        raise ValueError(
            f"threshold={threshold} is not on the grid {metrics.THRESHOLD_GRID[0]} ... "
            f"{metrics.THRESHOLD_GRID[-1]} that streaming evaluation counts"
        )
    return int(matches[0]) + 1


def _roc_auc(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """ROC-AUC over the last axis of score histograms (ascending bins; ties count half)."""
    below = np.cumsum(negative, -1) - negative
    pairs = positive.sum(-1) * negative.sum(-1)
    wins = np.sum(positive * (below + 0.5 * negative), -1)
    return metrics.ratio(wins, pairs)


def _average_precision(positive: np.ndarray, total: np.ndarray, missed: int) -> float:
    """Step-wise area under the PR curve from score histograms, one threshold per bin; `missed`
    positives are never retrieved (their recall adds no area)."""
    true_positives = _at_or_above(positive)
    predicted = _at_or_above(total)
    precision = metrics.ratio(true_positives, predicted)
    return float(np.sum(precision * positive) / (positive.sum() + missed))


def pr_curve(counts: dict) -> dict:
    """Micro TP, FP, TN, FN counts at the thresholds 0, 0.01, ..., 0.99, 1 (101 points), named as
    TensorBoard's `pr_curve` summary names them."""
    true_positives, predicted, positives = threshold_counts(counts)
    total = int(predicted[0])
    false_positives = predicted - true_positives
    return dict(
        true_positive_counts=true_positives,
        false_positive_counts=false_positives,
        true_negative_counts=(total - positives) - false_positives,
        false_negative_counts=positives - true_positives,
    )


def evaluate(counts: dict, threshold: float, num_labels: int, unseen_rows=None) -> dict:
    """All metrics of a split at `threshold` (a grid value).

    `num_labels` is the size of the label space the CAML-style macro averages run over (every
    code of the labels file, not only the tracked ones).

    `unseen_rows` (bool, one per tracked code) marks the codes without a
    training note: `unseen_code_recall` is the recall on their (note, code)
    pairs and those of codes outside the label space, of which there are
    `unseen_code_pairs`, `outside_code_pairs` of them outside the space (NaN
    when there is none).
    """
    column = _grid_index(threshold)
    code_counts = _code_counts(counts)
    true_positives, predicted, positives = threshold_counts(counts)
    precision = float(metrics.ratio(true_positives[column], predicted[column]))
    recall = float(metrics.ratio(true_positives[column], positives))
    micro_all, micro_positive = counts["micro_all"], counts["micro_positive"]
    # Gold pairs outside the label space: in a bin below every score, never retrieved.
    outside = int(counts["outside_pairs"][0])
    ranked_positive = np.concatenate([[outside], micro_positive])
    ranked_negative = np.concatenate([[0], micro_all - micro_positive])
    num_notes = int(counts["note_counts"].sum())
    results = dict(
        threshold=float(threshold),
        micro_f1=float(metrics.f1_score(precision, recall)),
        micro_precision=precision,
        micro_recall=recall,
        micro_pr_auc=(
            _average_precision(micro_positive, micro_all, outside) if positives else float("nan")
        ),
        micro_roc_auc=float(
            _roc_auc(ranked_positive, ranked_negative)
            if positives and ranked_negative.sum()
            else float("nan")
        ),
        map=_mean_average_precision(counts),
        macro_f1=_macro_f1(code_counts, column),
        macro_roc_auc=_macro_roc_auc(counts),
        num_notes=num_notes,
    )
    caml = _caml_macro(code_counts, column, num_labels)
    results.update(zip(("caml_macro_precision", "caml_macro_recall", "caml_macro_f1"), caml))
    for position, k in enumerate(metrics.PRECISION_AT):
        results[f"precision_at_{k}"] = float(counts["precision_at_k"][position] / num_notes)
    if unseen_rows is not None:  # codes outside the label space have no training note either
        reached = _at_or_above(counts["reached_positive"][np.asarray(unseen_rows, bool)])
        unseen_pairs = int(reached[:, 0].sum()) + outside
        results["unseen_code_pairs"] = unseen_pairs
        results["unseen_code_recall"] = (
            float(reached[:, column].sum() / unseen_pairs) if unseen_pairs else float("nan")
        )
        results["outside_code_pairs"] = outside
    return results


def _mean_average_precision(counts: dict) -> float:
    """The mean of the average precisions of the notes with a true code (NaN without any)."""
    notes_with_codes = int(counts["notes_with_codes"][0])
    if not notes_with_codes:
        return float("nan")
    return float(counts["average_precision"][0] / notes_with_codes)


def _macro_roc_auc(counts: dict) -> float:
    """Mean per-code ROC-AUC over codes with positive and negative notes (a few codes at a time,
    so the temporaries stay small beside the counts)."""
    positive_notes, all_notes = counts["macro_positive"].sum(1), counts["macro_all"].sum(1)
    codes = np.flatnonzero((positive_notes > 0) & (positive_notes < all_notes))
    if not len(codes):
        return float("nan")
    aucs = []
    for start in range(0, len(codes), _CODES_AT_ONCE):
        chunk = codes[start : start + _CODES_AT_ONCE]
        positive = counts["macro_positive"][chunk]
        aucs.append(_roc_auc(positive, counts["macro_all"][chunk] - positive))
    return float(np.mean(np.concatenate(aucs)))


def _code_counts(counts: dict) -> tuple:
    """`(true_positives, predicted)` per tracked code at 0 and every count threshold:
    `[tracked codes, REACHED_COLUMNS]` each (column 0: every positive, every note)."""
    return _at_or_above(counts["reached_positive"]), _at_or_above(counts["reached_all"])


def _macro_f1(code_counts: tuple, column: int) -> float:
    """Mean per-code F1 at a grid column over the codes with a positive note (`macro_f1`).

    Each code's F1 is `2 TP / (2 TP + FP + FN)` (0 when the code is never
    predicted); codes without a positive note are left out, so the label space
    does not matter. This is scikit-learn's `f1_score(average="macro")` on
    those codes, and the macro F1 Edin et al. (2023) compute. It is not the
    macro F1 CAML and most ICD-coding papers report: that is `_caml_macro`. NaN
    when no code has a positive note.
    """
    true_positives, predicted = code_counts
    positives = true_positives[:, 0]
    if not (positives > 0).any():
        return float("nan")
    f1 = metrics.f1_score(
        metrics.ratio(true_positives[:, column], predicted[:, column]),
        metrics.ratio(true_positives[:, column], positives),
    )
    return float(np.mean(f1[positives > 0]))


def _caml_macro(code_counts: tuple, column: int, num_labels: int) -> tuple:
    """Macro (precision, recall, F1) as CAML's `evaluation.py` (Mullenbach et al. 2018) and most
    ICD-coding papers after it compute them (`caml_macro_precision`, `caml_macro_recall`,
    `caml_macro_f1`).

    With per-code counts over the notes, the average runs over every code of
    the label space (`num_labels`; CAML: its whole label dictionary), codes
    absent from the split included:
      precision = mean over codes of TP / (TP + FP), 0 for a code never predicted;
      recall = mean over codes of TP / (TP + FN), 0 for a code without a positive note;
      F1 = 2 P R / (P + R), 0 when P = R = 0.
    So F1 is the harmonic mean of the two means, not the mean of per-code F1s
    (that is `_macro_f1`), and codes without positives lower all three. CAML
    adds 1e-10 to each denominator instead of mapping 0 / 0 to 0: the same
    zeros, and other ratios differ by less than 1e-10 relatively. A code that
    is not tracked has no true positive, so it adds 0 to both sums and only
    counts in `num_labels`.
    """
    true_positives, predicted = code_counts
    num_tracked = len(predicted)
    if num_labels < num_tracked:
        raise ValueError(
            f"num_labels={num_labels} is smaller than the {num_tracked} codes counted one by "
            "one: pass the size of the whole label space (the labels file's length)"
        )
    tp = true_positives[:, column]
    precision = float(metrics.ratio(tp, predicted[:, column]).sum() / num_labels)
    recall = float(metrics.ratio(tp, true_positives[:, 0]).sum() / num_labels)
    return precision, recall, float(metrics.f1_score(precision, recall))
