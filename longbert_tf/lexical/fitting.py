"""A finished run's codes fused with lexical code matching (`fusion`), fitted on dev.

`fit_run_fusion(model_dir)` builds the run's term index from its dataset's
code descriptions (and, for ICD-10-CM, the code book's titles and inclusion
terms) and its training notes (`code_terms.build`), matches dev and test, and
fits the fusion on the dev notes' candidate pairs under the run's best
weights. Dev is scored by `folds`-fold cross-validation over its notes: each
note's fused scores come from a regression fitted on the other folds, and the
threshold is tuned on those out-of-fold scores. The fusion written for test and
serving is fitted on all of dev. Everything goes to `model_dir/fusion/`
(`run_folder.FUSION_DIR`): `term_index.json`, `fusion.json` (weights, threshold,
the metrics, the checkpoint fitted on).
"""

import dataclasses
import json
import os
import time

import numpy as np
from absl import logging

from longbert_tf import presets, run_folder
from longbert_tf.data import dataset, descriptions
from longbert_tf.evaluation import split_metrics
from longbert_tf.framework import tf
from longbert_tf.lexical import code_terms, fusion, term_matcher
from longbert_tf.training import experiment as experiment_lib

MATCH_BATCH = 16


def stale_fusion(model_dir: str) -> str:
    """Why the run's fusion does not belong to its best checkpoint ("" when it does, or when
    the run has none): fitted on another checkpoint than the best."""
    path = os.path.join(model_dir, run_folder.FUSION_DIR, run_folder.FUSION_FILE)
    if not os.path.exists(path):
        return ""
    with open(path) as fusion_file:
        fitted_on = os.path.basename(json.load(fusion_file).get("checkpoint", ""))
    best = os.path.basename(
        tf.train.latest_checkpoint(os.path.join(model_dir, run_folder.BEST_DIR)) or ""
    )
    if fitted_on == best:
        return ""
    fitted_on = fitted_on or "an unknown checkpoint"
    return f"{path} was fitted on {fitted_on}, not on the run's best, {best}"


def code_texts(dataset_dir: str, labels: list, code_system: str) -> list:
    """Per label its code-book texts: the dataset's description and, for ICD-10-CM, the
    title and inclusion terms (`descriptions.icd10cm_terms`)."""
    path = os.path.join(dataset_dir, descriptions.DESCRIPTIONS_FILE)
    known = descriptions.read_descriptions(path) if os.path.exists(path) else {}
    texts = []
    for code in labels:
        own = [known[code]] if known.get(code) else []
        book = descriptions.icd10cm_terms(code) if code_system == presets.ICD10CM else []
        texts.append(sorted(set(own + book)))
    return texts


def build_index(dataset_dir: str, labels: list, code_system: str) -> term_matcher.TermIndex:
    """The term index of a dataset's label space, mined from its training notes only."""
    train = dataset.read_notes(dataset_dir, "train")
    return code_terms.build(
        code_texts(dataset_dir, labels, code_system),
        list(train.text),
        dataset.label_ids(train, labels),
    )


@dataclasses.dataclass
class SplitMatches:
    """A split's affirmed or negated matches, per note in the split's order: `codes` ragged
    int32 `[notes, (matches)]`, `features` ragged float32 `[notes, (matches), MATCH_FEATURES]`."""

    codes: tf.RaggedTensor
    features: tf.RaggedTensor

    def dense(self, note_index, num_labels: int):
        """Match features `[batch, num_labels, MATCH_FEATURES]` of notes `note_index` `[batch]`."""
        codes = tf.gather(self.codes, note_index)
        rows = tf.cast(codes.value_rowids(), tf.int32)
        scatter_index = tf.stack([rows, codes.flat_values], axis=1)
        shape = [tf.shape(note_index)[0], num_labels, len(term_matcher.MATCH_FEATURES)]
        return tf.scatter_nd(scatter_index, tf.gather(self.features, note_index).flat_values, shape)


