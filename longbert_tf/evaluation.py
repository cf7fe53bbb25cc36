"""Streaming evaluation: a split's scores folded batch by batch into counts of a fixed size.

Nothing of size notes x codes is held. On the device each score becomes two
integers (`score_bins`): how many thresholds of `metrics.THRESHOLD_GRID` (and
1.0) its probability reaches, and its bin among `MICRO_BINS` equal bins of
the logit over [-LOGIT_RANGE, LOGIT_RANGE] (beyond it: the end bins); the
device also counts them over all codes. On the host `SplitCounts` counts
them per code, for all notes and for the positive ones, for the codes that
have a positive note in the split (`tracked_codes`): the per-code macro
averages run over those alone, and the others have no true positive, so they
add 0 to the sums of the CAML-style macro averages and only count in their
number of codes. From those counts:
  exact: micro precision / recall / F1 at every grid threshold (hence the
    tuned threshold), at a grid threshold both macro F1s (`macro_f1` and the
    CAML-style `caml_macro_*`), precision at 5, 8, 15;
  binned: micro PR-AUC and ROC-AUC from the `MICRO_BINS` histogram, macro
    ROC-AUC from per-code histograms of `MACRO_BINS` bins (MICRO_BINS /
    MACRO_BINS neighbouring bins merged); scores in one bin count as tied.
With real models' scores the binned AUCs are within 1e-4 (micro) and 1e-3
(macro) of the exact ones (tested against `metrics` and scikit-learn).
Memory: 2 x tracked codes x (MACRO_BINS + 101) counts and one batch.
"""

import gzip
import json
import os

import numpy as np

from longbert_tf import data, metrics
from longbert_tf.framework import tf

LOGIT_RANGE = 16.0
MICRO_BINS = 1 << 16
MACRO_BINS = 1 << 10
# Count thresholds: the tuning grid 0.01 ... 0.99, then 1.0 (the PR curve's last point).
COUNT_THRESHOLDS = np.append(metrics.THRESHOLD_GRID, 1.0)
REACHED_COLUMNS = len(COUNT_THRESHOLDS) + 1  # 0 to 100 thresholds reached
# score_bins' keys
BIN_NAMES = (
    "reached",
    "macro_bin",
    "micro_all",
    "micro_positive",
    "reached_micro_all",
    "reached_micro_positive",
)
_CODES_AT_ONCE = 4096  # codes whose macro ROC-AUC is computed together


def _float32_at_least(values) -> np.ndarray:
    """The smallest float32 >= each float64 value: `p >= t` then holds in float32 exactly."""
    rounded = np.asarray(values, np.float64).astype(np.float32)
    return np.where(rounded < values, np.nextafter(rounded, np.float32(np.inf)), rounded)


# reached(p) = #{t in COUNT_THRESHOLDS: p >= t}; 0 and infinity bracket the thresholds.
_THRESHOLDS_32 = np.concatenate([[0.0], _float32_at_least(COUNT_THRESHOLDS), [np.inf]]).astype(
    np.float32
)


def thresholds_reached(probabilities):
    """int32: how many of `COUNT_THRESHOLDS` each float32 probability reaches (`p >= t`)."""
    thresholds = tf.constant(_THRESHOLDS_32)
    # floor(100 p) is off by at most one from the count; the comparisons settle it exactly.
    guess = tf.clip_by_value(
        tf.cast(tf.floor(probabilities * 100.0), tf.int32), 0, len(COUNT_THRESHOLDS)
    )
    return (
        guess
        - tf.cast(probabilities < tf.gather(thresholds, guess), tf.int32)
        + tf.cast(probabilities >= tf.gather(thresholds, guess + 1), tf.int32)
    )


