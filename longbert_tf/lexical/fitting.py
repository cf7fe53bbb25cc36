"""A finished run's codes fused with lexical code matching (`fusion`), fitted on dev.

`fit_run_fusion(model_dir)` builds the run's term index from its dataset's
code descriptions (and, for ICD-10-CM, the code book's titles and inclusion
terms) and its training notes (`code_terms.build`), matches dev and test, and
fits the fusion on the dev notes' candidate pairs under the run's best
weights. Dev is scored by `folds`-fold cross-validation over its notes: each
note's fused scores come from a regression fitted on the other folds, and the
threshold is tuned on those out-of-fold scores. The fusion written for test and
serving is fitted on all of dev.

When dev's notes carry evidence (annotated mentions), they are training data
for the dictionary too, as they are for a final model trained on train and
dev: each dev fold is matched with an index mined from train and the other
folds, and test and serving with one mined from train and all of dev. The
dictionary alone is scored on the same matches: a code's score is the
precision of its best evidence term found in the note, affirmed or negated
(`dictionary_logits`).

The notes matched and mined can be another dataset's copy of the run's notes
(`match_dir`: the Spanish originals with their evidence for a run on the
English translation); `fusion.json` then names it, and such a fusion is
measured, not served (an export reads one text).

Everything goes to `model_dir/fusion/` (`run_folder.FUSION_DIR`):
`term_index.json`, `fusion.json` (weights, threshold, the metrics, the
dictionary's, the checkpoint fitted on) and `rankings.jsonl.gz`, every dev
(out-of-fold) and test note's `RANKED_CODES` best fused codes in the
`PredictionsWriter` format, for scorers that read rankings (CodiEsp's,
`experiments.codiesp_score`).
"""

import dataclasses
import json
import os
import time

import numpy as np
import pandas as pd
from absl import logging

from longbert_tf import presets, run_folder
from longbert_tf.data import dataset, dataset_summary, descriptions
from longbert_tf.evaluation import split_metrics
from longbert_tf.evaluation.predictions import PredictionsWriter
from longbert_tf.framework import tf
from longbert_tf.lexical import code_terms, fusion, languages, term_matcher
from longbert_tf.training import experiment as experiment_lib

MATCH_BATCH = 16
RANKED_CODES = 1000  # per note in the rankings file: the depth CodiEsp's MAP reads


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