def match_splits(matcher: term_matcher.TermMatcher, split_texts: dict) -> dict:
    """`{split: SplitMatches}` of `{split: texts}`: every note's matches (the pairs with any
    non-zero feature). The matcher is traced once, for every split."""
    match = tf.function(matcher, input_signature=[tf.TensorSpec([None], tf.string)])
    matches = {}
    for split, texts in split_texts.items():
        codes, features = [], []
        for start in range(0, len(texts), MATCH_BATCH):
            batch = match(tf.constant(texts[start : start + MATCH_BATCH]))["features"].numpy()
            for note in batch:
                found = np.flatnonzero(note.any(axis=1))
                codes.append(found.astype(np.int32))
                features.append(note[found])
        flat_features = np.concatenate(features).reshape(-1, len(term_matcher.MATCH_FEATURES))
        matches[split] = SplitMatches(
            tf.ragged.constant(codes, dtype=tf.int32, ragged_rank=1),
            tf.RaggedTensor.from_row_lengths(
                tf.constant(flat_features), [len(note) for note in codes]
            ),
        )
    return matches


class FusedModel(tf.Module):
    """A run's model whose logits are fused with a split's matches: `(features) -> [batch,
    num_labels]` fused logits. `note_weights` `[notes, FUSION_INPUTS]` and `note_biases`
    `[notes]`, when given, are each note's own regression (out-of-fold scores)."""

    def __init__(
        self,
        model,
        matches: SplitMatches,
        fitted: fusion.Fusion,
        note_weights=None,
        note_biases=None,
    ):
        super().__init__(name="fused_model")
        self.model, self.matches, self.fitted = model, matches, fitted
        self.num_labels = len(fitted.train_notes)
        self.note_weights = None if note_weights is None else tf.constant(note_weights, tf.float32)
        self.note_biases = None if note_biases is None else tf.constant(note_biases, tf.float32)

    def __call__(self, features, training=False):
        logits = self.model(features, training=False)
        note_index = tf.cast(features["note_index"], tf.int32)
        matches = self.matches.dense(note_index, self.num_labels)
        if self.note_weights is None:
            return self.fitted.logits(logits, matches)
        weights = tf.gather(self.note_weights, note_index)
        return self.fitted.logits(logits, matches, weights, tf.gather(self.note_biases, note_index))


def candidate_rows(experiment, split: str, matches: SplitMatches) -> tuple:
    """`(inputs [rows, FUSION_INPUTS], labels [rows], note_index [rows])` of a split's
    candidate pairs under the experiment's current weights."""
    train_notes = tf.constant(experiment.train_label_counts, tf.float32)

    @tf.function(reduce_retracing=True)
    def rows(features, labels):
        note_index = tf.cast(features["note_index"], tf.int32)
        logits = experiment.model(features, training=False)
        dense = matches.dense(note_index, len(experiment.labels))
        inputs, candidate = fusion.fusion_inputs(logits, dense, train_notes)
        where = tf.where(candidate)
        return (
            tf.gather_nd(inputs, where),
            tf.gather_nd(labels, where) > 0,
            tf.gather(note_index, where[:, 0]),
        )

    found = [rows(features, labels) for features, labels in experiment.dataset(split)]
    return tuple(np.concatenate([batch[part].numpy() for batch in found]) for part in range(3))


def _matched_run(model_dir: str, splits: tuple) -> tuple:
    """`(experiment, best, index, matches)` of a finished run: its experiment under its best
    checkpoint `best`, its term index, and `splits`' `SplitMatches`."""
    config = run_folder.saved_config(model_dir)
    if config is None or not os.path.exists(os.path.join(model_dir, run_folder.METRICS_FILE)):
        raise FileNotFoundError(f"{model_dir} holds no finished run (no {run_folder.METRICS_FILE})")
    experiment = experiment_lib.build_experiment(config)
    best = tf.train.latest_checkpoint(os.path.join(model_dir, run_folder.BEST_DIR))
    tf.train.Checkpoint(model=experiment.model).restore(best).expect_partial()
    started = time.time()
    index = build_index(config.dataset_dir, experiment.labels, config.preset.code_system)
    logging.info(
        "Term index: %d terms, %d pairs in %.1f s",
        len(index.term_keys),
        len(index.pair_codes),
        time.time() - started,
    )
    matcher = term_matcher.TermMatcher(index, len(experiment.labels))
    matches = match_splits(
        matcher,
        {split: list(dataset.read_notes(config.dataset_dir, split).text) for split in splits},
    )
    return experiment, best, index, matches


