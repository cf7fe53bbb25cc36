"""Measuring a model: streamed counts, metrics, predictions and result tables.

- `score_counts`: a split's scores as fixed-size histograms and per-code counts, never a
  `[notes, codes]` array on the host; `split_metrics`: the threshold tuned on dev and every
  metric from those counts; `metrics`: what they share (the threshold grid, the P@k
  cut-offs, zero-safe ratios).
- `predictions`: every note's top codes as JSON lines; `report`: result tables.

Imports `data` and the base modules.
"""

from longbert_tf.evaluation.predictions import PredictionsWriter
from longbert_tf.evaluation.score_counts import SplitCounts
from longbert_tf.evaluation.split_metrics import evaluate, tune_threshold

__all__ = ["PredictionsWriter", "SplitCounts", "evaluate", "tune_threshold"]
