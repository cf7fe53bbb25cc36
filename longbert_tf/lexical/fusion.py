"""The neural logits fused with the term matcher's features (`term_matcher.MATCH_FEATURES`).

A (note, code) pair is a candidate when the model's logit exceeds
`CANDIDATE_LOGIT` or the matcher found a code-book term, training variant or
evidence term of the code in the note, affirmed or negated. A candidate's fused
logit is a logistic regression over `FUSION_INPUTS`; every other pair keeps its
logit shifted by `NON_CANDIDATE_SHIFT`, below the candidates, in the model's
order. The
regression is fitted on held-out notes (`fit`), never on the notes it is
measured on.
"""

import dataclasses
import json

import numpy as np
from sklearn.linear_model import LogisticRegression

from longbert_tf import files
from longbert_tf.framework import tf
from longbert_tf.lexical.term_matcher import MATCH_FEATURES, NEGATED_FEATURES

CANDIDATE_LOGIT = -6.0
NON_CANDIDATE_SHIFT = -30.0
# The model's logit enters the regression clipped to [-FUSION_LOGIT_CLIP, FUSION_LOGIT_CLIP].
FUSION_LOGIT_CLIP = 12.0
FUSION_INPUTS = (
    "logit",
    "trained",
    "log_train_notes",
    *MATCH_FEATURES,
    "logit_x_title",
    "trained_x_title",
    "trained_x_title_words",
)
_TITLE, _WORDS = (MATCH_FEATURES.index(name) for name in ("title", "title_words"))
# A match of any kind, affirmed or negated.
_FOUND = [
    MATCH_FEATURES.index(name)
    for name in ("title", "variant_precision", "evidence_precision", *NEGATED_FEATURES)
]


def fusion_inputs(logits, match_features, train_notes) -> tuple:
    """Logits `[batch, num_labels]`, match features `[batch, num_labels, MATCH_FEATURES]` and
    the codes' training notes `[num_labels]` -> `FUSION_INPUTS` float32
    `[batch, num_labels, FUSION_INPUTS]` and the candidate mask bool `[batch, num_labels]`."""
    logit = tf.clip_by_value(tf.cast(logits, tf.float32), -FUSION_LOGIT_CLIP, FUSION_LOGIT_CLIP)
    match_features = tf.cast(match_features, tf.float32)
    notes = tf.broadcast_to(tf.cast(train_notes, tf.float32), tf.shape(logit))
    trained = tf.cast(notes > 0, tf.float32)
    title = match_features[..., _TITLE]
    inputs = tf.concat(
        [
            tf.stack([logit, trained, tf.math.log1p(notes)], axis=-1),
            match_features,
            tf.stack(
                [
                    logit * title,
                    trained * title,
                    trained * match_features[..., _WORDS],
                ],
                axis=-1,
            ),
        ],
        axis=-1,
    )
    found = tf.reduce_any(tf.gather(match_features, _FOUND, axis=-1) > 0, axis=-1)
    candidate = (logit > CANDIDATE_LOGIT) | found
    return inputs, candidate


@dataclasses.dataclass
class Fusion:
    """A fitted fusion: `weights` float32 `[FUSION_INPUTS]`, `bias`, each code's training
    notes `train_notes` `[num_labels]`, and the `threshold` (a probability) tuned on the
    held-out notes' fused scores."""

    weights: np.ndarray
    bias: float
    train_notes: np.ndarray
    threshold: float = 0.5

    def logits(self, logits, match_features, weights=None, bias=None):
        """Fused logits `[batch, num_labels]`; `weights` `[batch, FUSION_INPUTS]` and `bias`
        `[batch]` give each note its own regression (cross-validation) instead of this one."""
        inputs, candidate = fusion_inputs(logits, match_features, self.train_notes)
        if weights is None:
            fused = tf.linalg.matvec(inputs, tf.constant(self.weights, tf.float32)) + self.bias
        else:
            fused = tf.einsum("bcd,bd->bc", inputs, weights) + bias[:, tf.newaxis]
        shifted = tf.cast(logits, tf.float32) + NON_CANDIDATE_SHIFT
        return tf.where(candidate, fused, shifted)

    def save(self, path: str, **details) -> None:
        files.write_json(
            path,
            dict(
                inputs=list(FUSION_INPUTS),
                weights=[float(w) for w in self.weights],
                bias=float(self.bias),
                threshold=float(self.threshold),
                train_notes=[int(notes) for notes in self.train_notes],
                **details,
            ),
        )

    @classmethod
    def load(cls, path: str) -> "Fusion":
        with open(path) as fusion_file:
            saved = json.load(fusion_file)
        if saved.get("inputs") != list(FUSION_INPUTS):
            raise ValueError(
                f"{path}: fusion inputs {saved.get('inputs')}, expected {list(FUSION_INPUTS)}; "
                "fit it again (experiments.fuse)"
            )
        return cls(
            np.asarray(saved["weights"], np.float32),
            saved["bias"],
            np.asarray(saved["train_notes"], np.int64),
            saved["threshold"],
        )


def fit(inputs: np.ndarray, labels: np.ndarray, train_notes, regularization=1.0) -> Fusion:
    """A logistic regression of `labels` bool `[rows]` on candidate `inputs` `[rows,
    FUSION_INPUTS]` (made with `train_notes`), fitted on standardized inputs (L2 strength
    1 / `regularization`) and returned in the inputs' own units."""
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        raise ValueError(f"fusion: {labels.size} candidate pairs all of one class; cannot fit")
    mean, scale = inputs.mean(axis=0), inputs.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    model = LogisticRegression(C=regularization, max_iter=5000)
    model.fit((inputs - mean) / scale, labels)
    weights = model.coef_[0] / scale
    bias = float(model.intercept_[0] - weights @ mean)
    return Fusion(weights.astype(np.float32), bias, np.asarray(train_notes, np.int64))