def _save(model_dir: str, index: term_matcher.TermIndex, fitted: fusion.Fusion, results) -> None:
    fusion_dir = os.path.join(model_dir, run_folder.FUSION_DIR)
    os.makedirs(fusion_dir, exist_ok=True)
    index.save(os.path.join(fusion_dir, run_folder.TERM_INDEX_FILE))
    fitted.save(os.path.join(fusion_dir, run_folder.FUSION_FILE), **results)


def fit_run_fusion(model_dir: str, folds: int = 5) -> dict:
    """Fits and scores a finished run's fusion (module docstring); returns its metrics."""
    if folds < 2:
        raise ValueError(f"folds={folds}: cross-validating the fusion on dev needs at least 2")
    experiment, best, index, matches = _matched_run(model_dir, ("dev", "test"))
    train_notes = experiment.train_label_counts
    inputs, labels, note_index = candidate_rows(experiment, "dev", matches["dev"])
    num_notes = experiment.inputs.splits["dev"].num_notes
    fold_of_note = np.random.default_rng(experiment.config.seed).permutation(num_notes) % folds
    note_weights = np.zeros([num_notes, len(fusion.FUSION_INPUTS)], np.float32)
    note_biases = np.zeros([num_notes], np.float32)
    for fold in range(folds):
        held_out = fold_of_note[note_index] == fold
        fold_fit = fusion.fit(inputs[~held_out], labels[~held_out], train_notes)
        note_weights[fold_of_note == fold] = fold_fit.weights
        note_biases[fold_of_note == fold] = fold_fit.bias
    fitted = fusion.fit(inputs, labels, train_notes)

    def evaluate(split, **weights):
        fused = FusedModel(experiment.model, matches[split], fitted, **weights)
        scored = experiment_lib.Experiment(experiment.inputs, fused, experiment.strategy)
        return scored, scored.count(split)

    scored, dev_counts = evaluate("dev", note_weights=note_weights, note_biases=note_biases)
    fitted.threshold, _ = split_metrics.tune_threshold(dev_counts)
    results = dict(
        dev=scored.metrics("dev", dev_counts, fitted.threshold),
        folds=folds,
        candidate_pairs=int(labels.size),
        checkpoint=best,
    )
    scored, test_counts = evaluate("test")
    results["test"] = scored.metrics("test", test_counts, fitted.threshold)
    _save(model_dir, index, fitted, results)
    return results


def carry_fusion(model_dir: str, selection_dir: str) -> dict:
    """Gives a final run (whose dev notes trained) the fusion and threshold of the run that
    chose its recipe with dev held out (`selection_dir`, fused): the final run's own term index
    and training-note counts, the selection's regression weights and threshold. Scores test;
    the `dev` figures are the selection's (cross-validated), kept under `selection_dev`."""
    selection_path = os.path.join(selection_dir, run_folder.FUSION_DIR, run_folder.FUSION_FILE)
    selection = fusion.Fusion.load(selection_path)
    with open(selection_path) as selection_file:
        selection_dev = json.load(selection_file)["dev"]
    experiment, best, index, matches = _matched_run(model_dir, ("test",))
    carried = fusion.Fusion(
        selection.weights, selection.bias, experiment.train_label_counts, selection.threshold
    )
    scored = experiment_lib.Experiment(
        experiment.inputs,
        FusedModel(experiment.model, matches["test"], carried),
        experiment.strategy,
    )
    results = dict(
        test=scored.metrics("test", scored.count("test"), carried.threshold),
        selection_dev=selection_dev,
        selection_run=os.path.abspath(selection_dir),
        checkpoint=best,
    )
    _save(model_dir, index, carried, results)
    return results