def score_bins(logits, labels, code_slots) -> dict:
    """One batch's scores as count indices and histograms over all codes (on the device).

    Args:
      logits: float32 `[batch, num_labels]`.
      labels: `[batch, num_labels]`, 1 where a code is true.
      code_slots: int32 `[num_labels]`, each code's row in the per-code counts
        (`SplitCounts.code_slots`), -1 for codes not counted one by one.

    Returns a dict of int32 tensors:
      reached: `[batch, num_labels]`, `slot * 101 + k` where `sigmoid(logit)`
        reaches k >= 1 of `COUNT_THRESHOLDS`; -1 where k is 0 or the code has no slot;
      macro_bin: `[batch, num_labels]`, `slot * MACRO_BINS + ` the logit's coarse
        bin, -1 where the code has no slot;
      micro_all, micro_positive: `[MICRO_BINS]`, the batch's scores (all, and
        those of true codes) per fine logit bin;
      reached_micro_all, reached_micro_positive: `[101]`, the same per number of
        thresholds reached.
    Only float32 and int32 arithmetic, no data-dependent shape: it runs on any device.
    """
    reached = thresholds_reached(tf.sigmoid(logits))
    scaled = (logits + LOGIT_RANGE) * (MICRO_BINS / (2 * LOGIT_RANGE))
    micro_bin = tf.cast(tf.clip_by_value(tf.floor(scaled), 0.0, MICRO_BINS - 1.0), tf.int32)
    slots = tf.cast(code_slots, tf.int32)[tf.newaxis, :]
    positive = tf.cast(labels > 0, tf.float32)

    def histogram(values, size, weights=None):
        counts = tf.math.bincount(values, weights=weights, minlength=size, maxlength=size)
        return tf.cast(counts, tf.int32)

    return dict(
        reached=tf.where((slots >= 0) & (reached > 0), slots * REACHED_COLUMNS + reached, -1),
        macro_bin=tf.where(
            slots >= 0, slots * MACRO_BINS + micro_bin // (MICRO_BINS // MACRO_BINS), -1
        ),
        micro_all=histogram(micro_bin, MICRO_BINS),
        micro_positive=histogram(micro_bin, MICRO_BINS, positive),
        reached_micro_all=histogram(reached, REACHED_COLUMNS),
        reached_micro_positive=histogram(reached, REACHED_COLUMNS, positive),
    )


