"""Training, evaluation, checkpoints and TensorBoard summaries for one experiment.

The model directory holds:
  config.json        the resolved `ExperimentConfig`
  checkpoints/       the latest state (model, optimizer, step, input position)
  best/              the weights with the best validation micro F1 so far
  train/, dev/       TensorBoard event files
  metrics.json       dev and test metrics at the threshold tuned on dev
Running the same command again resumes from `checkpoints/`; a finished run is
not retrained.
"""

import dataclasses
import functools
import json
import os
import time

import numpy as np
from absl import logging
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

from longbert_tf import data, encoders, files, metrics, models, words
from longbert_tf.configs import ExperimentConfig
from longbert_tf.framework import keras, tf
from longbert_tf.models import CAML, LongBERT

LOG_EVERY_STEPS = 20


@dataclasses.dataclass
class Experiment:
    """A model with its label set, the token caches of every split and how notes become inputs."""

    config: ExperimentConfig
    labels: list
    records: dict  # split -> token cache path
    model: keras.Model
    segmenter: object  # token ids -> (ids, mask), see data.segment_dataset
    max_segments: int

    @functools.cached_property
    def _probabilities(self):
        features_spec, _ = self.dataset("dev").element_spec

        @tf.function(input_signature=[features_spec])
        def probabilities(features):
            return tf.sigmoid(self.model(features, training=False))

        return probabilities

    def predict(self, split: str) -> tuple:
        """Returns `(y_true, y_prob)`, `[num_notes, num_labels]` each, rows in note order."""
        note_indices, labels, probs = [], [], []
        for features, batch_labels in self.dataset(split):
            note_indices.append(features["note_index"].numpy())
            labels.append(batch_labels.numpy())
            probs.append(self._probabilities(features).numpy())
        order = np.argsort(np.concatenate(note_indices))
        return np.concatenate(labels)[order], np.concatenate(probs)[order]

    def dataset(self, split: str, training: bool = False) -> tf.data.Dataset:
        return data.segment_dataset(
            self.records[split],
            self.segmenter,
            self.max_segments,
            num_labels=len(self.labels),
            batch_size=self.config.batch_size,
            training=training,
            seed=self.config.seed,
            max_notes=self.config.max_notes,
        )


def build_experiment(config: ExperimentConfig) -> Experiment:
    """Prepares the model's vocabulary, tokenizes every split once (cached) and builds the model.

    LongBERT loads its encoder (and the encoder's WordPiece vocabulary); CAML
    builds its word vocabulary and word2vec embeddings from the training notes.
    Either model starts its code biases at the training label frequencies.
    """
    labels = data.read_labels(config.dataset_dir)
    if config.model == "caml":
        vocab, embeddings = words.cached_build(config.dataset_dir, config.seed)
        model = CAML(embeddings, num_labels=len(labels), seed=config.seed)
        segmenter, max_segments = words.word_segmenter(config.max_words), 1
    else:
        handle = encoders.resolve(
            config.encoder, config.dataset_dir, config.seed, config.encoder_layers
        )
        encoder = encoders.load(handle, config.segments.segment_length)
        vocab = encoder.vocab
        model = LongBERT(
            encoder.layer,
            num_labels=len(labels),
            seed=config.seed,
            label_attention_args=config.label_attention_args,
        )
        segmenter = data.bert_segmenter(config.segments, vocab)
        max_segments = config.segments.max_segments
    records = {split: data.token_cache(config.dataset_dir, split, vocab) for split in data.SPLITS}
    probe = tf.ones([1, 1, 2], tf.int32)
    model(dict(input_word_ids=probe, input_mask=probe))
    models.set_label_priors(
        model.label_attention,
        data.label_counts(records["train"], len(labels), config.max_notes),
        min(data.count_records(records["train"]), config.max_notes or np.inf),
    )
    return Experiment(config, labels, records, model, segmenter, max_segments)


def make_train_step(model: keras.Model, optimizer, element_spec, jit_compile: bool = False):
    """A compiled step: binary cross-entropy (mean over codes and notes), one Adam update.

    `element_spec` is the `(features, labels)` spec of the training pipeline;
    its unknown batch, segment and width dimensions let one trace serve every
    bucket. `jit_compile` compiles the step with XLA (for fixed shapes).
    """

    @tf.function(input_signature=list(element_spec), jit_compile=jit_compile)
    def train_step(features, labels):
        with tf.GradientTape() as tape:
            tokens, mask = model.encode(features, training=True)
            loss = model.label_attention.loss(tokens, mask, labels, tf.shape(labels)[0])
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return train_step


def _check_config(config: ExperimentConfig) -> None:
    """Saves the config, or checks it equals the one of the run already in the model dir."""
    path = os.path.join(config.model_dir, "config.json")
    if os.path.exists(path):
        with open(path) as config_file:
            # Through the dataclass, so fields added since the run started take their defaults.
            saved = ExperimentConfig.from_dict(json.load(config_file)).to_dict()
        current = config.to_dict()
        changed = {
            key for key in saved.keys() | current.keys() if saved.get(key) != current.get(key)
        }
        if changed:
            raise ValueError(
                f"{config.model_dir} holds a run with a different config ({sorted(changed)}): "
                "use another --model_dir, or remove that one to start over"
            )
    else:
        files.write_json(path, config.to_dict())