def build_index(
    dataset_dir: str, labels: list, code_system: str, notes=None
) -> term_matcher.TermIndex:
    """The term index of a dataset's label space, in its notes' language
    (`dataset_summary.language`), mined from `notes` and their evidence (default: the
    training notes). The code book's terms (English) only index English notes."""
    notes = dataset.read_notes(dataset_dir, "train") if notes is None else notes
    language = languages.named(dataset_summary.language(dataset_dir))
    return code_terms.build(
        # The code book is English: notes in another language have no code-book terms, nor
        # variants of them.
        code_texts(dataset_dir, labels, code_system)
        if language == languages.ENGLISH
        else [[] for _ in labels],
        list(notes.text),
        dataset.label_ids(notes, labels),
        language,
        dataset.mention_texts(notes, labels),
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

    @classmethod
    def merged(cls, parts: list, positions: list) -> "SplitMatches":
        """One split's matches from `parts` (`SplitMatches` of subsets of its notes), whose
        notes are at `positions` (int arrays) of the split."""
        order = np.argsort(np.concatenate(positions))
        return cls(
            *(
                tf.gather(tf.concat([getattr(part, name) for part in parts], axis=0), order)
                for name in ("codes", "features")
            )
        )


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


_EVIDENCE = [
    term_matcher.MATCH_FEATURES.index(name) for name in ("evidence_precision", "evidence_negated")
]


def dictionary_logits(matches):
    """Match features `[batch, num_labels, MATCH_FEATURES]` -> the dictionary's logits
    `[batch, num_labels]`: the logit of its best evidence precision, -30 without a match."""
    precision = tf.reduce_max(tf.gather(matches, _EVIDENCE, axis=-1), axis=-1)
    logit = tf.math.log(precision) - tf.math.log1p(-tf.minimum(precision, 1 - 1e-6))
    return tf.where(precision > 0, logit, fusion.NON_CANDIDATE_SHIFT)


class DictionaryModel(tf.Module):
    """The evidence dictionary alone over a split's matches: `(features) -> [batch,
    num_labels]` `dictionary_logits`."""

    def __init__(self, matches: SplitMatches, num_labels: int):
        super().__init__(name="dictionary_model")
        self.matches, self.num_labels = matches, num_labels

    def __call__(self, features, training=False):
        note_index = tf.cast(features["note_index"], tf.int32)
        return dictionary_logits(self.matches.dense(note_index, self.num_labels))


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


def matched_notes(match_dir: str, dataset_dir: str, split: str) -> pd.DataFrame:
    """`split`'s notes as `match_dir` holds them (their text, codes and evidence), in the
    order of `dataset_dir`'s, which must hold the same note ids."""
    notes = dataset.read_notes(match_dir, split)
    if match_dir == dataset_dir:
        return notes
    order = dataset.read_notes(dataset_dir, split).note_id
    missing = sorted(set(order) - set(notes.note_id))
    if missing or len(notes) != len(order):
        raise ValueError(
            f"{dataset.notes_path(match_dir, split)} and {dataset.notes_path(dataset_dir, split)} "
            f"hold different notes ({len(notes)} and {len(order)}; "
            f"{len(missing)} of the second missing from the first"
            + (f", e.g. {missing[0]!r})" if missing else ")")
        )
    return notes.set_index("note_id", drop=False).loc[list(order)].reset_index(drop=True)


def _matched_run(
    model_dir: str, splits: tuple, folds: int | None = None, match_dir: str | None = None
) -> tuple:
    """`(experiment, best, index, matches, fold_of_dev)` of a finished run: its experiment
    under its best checkpoint `best`, its term index, `splits`' `SplitMatches` and, with
    `folds`, each dev note's fold (None without). With folds and evidence in dev, dev folds and
    the index are mined as the module docstring says. The notes matched, and mined for the
    index, are `match_dir`'s (default: the run's dataset)."""
    config = run_folder.saved_config(model_dir)
    if config is None or not os.path.exists(os.path.join(model_dir, run_folder.METRICS_FILE)):
        raise FileNotFoundError(f"{model_dir} holds no finished run (no {run_folder.METRICS_FILE})")
    match_dir = match_dir or config.dataset_dir
    experiment = experiment_lib.build_experiment(config)
    best = tf.train.latest_checkpoint(os.path.join(model_dir, run_folder.BEST_DIR))
    tf.train.Checkpoint(model=experiment.model).restore(best).expect_partial()
    notes = {split: matched_notes(match_dir, config.dataset_dir, split) for split in splits}
    train = matched_notes(match_dir, config.dataset_dir, "train")
    dev = notes.get("dev")
    matches = {}
    fold_of_dev = None
    if folds:
        num_notes = experiment.inputs.splits["dev"].num_notes
        fold_of_dev = np.random.default_rng(config.seed).permutation(num_notes) % folds

    def index_of(mined):
        started = time.time()
        index = build_index(match_dir, experiment.labels, config.preset.code_system, mined)
        logging.info(
            "Term index of %d notes: %d terms, %d pairs in %.1f s",
            len(mined),
            len(index.term_keys),
            len(index.pair_codes),
            time.time() - started,
        )
        return index, term_matcher.TermMatcher(index, len(experiment.labels))

    if folds and dev is not None and dataset.EVIDENCE in dev.columns:
        parts, positions = [], []
        for fold in np.unique(fold_of_dev):
            held_out = fold_of_dev == fold
            _, matcher = index_of(pd.concat([train, dev[~held_out]], ignore_index=True))
            parts.append(match_splits(matcher, {"dev": list(dev.text[held_out])})["dev"])
            positions.append(np.flatnonzero(held_out))
        matches["dev"] = SplitMatches.merged(parts, positions)
        train = pd.concat([train, dev], ignore_index=True)
    index, matcher = index_of(train)
    rest = {split: list(notes[split].text) for split in splits if split not in matches}
    matches.update(match_splits(matcher, rest))
    return experiment, best, index, matches, fold_of_dev


def _save(model_dir: str, index: term_matcher.TermIndex, fitted: fusion.Fusion, results) -> None:
    fusion_dir = os.path.join(model_dir, run_folder.FUSION_DIR)
    os.makedirs(fusion_dir, exist_ok=True)
    index.save(os.path.join(fusion_dir, run_folder.TERM_INDEX_FILE))
    fitted.save(os.path.join(fusion_dir, run_folder.FUSION_FILE), **results)


def fit_run_fusion(model_dir: str, folds: int = 5, match_dir: str | None = None) -> dict:
    """Fits and scores a finished run's fusion (module docstring), matching `match_dir`'s
    notes (`_matched_run`); returns its metrics."""
    if folds < 2:
        raise ValueError(f"folds={folds}: cross-validating the fusion on dev needs at least 2")
    experiment, best, index, matches, fold_of_note = _matched_run(
        model_dir, ("dev", "test"), folds, match_dir
    )
    num_notes = len(fold_of_note)
    train_notes = experiment.train_label_counts
    inputs, labels, note_index = candidate_rows(experiment, "dev", matches["dev"])
    note_weights = np.zeros([num_notes, len(fusion.FUSION_INPUTS)], np.float32)
    note_biases = np.zeros([num_notes], np.float32)
    for fold in range(folds):
        held_out = fold_of_note[note_index] == fold
        fold_fit = fusion.fit(inputs[~held_out], labels[~held_out], train_notes)
        note_weights[fold_of_note == fold] = fold_fit.weights
        note_biases[fold_of_note == fold] = fold_fit.bias
    fitted = fusion.fit(inputs, labels, train_notes)

    def measured(split, model, threshold=None):
        """`(metrics, threshold)` of `model` on `split`, at `threshold` or at the one tuned on
        the split (dev)."""
        scored = experiment_lib.Experiment(experiment.inputs, model, experiment.strategy)
        counts = scored.count(split)
        if threshold is None:
            threshold, _ = split_metrics.tune_threshold(counts)
        return scored.metrics(split, counts, threshold), threshold

    num_labels = len(experiment.labels)
    dev_fused = FusedModel(experiment.model, matches["dev"], fitted, note_weights, note_biases)
    dev_metrics, fitted.threshold = measured("dev", dev_fused)
    dictionary_dev, dictionary_threshold = measured(
        "dev", DictionaryModel(matches["dev"], num_labels)
    )
    results = dict(
        dev=dev_metrics,
        folds=folds,
        candidate_pairs=int(labels.size),
        checkpoint=best,
        match_data_dir=match_dir and os.path.abspath(match_dir),
        dictionary=dict(
            dev=dictionary_dev,
            test=measured(
                "test", DictionaryModel(matches["test"], num_labels), dictionary_threshold
            )[0],
        ),
    )
    test_fused = FusedModel(experiment.model, matches["test"], fitted)
    results["test"] = measured("test", test_fused, fitted.threshold)[0]
    _save(model_dir, index, fitted, results)
    write_rankings(
        os.path.join(model_dir, run_folder.FUSION_DIR, run_folder.RANKINGS_FILE),
        experiment,
        dict(dev=dev_fused, test=test_fused),
    )
    return results


def write_rankings(path: str, experiment, models: dict) -> None:
    """Writes each `{split: model}`'s `RANKED_CODES` best codes of every note, with their
    probabilities (`PredictionsWriter`)."""
    writer = PredictionsWriter(path, experiment.labels, experiment.config.dataset_dir)
    depth = min(RANKED_CODES, len(experiment.labels))
    for split, model in models.items():

        @tf.function(reduce_retracing=True)
        def ranked(features, model=model):
            top = tf.math.top_k(model(features), k=depth)
            return top.indices, tf.sigmoid(top.values), features["note_index"]

        for features, _ in experiment.dataset(split):
            writer.write(split, *(tensor.numpy() for tensor in ranked(features)))
    writer.close()


def carry_fusion(model_dir: str, selection_dir: str, match_dir: str | None = None) -> dict:
    """Gives a final run (whose dev notes trained) the fusion and threshold of the run that
    chose its recipe with dev held out (`selection_dir`, fused): the final run's own term index
    and training-note counts, the selection's regression weights and threshold. Scores test;
    the `dev` figures are the selection's (cross-validated), kept under `selection_dev`.
    Matches `match_dir`'s notes (`_matched_run`). Writes test's rankings."""
    selection_path = os.path.join(selection_dir, run_folder.FUSION_DIR, run_folder.FUSION_FILE)
    selection = fusion.Fusion.load(selection_path)
    with open(selection_path) as selection_file:
        selection_dev = json.load(selection_file)["dev"]
    experiment, best, index, matches, _ = _matched_run(model_dir, ("test",), match_dir=match_dir)
    carried = fusion.Fusion(
        selection.weights, selection.bias, experiment.train_label_counts, selection.threshold
    )
    test_fused = FusedModel(experiment.model, matches["test"], carried)
    scored = experiment_lib.Experiment(experiment.inputs, test_fused, experiment.strategy)
    results = dict(
        test=scored.metrics("test", scored.count("test"), carried.threshold),
        selection_dev=selection_dev,
        selection_run=os.path.abspath(selection_dir),
        checkpoint=best,
        match_data_dir=match_dir and os.path.abspath(match_dir),
    )
    _save(model_dir, index, carried, results)
    write_rankings(
        os.path.join(model_dir, run_folder.FUSION_DIR, run_folder.RANKINGS_FILE),
        experiment,
        dict(test=test_fused),
    )
    return results