class SplitCounts:
    """Counts of one split's scores (see the module docstring).

    `tracked_codes` are the codes counted one by one: those with a positive
    note in the split (others would raise in `add`). `add` takes one batch of
    `score_bins` output with its labels, top-scored codes and note indices;
    `counts()` returns every count as a dict of arrays, which add up over
    batches, replicas and workers alike.
    """

    def __init__(self, num_labels: int, num_notes: int, tracked_codes):
        self.num_labels = num_labels
        self.tracked_codes = np.asarray(tracked_codes, np.int64)
        # A code's row in the per-code counts, -1 for codes not tracked (score_bins' input).
        self.code_slots = np.full([num_labels], -1, np.int32)
        self.code_slots[self.tracked_codes] = np.arange(len(self.tracked_codes))
        rows = len(self.tracked_codes)
        self._counts = dict(
            # [row, k]: notes whose probability reaches exactly k of COUNT_THRESHOLDS (k = 0
            # is filled in by counts(): it is what the other columns leave of the notes).
            reached_all=np.zeros([rows, REACHED_COLUMNS], np.int64),
            reached_positive=np.zeros([rows, REACHED_COLUMNS], np.int64),
            # [row, bin]: notes per coarse logit bin.
            macro_all=np.zeros([rows, MACRO_BINS], np.int32),
            macro_positive=np.zeros([rows, MACRO_BINS], np.int32),
            micro_all=np.zeros([MICRO_BINS], np.int64),
            micro_positive=np.zeros([MICRO_BINS], np.int64),
            reached_micro_all=np.zeros([REACHED_COLUMNS], np.int64),
            reached_micro_positive=np.zeros([REACHED_COLUMNS], np.int64),
            # Sum over notes of the share of true codes among the k best, per PRECISION_AT.
            precision_at_k=np.zeros([len(metrics.PRECISION_AT)], np.float64),
            # How often each note was counted: every entry must end at 1.
            note_counts=np.zeros([num_notes], np.int64),
        )

    def add(self, bins: dict, labels, top_codes, note_index) -> None:
        """Counts one batch.

        Args:
          bins: `score_bins` output, as NumPy arrays.
          labels: `[batch, num_labels]`, 1 where a code is true.
          top_codes: int `[batch, >= max(metrics.PRECISION_AT)]`, codes by falling score.
          note_index: int `[batch]`.
        """
        counts = self._counts
        is_true = np.asarray(labels) > 0
        notes, codes = np.nonzero(is_true)
        if (self.code_slots[codes] < 0).any():
            untracked = sorted(set(codes[self.code_slots[codes] < 0].tolist()))[:10]
            raise ValueError(f"codes {untracked} are true in this split but not tracked")
        positive_reached = bins["reached"][notes, codes]
        np.add.at(
            counts["reached_positive"].reshape(-1), positive_reached[positive_reached >= 0], 1
        )
        np.add.at(counts["macro_positive"].reshape(-1), bins["macro_bin"][notes, codes], 1)
        for name in ("micro_all", "micro_positive", "reached_micro_all", "reached_micro_positive"):
            counts[name] += bins[name]
        hits = np.cumsum(np.take_along_axis(is_true, top_codes, axis=1), axis=1)
        for position, k in enumerate(metrics.PRECISION_AT):
            k = min(k, self.num_labels)
            counts["precision_at_k"][position] += np.sum(hits[:, k - 1] / k)
        np.add.at(counts["note_counts"], note_index, 1)
        # ufunc.at with matching dtypes: in place, no temporary of the counts' size.
        reached, macro_bin = bins["reached"], bins["macro_bin"]
        np.add.at(counts["reached_all"].reshape(-1), reached[reached >= 0], np.int64(1))
        np.add.at(counts["macro_all"].reshape(-1), macro_bin[macro_bin >= 0], np.int32(1))

    def counts(self) -> dict:
        """The counts, column 0 of the reached counts filled in."""
        counts = dict(self._counts)
        for name, notes in (
            ("reached_all", counts["note_counts"].sum()),
            ("reached_positive", counts["macro_positive"].sum(1)),
        ):
            counts[name] = counts[name].copy()
            counts[name][:, 0] = notes - counts[name][:, 1:].sum(1)
        return counts


def check_coverage(counts: dict, split: str) -> None:
    """Raises unless every note of the split was counted exactly once."""
    note_counts = counts["note_counts"]
    if not (note_counts == 1).all():
        wrong = np.flatnonzero(note_counts != 1)[:10].tolist()
        raise RuntimeError(
            f"{split}: notes {wrong} were counted {note_counts[wrong].tolist()} times, not "
            "once each: the input was not split evenly over the replicas"
        )


def _at_or_above(histogram: np.ndarray) -> np.ndarray:
    """Counts at or above each bin along the last axis: `out[..., j] = sum(histogram[..., j:])`."""
    return np.flip(np.cumsum(np.flip(histogram, -1), -1), -1)


def threshold_counts(counts: dict) -> tuple:
    """`(true_positives, predicted, positives)`: micro counts at 0, then every count threshold."""
    predicted = _at_or_above(counts["reached_micro_all"])
    true_positives = _at_or_above(counts["reached_micro_positive"])
    return true_positives, predicted, int(true_positives[0])


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