def train_and_evaluate(config: ExperimentConfig) -> dict:
    """Trains with the paper's recipe and returns the metrics written to `metrics.json`.

    Adam at `learning_rate`, binary cross-entropy averaged over codes and
    notes, validation every `eval_every` steps; the weights with the best dev
    micro F1 (at the dev-tuned threshold) are evaluated on test at that threshold.
    """
    metrics_path = os.path.join(config.model_dir, "metrics.json")
    _check_config(config)
    if os.path.exists(metrics_path):
        logging.info("%s is finished; delete %s to evaluate again", config.model_dir, metrics_path)
        with open(metrics_path) as metrics_file:
            return json.load(metrics_file)
    keras.utils.set_random_seed(config.seed)
    experiment = build_experiment(config)
    # The run's label order, beside its weights: serving needs nothing from the dataset folder.
    files.write_text(
        os.path.join(config.model_dir, data.LABELS_FILE),
        "".join(f"{c}\n" for c in experiment.labels),
    )
    model = experiment.model
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    best_f1 = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_dev_micro_f1")
    train_iterator = iter(experiment.dataset("train", training=True))
    state = tf.train.Checkpoint(
        model=model, optimizer=optimizer, step=step, best_f1=best_f1, train_data=train_iterator
    )
    latest = tf.train.CheckpointManager(
        state, os.path.join(config.model_dir, "checkpoints"), max_to_keep=1
    )
    best = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, step=step), os.path.join(config.model_dir, "best"), 1
    )
    if latest.latest_checkpoint:
        state.restore(latest.latest_checkpoint)
        logging.info("Resumed %s at step %d", latest.latest_checkpoint, int(step))

    train_step = make_train_step(model, optimizer, train_iterator.element_spec)
    train_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
    dev_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "dev"))
    tokens, started = 0, time.time()
    while int(step) < config.train_steps:
        features, labels = next(train_iterator)
        loss = train_step(features, labels)
        step.assign_add(1)
        tokens += int(tf.reduce_sum(features["input_mask"]))
        current = int(step)
        if current % LOG_EVERY_STEPS == 0 or current == config.train_steps:
            elapsed = time.time() - started
            logging.info(
                "step %d/%d  loss %.5f  %.0f tokens/s",
                current,
                config.train_steps,
                float(loss),
                tokens / elapsed,
            )
            with train_writer.as_default(step=current):
                tf.summary.scalar("loss", loss)
                tf.summary.scalar("learning_rate", config.learning_rate)
                tf.summary.scalar("tokens_per_second", tokens / elapsed)
            tokens, started = 0, time.time()
        if current % config.eval_every == 0 or current == config.train_steps:
            dev_f1 = validate(experiment, dev_writer, current)
            if dev_f1 > float(best_f1):
                best_f1.assign(dev_f1)
                best.save(checkpoint_number=current)
            latest.save(checkpoint_number=current)
            started = time.time()
        elif current % (config.checkpoint_every or config.eval_every) == 0:
            latest.save(checkpoint_number=current)

    tf.train.Checkpoint(model=model, step=step).restore(best.latest_checkpoint).expect_partial()
    results = evaluate(experiment)
    results["best_step"] = int(step)
    files.write_json(metrics_path, results)
    return results


def validate(experiment: Experiment, writer, step: int) -> float:
    """Dev micro F1 at its best threshold, with micro PR-AUC, ROC-AUC and a PR curve to TensorBoard.

    Only numbers are written: no note text reaches logs or summaries.
    """
    y_true, y_prob = experiment.predict("dev")
    threshold, dev_f1 = metrics.tune_threshold(y_true, y_prob)
    logging.info("step %d  dev micro F1 %.4f at threshold %.2f", step, dev_f1, threshold)
    with writer.as_default(step=step):
        tf.summary.scalar("micro_f1", dev_f1)
        tf.summary.scalar("threshold", threshold)
        tf.summary.scalar("micro_pr_auc", metrics.average_precision(y_true, y_prob))
        tf.summary.scalar("micro_roc_auc", metrics.roc_auc(y_true, y_prob))
        curve = pr_curve_summary.pb(
            "pr_curve", y_true.ravel().astype(bool), y_prob.ravel(), num_thresholds=101
        )
        tf.summary.experimental.write_raw_pb(curve.SerializeToString(), step=step)
    return dev_f1


def evaluate(experiment: Experiment) -> dict:
    """Dev and test metrics at the micro-F1-best threshold on dev."""
    dev_true, dev_prob = experiment.predict("dev")
    threshold, _ = metrics.tune_threshold(dev_true, dev_prob)
    test_true, test_prob = experiment.predict("test")
    return dict(
        dataset=experiment.config.dataset,
        model=experiment.config.model,
        input_length=experiment.config.input_length,
        encoder=experiment.config.encoder,
        dev=metrics.evaluate(dev_true, dev_prob, threshold),
        test=metrics.evaluate(test_true, test_prob, threshold),
    )
