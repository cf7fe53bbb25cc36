"""Whether an ensemble of finished runs pays: the mean of their probabilities against each alone.

    python benchmarks/ensemble.py --model_dir=runs/a --model_dir=runs/b --model_dir=runs/c

The runs share a dataset and label list and may differ in anything else (seed, sequence
length, compute dtype). Each run's best checkpoint scores dev and test once; an ensemble's
probability of a (note, code) is its members' mean. Every member alone and every subset of two
or more is evaluated by the package's streamed metrics (threshold tuned on dev, test at dev's
threshold, gold codes outside the label space counted as missed), one line each. Choose by dev.
"""

import itertools
import os

import numpy as np
from absl import app, flags

from longbert_tf import run_folder
from longbert_tf.evaluation import split_metrics
from longbert_tf.framework import tf
from longbert_tf.training import experiment as experiment_lib

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("model_dir", None, "A finished run (two or more).", required=True)
SPLITS = ("dev", "test")


class NoteScores(tf.Module):
    """Fixed logits `[notes, codes]` served by note: `(features) -> [batch, codes]`."""

    def __init__(self, logits: np.ndarray):
        super().__init__(name="note_scores")
        self.logits = tf.constant(logits, tf.float32)

    def __call__(self, features, training=False):
        return tf.gather(self.logits, tf.cast(features["note_index"], tf.int32))


def split_logits(experiment, split: str) -> np.ndarray:
    """The experiment's logits `[notes, codes]` of `split`, in the split's note order."""
    score = tf.function(
        lambda features: experiment.model(features, training=False), reduce_retracing=True
    )
    logits, note_index = [], []
    for features, _ in experiment.dataset(split):
        logits.append(score(features).numpy().astype(np.float32))
        note_index.append(features["note_index"].numpy())
    return np.concatenate(logits)[np.argsort(np.concatenate(note_index))]


def member_logits(model_dir: str) -> tuple:
    """`(experiment, {split: logits [notes, codes]})` of a run's best checkpoint."""
    experiment = experiment_lib.build_experiment(run_folder.saved_config(model_dir))
    best = tf.train.latest_checkpoint(os.path.join(model_dir, run_folder.BEST_DIR))
    tf.train.Checkpoint(model=experiment.model).restore(best).expect_partial()
    return experiment, {split: split_logits(experiment, split) for split in SPLITS}


def mean_logits(logits: list) -> np.ndarray:
    """The logits of the mean of the members' probabilities (a lone member's own logits)."""
    if len(logits) == 1:
        return logits[0]
    mean = np.mean([1 / (1 + np.exp(-member.astype(np.float64))) for member in logits], axis=0)
    mean = np.clip(mean, 1e-12, 1 - 1e-12)
    return (np.log(mean) - np.log1p(-mean)).astype(np.float32)


def same_notes(experiment, other) -> bool:
    """Whether two experiments hold the same labels and the same codes in every split."""
    if experiment.labels != other.labels:
        return False
    for split in ("train", *SPLITS):
        own, theirs = experiment.inputs.splits[split], other.inputs.splits[split]
        if own.num_notes != theirs.num_notes or not np.array_equal(
            own.label_counts, theirs.label_counts
        ):
            return False
        if not np.array_equal(own.outside_codes, theirs.outside_codes):
            return False
    return True


def evaluate(experiment, logits: dict) -> dict:
    """Dev and test metrics of `{split: logits}` at the threshold tuned on dev."""
    counts = {}
    for split in SPLITS:
        scorer = experiment_lib.Experiment(
            experiment.inputs, NoteScores(logits[split]), experiment.strategy
        )
        counts[split] = scorer.count(split)
    threshold, _ = split_metrics.tune_threshold(counts["dev"])
    return {split: experiment.metrics(split, counts[split], threshold) for split in SPLITS}


def main(argv):
    del argv
    if len(FLAGS.model_dir) < 2:
        raise app.UsageError("an ensemble needs two or more --model_dir")
    members = [member_logits(model_dir) for model_dir in FLAGS.model_dir]
    first = members[0][0]
    for model_dir, (experiment, _) in zip(FLAGS.model_dir, members):
        if not same_notes(experiment, first):
            raise ValueError(
                f"{model_dir} was trained or scored on other notes or codes than "
                f"{FLAGS.model_dir[0]}: an ensemble averages the same codes of the same notes"
            )
    for size in range(1, len(members) + 1):
        for subset in itertools.combinations(range(len(members)), size):
            results = evaluate(
                first,
                {split: mean_logits([members[i][1][split] for i in subset]) for split in SPLITS},
            )
            print(
                " + ".join(FLAGS.model_dir[i] for i in subset)
                + ": "
                + ", ".join(
                    f"{split} micro F1 {results[split]['micro_f1']:.4f} MAP "
                    f"{results[split]['map']:.4f}"
                    for split in SPLITS
                ),
                flush=True,
            )


if __name__ == "__main__":
    app.run(main)