def _average_precision(positive: np.ndarray, total: np.ndarray) -> float:
    """Step-wise area under the PR curve from score histograms, one threshold per bin."""
    true_positives = _at_or_above(positive)
    predicted = _at_or_above(total)
    precision = metrics.ratio(true_positives, predicted)
    return float(np.sum(precision * positive) / positive.sum())


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
    """All metrics of a split at `threshold` (a grid value), with `metrics.evaluate`'s keys.

    `num_labels` is the size of the label space the CAML-style macro averages run over (every
    code of the labels file, not only the tracked ones).

    `unseen_rows` (bool, one per tracked code) marks the codes without a
    training note: `unseen_code_recall` is the recall on their (note, code)
    pairs, of which there are `unseen_code_pairs`.
    """
    column = _grid_index(threshold)
    code_counts = _code_counts(counts)
    true_positives, predicted, positives = threshold_counts(counts)
    precision = float(metrics.ratio(true_positives[column], predicted[column]))
    recall = float(metrics.ratio(true_positives[column], positives))
    micro_all, micro_positive = counts["micro_all"], counts["micro_positive"]
    num_notes = int(counts["note_counts"].sum())
    results = dict(
        threshold=float(threshold),
        micro_f1=float(metrics.f1_score(precision, recall)),
        micro_precision=precision,
        micro_recall=recall,
        micro_pr_auc=(_average_precision(micro_positive, micro_all) if positives else float("nan")),
        micro_roc_auc=float(
            _roc_auc(micro_positive, micro_all - micro_positive)
            if 0 < positives < micro_all.sum()
            else float("nan")
        ),
        macro_f1=_macro_f1(code_counts, column),
        macro_roc_auc=_macro_roc_auc(counts),
        num_notes=num_notes,
    )
    caml = _caml_macro(code_counts, column, num_labels)
    results.update(zip(("caml_macro_precision", "caml_macro_recall", "caml_macro_f1"), caml))
    for position, k in enumerate(metrics.PRECISION_AT):
        results[f"precision_at_{k}"] = float(counts["precision_at_k"][position] / num_notes)
    if unseen_rows is not None:
        reached = _at_or_above(counts["reached_positive"][np.asarray(unseen_rows, bool)])
        results["unseen_code_pairs"] = int(reached[:, 0].sum())
        results["unseen_code_recall"] = float(
            metrics.ratio(reached[:, column].sum(), reached[:, 0].sum())
        )
    return results


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
    """Mean per-code F1 at a grid column over codes with a positive note."""
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
    """`metrics.caml_macro_precision_recall_f1` from the counts: a code that is not tracked has
    no true positive, so it adds 0 to both sums and only counts in `num_labels`."""
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


TOP_CODES = 15  # codes per note for precision at k and the predictions file


class PredictionsWriter:
    """Streams every note's top codes to a JSON-lines file, for error analysis.

    A line per note: `split`, `note_id`, `codes` (its true codes) and
    `top_codes` (`[code, probability]` pairs, most probable first). The file
    appears complete at `close()` (written to a temporary name, then renamed).
    With `path` None nothing is written (the other tasks of a distributed run).
    """

    def __init__(self, path: str | None, labels: list, dataset_dir: str):
        self.path = path
        self.labels = labels
        self.dataset_dir = dataset_dir
        self._notes = {}  # split -> [(note_id, codes)] in note order
        self._file = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._temporary = f"{path}.tmp-{os.getpid()}"
            self._file = open(self._temporary, "w", encoding="utf-8")

    def write(self, split: str, top_codes, top_probabilities, note_index) -> None:
        """One batch: int `[batch, k]` codes, float `[batch, k]` probabilities, int `[batch]`."""
        if self._file is None:
            return
        if split not in self._notes:
            self._notes[split] = _note_ids_and_codes(data.notes_path(self.dataset_dir, split))
        for codes, probabilities, index in zip(top_codes, top_probabilities, note_index):
            note_id, true_codes = self._notes[split][index]
            line = dict(
                split=split,
                note_id=note_id,
                codes=true_codes,
                top_codes=[
                    [self.labels[code], round(float(probability), 6)]
                    for code, probability in zip(codes, probabilities)
                ],
            )
            self._file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            os.replace(self._temporary, self.path)
            self._file = None


def _note_ids_and_codes(path: str) -> list:
    """`(note_id, codes)` of every note of a split file, without keeping the texts."""
    with gzip.open(path, "rt", encoding="utf-8") as notes_file:
        return [(note["note_id"], note["codes"]) for note in map(json.loads, notes_file)]
