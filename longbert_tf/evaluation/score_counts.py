"""A split's scores folded batch by batch into counts of a fixed size (see `split_metrics`).

Nothing of size notes x codes is held. On the device each score becomes two
integers (`score_bins`): how many thresholds of `metrics.THRESHOLD_GRID` (and
1.0) its probability reaches, and its bin among `MICRO_BINS` equal bins of
the logit over [-HISTOGRAM_LOGIT_RANGE, HISTOGRAM_LOGIT_RANGE] (beyond it: the
end bins); the device also counts them over all codes (the logit bins also over the codes
without a training note alone). On the host `SplitCounts` counts
them per code, for all notes and for the positive ones, for the codes that
have a positive note in the split (`tracked_codes`): the per-code macro
averages run over those alone, and the others have no true positive, so they
add 0 to the sums of the CAML-style macro averages and only count in their
number of codes. Memory: 2 x tracked codes x (MACRO_BINS + 101) counts and
one batch.
"""

import numpy as np

from longbert_tf.evaluation import metrics
from longbert_tf.framework import tf

HISTOGRAM_LOGIT_RANGE = 16.0
MICRO_BINS = 1 << 16
MACRO_BINS = 1 << 10
# Count thresholds: the tuning grid 0.01 ... 0.99, then 1.0 (the PR curve's last point).
COUNT_THRESHOLDS = np.append(metrics.THRESHOLD_GRID, 1.0)
REACHED_COLUMNS = len(COUNT_THRESHOLDS) + 1  # 0 to 100 thresholds reached
# score_bins' histograms over all codes of a batch: counts add up over batches as they are.
HISTOGRAM_NAMES = (
    "micro_all",
    "micro_positive",
    "reached_micro_all",
    "reached_micro_positive",
    "untrained_all",
    "untrained_positive",
)
# score_bins' keys
BIN_NAMES = ("reached", "macro_bin", *HISTOGRAM_NAMES, "precision_sum")


def float32_at_least(values) -> np.ndarray:
    """The smallest float32 >= each float64 value: for a float32 p, `p >= t` in float64 and
    `p >= float32_at_least(t)` in float32 agree (counting and serving select alike)."""
    rounded = np.asarray(values, np.float64).astype(np.float32)
    return np.where(rounded < values, np.nextafter(rounded, np.float32(np.inf)), rounded)


# reached(p) = #{t in COUNT_THRESHOLDS: p >= t}; 0 and infinity bracket the thresholds.
_THRESHOLDS_32 = np.concatenate([[0.0], float32_at_least(COUNT_THRESHOLDS), [np.inf]]).astype(
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


def true_code_precision_sums(logits, labels):
    """float32 `[batch]`: per note, the sum over its true codes g of the precision among the
    codes scored at least as high as g, `#{true c: s_c >= s_g} / #{c: s_c >= s_g}` (ties
    ranked together, as scikit-learn's `average_precision_score`); divided by the note's number
    of true codes it is the note's average precision.

    Codes are ranked by logit: the float32 sigmoid can round one logit to two neighbouring
    probabilities in different lanes of a kernel, which would break ties.
    """
    num_labels = tf.shape(logits)[1]
    is_true = labels > 0
    true_only = tf.where(is_true, logits, -np.inf)
    # A sorted row's searchsorted position of s counts the entries below s.
    at_or_above = num_labels - tf.searchsorted(tf.sort(logits), logits)
    true_at_or_above = num_labels - tf.searchsorted(tf.sort(true_only), logits)
    precision = tf.cast(true_at_or_above, tf.float32) / tf.cast(at_or_above, tf.float32)
    return tf.reduce_sum(tf.where(is_true, precision, 0.0), axis=1)


def score_bins(logits, labels, code_slots, untrained) -> dict:
    """One batch's scores as count indices and histograms over all codes (on the device).

    Args:
      logits: float32 `[batch, num_labels]`.
      labels: `[batch, num_labels]`, 1 where a code is true.
      code_slots: int32 `[num_labels]`, each code's row in the per-code counts
        (`SplitCounts.code_slots`), -1 for codes not counted one by one.
      untrained: bool `[num_labels]`, True for the codes without a training note
        (`SplitCounts.untrained`).

    Returns a dict of int32 tensors:
      reached: `[batch, num_labels]`, `slot * 101 + k` where `sigmoid(logit)`
        reaches k >= 1 of `COUNT_THRESHOLDS`; -1 where k is 0 or the code has no slot;
      macro_bin: `[batch, num_labels]`, `slot * MACRO_BINS + ` the logit's coarse
        bin, -1 where the code has no slot;
      micro_all, micro_positive: `[MICRO_BINS]`, the batch's scores (all, and
        those of true codes) per fine logit bin;
      reached_micro_all, reached_micro_positive: `[101]`, the same per number of
        thresholds reached;
      untrained_all, untrained_positive: `[MICRO_BINS]`, `micro_all` and
        `micro_positive` of the untrained codes alone;
      precision_sum: float32 `[batch]`, `true_code_precision_sums`.
    Only float32 and int32 arithmetic, no data-dependent shape: it runs on any device.
    """
    reached = thresholds_reached(tf.sigmoid(logits))
    scaled = (logits + HISTOGRAM_LOGIT_RANGE) * (MICRO_BINS / (2 * HISTOGRAM_LOGIT_RANGE))
    micro_bin = tf.cast(tf.clip_by_value(tf.floor(scaled), 0.0, MICRO_BINS - 1.0), tf.int32)
    slots = tf.cast(code_slots, tf.int32)[tf.newaxis, :]
    positive = tf.cast(labels > 0, tf.float32)
    untrained = tf.cast(untrained, tf.float32)[tf.newaxis, :]

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
        untrained_all=histogram(micro_bin, MICRO_BINS, untrained * tf.ones_like(positive)),
        untrained_positive=histogram(micro_bin, MICRO_BINS, untrained * positive),
        precision_sum=true_code_precision_sums(logits, labels),
    )


