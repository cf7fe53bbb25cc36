"""What every metric of a split shares: the threshold grid, the precision-at-k cut-offs, and
ratios that are 0 where their denominator is.

A code is predicted when its probability is >= the threshold. Ratios with a
zero denominator are 0 (precision with no predictions, F1 with P = R = 0); an
AUC that is undefined (no positives or no negatives) is NaN. The metrics
themselves are computed from streamed counts (`split_metrics`); the tests hold
them to scikit-learn on whole arrays.
"""

import numpy as np

THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)
PRECISION_AT = (5, 8, 15)


def ratio(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def f1_score(precision, recall):
    return ratio(2 * precision * recall, precision + recall)