class SplitCounts:
    """Counts of one split's scores (see the module docstring).

    `tracked_codes` are the codes counted one by one: those with a positive
    note in the split (others would raise in `add`). `untrained` (bool
    `[num_labels]`, default none) marks the codes without a training note,
    whose fine logit histograms are also kept apart. `outside_codes` (int
    `[num_notes]`, default none) counts each note's gold codes outside the
    label space: no score covers them, so every metric counts them as missed
    (false negatives, never retrieved in a note's ranking). `add` takes one batch of
    `score_bins` output with its labels, top-scored codes and note indices;
    `counts()` returns every count as a dict of arrays, which add up over
    batches, replicas and workers alike.
    """

    def __init__(
        self, num_labels: int, num_notes: int, tracked_codes, outside_codes=None, untrained=None
    ):
        self.num_labels = num_labels
        self.untrained = (
            np.zeros([num_labels], bool) if untrained is None else np.asarray(untrained, bool)
        )
        self.tracked_codes = np.asarray(tracked_codes, np.int64)
        self.outside_codes = (
            np.zeros([num_notes], np.int64) if outside_codes is None else np.asarray(outside_codes)
        )
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
            # The fine logit bins of the untrained codes alone (their offset is fitted on them).
            untrained_all=np.zeros([MICRO_BINS], np.int64),
            untrained_positive=np.zeros([MICRO_BINS], np.int64),
            # Sum over notes of the share of true codes among the k best, per PRECISION_AT.
            precision_at_k=np.zeros([len(metrics.PRECISION_AT)], np.float64),
            # Sum of the average precisions of the notes with a gold code, and their number.
            average_precision=np.zeros([1], np.float64),
            notes_with_codes=np.zeros([1], np.int64),
            # Gold (note, code) pairs whose code is outside the label space.
            outside_pairs=np.zeros([1], np.int64),
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
        for name in HISTOGRAM_NAMES:
            counts[name] += bins[name]
        hits = np.cumsum(np.take_along_axis(is_true, top_codes, axis=1), axis=1)
        for position, k in enumerate(metrics.PRECISION_AT):
            k = min(k, self.num_labels)
            counts["precision_at_k"][position] += np.sum(hits[:, k - 1] / k)
        outside = self.outside_codes[note_index]
        gold_codes = is_true.sum(axis=1) + outside
        with_codes = gold_codes > 0
        counts["average_precision"] += np.sum(
            bins["precision_sum"][with_codes] / gold_codes[with_codes]
        )
        counts["notes_with_codes"] += with_codes.sum()
        counts["outside_pairs"] += outside.sum()
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
