"""Training, evaluation, checkpoints and TensorBoard summaries for one experiment.

The model directory holds:
  config.json        the resolved `ExperimentConfig`
  checkpoints/       the latest state (model, optimizer, step, input position)
  best/              the weights with the best validation micro F1 so far
  train/, dev/       TensorBoard event files
  metrics.json       dev and test metrics at the threshold tuned on dev
Running the same command again resumes from `checkpoints/`; a finished run is
not retrained. Under a distribution strategy only the chief writes there; the
other workers write into temporary folders, removed at the end.
"""

import dataclasses
import json
import os
import time

import numpy as np
from absl import logging
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

from longbert_tf import (
    data,
    descriptions,
    distribute,
    encoders,
    evaluation,
    files,
    hardware,
    metrics,
    models,
    optimization,
    words,
)
from longbert_tf.configs import RUN_BINDING, ExperimentConfig
from longbert_tf.framework import keras, tf
from longbert_tf.models import CAML


@dataclasses.dataclass
class Experiment:
    """A model with its label set, the token caches of every split and how notes become inputs."""

    config: ExperimentConfig
    labels: list
    records: dict  # split -> token cache path
    model: keras.Model
    segmenter: object  # token ids -> (ids, mask), see data.segment_dataset
    max_segments: int
    max_note_tokens: int  # the longest note prefix the model reads
    strategy: tf.distribute.Strategy
    train_label_counts: np.ndarray  # [num_labels] training notes per code

    def dataset(self, split: str) -> tf.data.Dataset:
        """Every note of `split` once, in batches of `batch_size` (see `data.segment_dataset`)."""
        return data.segment_dataset(
            self.records[split],
            self.segmenter,
            self.max_segments,
            num_labels=len(self.labels),
            batch_size=self.config.batch_size,
            max_notes=self.config.max_notes,
        )

    def train_iterator(self, step: int = 0):
        """Training batches for every replica from training step `step` on.

        Each input pipeline reads its own share of the notes in the order of
        `data.training_dataset`; a step draws `grad_accum_steps` batches for
        each of its replicas. Together a step's batches make the global
        `batch_size`.
        """
        micro_batch = self.config.batch_size // self.config.grad_accum_steps

        def replica_dataset(context: tf.distribute.InputContext):
            local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
            return data.training_dataset(
                self.records["train"],
                self.segmenter,
                self.max_note_tokens,
                num_labels=len(self.labels),
                batch_size=context.get_per_replica_batch_size(micro_batch),
                seed=self.config.seed,
                batches_per_step=self.config.grad_accum_steps * local_replicas,
                first_step=step,
                max_notes=self.config.max_notes,
                shard=(context.num_input_pipelines, context.input_pipeline_id),
            )

        return iter(self.strategy.distribute_datasets_from_function(replica_dataset))

    def __post_init__(self):
        self._outputs = tf.function(self._replica_outputs, reduce_retracing=True)
        self._tracked_codes = {}  # split -> codes with a positive note

    def _replica_outputs(self, features, labels, code_slots, gather_top_codes: bool):
        """Per replica: `evaluation.score_bins`, labels, top codes, their probabilities, note
        indices; with `gather_top_codes`, also the last three gathered from every replica."""

        def replica(features, labels):
            logits = self.model(features, training=False)
            top = tf.math.top_k(logits, k=min(evaluation.TOP_CODES, len(self.labels)))
            bins = evaluation.score_bins(logits, labels, code_slots)
            return (
                *(bins[name] for name in evaluation.BIN_NAMES),
                labels,
                top.indices,
                tf.sigmoid(top.values),
                features["note_index"],
            )

        outputs = self.strategy.run(replica, args=(features, labels))
        if not gather_top_codes:
            return outputs, None
        return outputs, [self.strategy.gather(output, axis=0) for output in outputs[-3:]]

    def count(self, split: str, predictions: evaluation.PredictionsWriter | None = None) -> dict:
        """The `evaluation.SplitCounts` counts of `split` under the current weights.

        Batches are spread over every replica (and worker); each worker counts
        its replicas' notes and the counts are summed over workers, so every
        task gets the counts of the whole split, as a single device would.
        `predictions` receives every note's top codes, gathered from every replica.
        """
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        dataset = self.strategy.experimental_distribute_dataset(
            self.dataset(split).with_options(options)
        )
        num_notes = data.count_records(self.records[split], self.config.max_notes)
        started = time.time()
        if split not in self._tracked_codes:  # the codes with a positive note in the split
            label_counts = data.label_counts(
                self.records[split], len(self.labels), self.config.max_notes
            )
            self._tracked_codes[split] = np.flatnonzero(label_counts)
        split_counts = evaluation.SplitCounts(
            len(self.labels), num_notes, self._tracked_codes[split]
        )
        code_slots = tf.constant(split_counts.code_slots)
        for features, labels in dataset:
            outputs, gathered = self._outputs(features, labels, code_slots, predictions is not None)
            local = [self.strategy.experimental_local_results(output) for output in outputs]
            for replica in zip(*local):
                *bins, labels, top_codes, _, note_index = [value.numpy() for value in replica]
                split_counts.add(
                    dict(zip(evaluation.BIN_NAMES, bins)), labels, top_codes, note_index
                )
            if gathered is not None:
                predictions.write(split, *(tensor.numpy() for tensor in gathered))
        counts = distribute.sum_over_workers(self.strategy, split_counts.counts())
        evaluation.check_coverage(counts, split)
        logging.info("Counted %s: %d notes in %.1f s", split, num_notes, time.time() - started)
        return counts

    def metrics(self, split: str, counts: dict, threshold: float) -> dict:
        """`evaluation.evaluate` of a split's counts, with recall on codes unseen in training."""
        unseen_rows = self.train_label_counts[self._tracked_codes[split]] == 0
        return evaluation.evaluate(counts, threshold, len(self.labels), unseen_rows)


def build_experiment(
    config: ExperimentConfig, strategy: tf.distribute.Strategy = None
) -> Experiment:
    """Prepares the model's vocabulary, tokenizes every split once (cached) and builds the model.

    LongBERT loads its encoder (and the encoder's WordPiece vocabulary); CAML
    builds its word vocabulary and word2vec embeddings from the training notes.
    Either model starts its code biases at the training label frequencies. The
    model's variables belong to `strategy` (default: the current one).
    """
    strategy = strategy or tf.distribute.get_strategy()
    config = resolve_compute_dtype(config)
    started = time.time()
    with strategy.scope():
        experiment = _build_experiment(config, strategy)
    logging.info("Built the experiment in %.1f s", time.time() - started)
    return experiment


def _build_experiment(config: ExperimentConfig, strategy) -> Experiment:
    labels = data.read_labels(config.dataset_dir)
    if config.model == "caml":
        vocab, embeddings = words.cached_build(config.dataset_dir, config.seed)
        model = CAML(embeddings, num_labels=len(labels), seed=config.seed)
        segmenter, max_segments = words.word_segmenter(config.max_words), 1
        max_note_tokens = config.max_words
    else:
        encoder = encoders.load(encoders.run_encoder(config), config.segments.segment_length)
        vocab = encoder.vocab
        model = models.longbert_for(config, encoder, len(labels))
        segmenter = data.bert_segmenter(config.segments, vocab)
        max_segments = config.segments.max_segments
        max_note_tokens = config.segments.max_note_tokens
    config = bind_run(config, vocab, labels)
    records = {split: data.token_cache(config.dataset_dir, split, vocab) for split in data.SPLITS}
    probe = tf.ones([1, 1, 2], tf.int32)
    distribute.run_on_replicas(model, dict(input_word_ids=probe, input_mask=probe))
    train_label_counts = data.label_counts(records["train"], len(labels), config.max_notes)
    models.set_label_priors(
        model.label_attention,
        train_label_counts,
        data.count_records(records["train"], config.max_notes),
    )
    if config.label_init == "descriptions":
        started = time.time()
        texts = descriptions.code_descriptions(config.dataset_dir, labels)
        model.label_attention.set_descriptions(
            descriptions.embed(model, texts, vocab), train_label_counts > 0
        )
        logging.info(
            "Embedded %d code descriptions in %.1f s (%d empty; %d codes have no training note)",
            len(texts),
            time.time() - started,
            texts.count(""),
            int(np.sum(train_label_counts == 0)),
        )
    return Experiment(
        config,
        labels,
        records,
        model,
        segmenter,
        max_segments,
        max_note_tokens,
        strategy,
        train_label_counts,
    )


class Trainer:
    """One training step: binary cross-entropy (mean over codes and notes), one update.

    `optimizer_groups` (see `optimization.optimizer_groups`) say which
    optimizer updates which variables.

    Each replica computes `model.label_attention.loss` of its notes divided by
    the global batch size, so summed over replicas (which `apply_gradients`
    does) it is the mean over the global batch, for any number of replicas.
    With `grad_accum_steps` N, a step draws N micro-batches per replica and
    applies their summed gradients once: the same update as one batch N times
    larger. `jit_compile` compiles each replica's forward and backward with XLA.

    Call with an iterator of `(features, labels)` per-replica batches; returns
    `(loss, note tokens)` of the step.
    """

    def __init__(
        self,
        model,
        optimizer_groups,
        strategy,
        global_batch_size,
        grad_accum_steps=1,
        jit_compile=False,
    ):
        self.model = model
        self.optimizer_groups = optimizer_groups
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.grad_accum_steps = grad_accum_steps
        self.variables = [variable for group in optimizer_groups for variable in group.variables]
        if grad_accum_steps > 1:
            with strategy.scope():
                self.accumulated = [
                    tf.Variable(
                        tf.zeros_like(variable),
                        trainable=False,
                        synchronization=tf.VariableSynchronization.ON_READ,
                        aggregation=tf.VariableAggregation.SUM,
                    )
                    for variable in self.variables
                ]
        self._gradients = tf.function(self._loss_and_gradients, jit_compile=jit_compile)
        self._step = tf.function(self._train_step)

    def _loss_and_gradients(self, features, labels):
        with tf.GradientTape() as tape:
            tokens, mask = self.model.encode(features, training=True)
            loss = self.model.label_attention.loss(tokens, mask, labels, self.global_batch_size)
        gradients = tape.gradient(loss, self.variables)
        note_tokens = tf.reduce_sum(features["input_mask"])
        return loss, [tf.convert_to_tensor(g) for g in gradients], note_tokens

    def _replica_step(self, features, labels):
        loss, gradients, note_tokens = self._gradients(features, labels)
        if self.grad_accum_steps == 1:
            self._apply(gradients)
        else:
            for accumulated, gradient in zip(self.accumulated, gradients):
                accumulated.assign_add(gradient)
        return loss, note_tokens

    def _apply(self, gradients):
        """Each group's optimizer applies its variables' gradients (`self.variables` order)."""
        start = 0
        for group in self.optimizer_groups:
            end = start + len(group.variables)
            group.optimizer.apply_gradients(zip(gradients[start:end], group.variables))
            start = end

    def _apply_accumulated(self):
        self._apply([accumulated.read_value() for accumulated in self.accumulated])
        for accumulated in self.accumulated:
            accumulated.assign(tf.zeros_like(accumulated))

    def _train_step(self, iterator):
        total_loss, total_tokens = 0.0, 0
        for _ in range(self.grad_accum_steps):
            loss, note_tokens = self.strategy.run(self._replica_step, args=next(iterator))
            total_loss += self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
            total_tokens += self.strategy.reduce(tf.distribute.ReduceOp.SUM, note_tokens, axis=None)
        if self.grad_accum_steps > 1:
            self.strategy.run(self._apply_accumulated)
        return total_loss, total_tokens

    def __call__(self, iterator):
        return self._step(iterator)


def _saved_config(model_dir: str) -> ExperimentConfig | None:
    """The config of the run in `model_dir`, or None before it starts."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as config_file:
        # Through the dataclass, so fields added since the run started take their defaults.
        return ExperimentConfig.from_dict(json.load(config_file))


def resolve_compute_dtype(config: ExperimentConfig) -> ExperimentConfig:
    """`config` with `compute_dtype="auto"` made concrete: a started run keeps its own dtype,
    a new one takes bfloat16 where this machine multiplies it natively (see `hardware`)."""
    if config.compute_dtype != "auto":
        return config
    return _resolve_compute_dtype(config, _saved_config(config.model_dir))


def _resolve_compute_dtype(
    config: ExperimentConfig, saved: ExperimentConfig | None
) -> ExperimentConfig:
    """`resolve_compute_dtype` with the run's saved config (None before it starts) read already."""
    if config.compute_dtype != "auto":
        return config
    if saved is not None and saved.compute_dtype != "auto":
        dtype, reason = saved.compute_dtype, "auto: the dtype the run started with"
    else:
        dtype, reason = hardware.compute_dtype("auto", config.strategy)
    logging.info("Label attention multiplies in %s (%s)", dtype, reason)
    return dataclasses.replace(config, compute_dtype=dtype)


def _same_run(config: ExperimentConfig, saved: ExperimentConfig | None) -> ExperimentConfig:
    """`config`, checked to be the run already in the model dir (if any) and bound as it is."""
    if saved is None:
        return config
    chosen = {key: value for key, value in config.to_dict().items() if key not in RUN_BINDING}
    started = {key: value for key, value in saved.to_dict().items() if key not in RUN_BINDING}
    changed = {key for key in chosen.keys() | started.keys() if chosen.get(key) != started.get(key)}
    if changed:
        raise ValueError(
            f"{config.model_dir} holds a run with a different config ({sorted(changed)}): "
            "use another --model_dir, or remove that one to start over"
        )
    return dataclasses.replace(config, **{name: getattr(saved, name) for name in RUN_BINDING})


def bind_run(config: ExperimentConfig, vocab, labels: list) -> ExperimentConfig:
    """`config` bound to the vocabulary and label order its weights are trained with.

    A config already bound (a run resumed or exported) must find the same ones:
    restored embeddings index token ids of the run's vocabulary, and its
    classifier rows follow the run's label order.
    """
    found = dict(
        vocab_fingerprint=vocab.fingerprint, labels_fingerprint=data.labels_fingerprint(labels)
    )
    what = dict(
        vocab_fingerprint="encoder vocabulary (re-preparing a dataset rebuilds its "
        "encoders/random-* with a vocabulary learned anew)",
        labels_fingerprint="label list (labels.txt)",
    )
    for name, value in found.items():
        expected = getattr(config, name)
        if expected is not None and expected != value:
            raise ValueError(
                f"{config.model_dir} was trained with another {what[name]}: {name} "
                f"{expected}, found {value}. Its weights only fit that one: restore the encoder "
                "and dataset it was trained with, or train a new --model_dir"
            )
    return dataclasses.replace(config, **found)


def train_and_evaluate(config: ExperimentConfig, predictions_file: str | None = None) -> dict:
    """Trains with the paper's recipe and returns the metrics written to `metrics.json`.

    Adam (see `optimization`), binary cross-entropy averaged over codes and
    notes, validation every `eval_every` steps; the weights with the best dev
    micro F1 (at the dev-tuned threshold) are evaluated on test at that threshold.
    Runs under `config.strategy`; `batch_size` is the global batch. With
    `predictions_file`, the final evaluation also writes every dev and test
    note's top codes there (see `evaluation.PredictionsWriter`).
    """
    strategy = distribute.make_strategy(config.strategy, config.tpu)
    saved = _saved_config(config.model_dir)
    config = _resolve_compute_dtype(config, saved)
    write = distribute.WriteDir(config.model_dir, strategy)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % (config.grad_accum_steps * replicas):
        raise ValueError(
            f"batch_size={config.batch_size} is not divisible by grad_accum_steps="
            f"{config.grad_accum_steps} x {replicas} replicas"
        )
    metrics_path = os.path.join(config.model_dir, "metrics.json")
    config = _same_run(config, saved)
    if os.path.exists(metrics_path):
        logging.info("%s is finished; delete %s to evaluate again", config.model_dir, metrics_path)
        with open(metrics_path) as metrics_file:
            return json.load(metrics_file)
    prepared_by = config.preset.prepare_command.replace("DATA_DIR", config.data_dir)
    for split in data.SPLITS:
        data.require_notes(config.dataset_dir, split, prepared_by)
    keras.utils.set_random_seed(config.seed)
    experiment = build_experiment(config, strategy)  # refuses another vocabulary or label list
    config = experiment.config
    if saved is None and write.chief:
        # The run's label order beside its weights (serving needs nothing else), then its config.
        labels_text = "".join(f"{code}\n" for code in experiment.labels)
        files.write_text(os.path.join(config.model_dir, data.LABELS_FILE), labels_text)
        files.write_json(os.path.join(config.model_dir, "config.json"), config.to_dict())
    model = experiment.model
    with strategy.scope():
        groups = optimization.optimizer_groups(model, config)
    # The head's optimizer is `optimizer`, as in runs made before the encoder had its own.
    optimizers = dict(optimizer=groups[0].optimizer)
    if len(groups) > 1:
        optimizers["encoder_optimizer"] = groups[1].optimizer
    # Bookkeeping that the host updates, the same on every task: not distributed variables.
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    best_f1 = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_dev_micro_f1")
    # The input position follows from the step (see Experiment.train_iterator): the
    # checkpoint holds weights, optimizer slots and counters, never note data.
    state = tf.train.Checkpoint(model=model, step=step, best_f1=best_f1, **optimizers)
    latest = tf.train.CheckpointManager(state, write.path("checkpoints"), max_to_keep=1)
    best = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, step=step), write.path("best"), max_to_keep=1
    )
    # Every task resumes from the chief's checkpoint (the model dir is shared).
    resume_from = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    if resume_from:
        state.restore(resume_from).expect_partial()
        logging.info("Resumed %s at step %d", resume_from, int(step))
    train_iterator = experiment.train_iterator(int(step))

    trainer = Trainer(model, groups, strategy, config.batch_size, config.grad_accum_steps)
    if write.chief:
        train_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
        dev_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "dev"))
    else:
        train_writer = dev_writer = tf.summary.create_noop_writer()
    tokens, started = 0, time.time()
    while int(step) < config.train_steps:
        loss, step_tokens = trainer(train_iterator)
        step.assign_add(1)
        tokens += int(step_tokens)
        current = int(step)
        if current % config.log_every == 0 or current == config.train_steps:
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
                for name, optimizer in optimizers.items():
                    rate_name = name.replace("optimizer", "learning_rate")
                    tf.summary.scalar(rate_name, tf.convert_to_tensor(optimizer.learning_rate))
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

    # Every worker evaluates the chief's best weights: after a resume the other workers' own
    # best/ (in their emptied scratch folders) can be empty. The barrier waits for the chief's save.
    distribute.barrier(strategy)
    best_path = tf.train.latest_checkpoint(os.path.join(config.model_dir, "best"))
    if best_path is None:
        raise FileNotFoundError(f"no best checkpoint in {config.model_dir}/best to evaluate")
    best_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    tf.train.Checkpoint(model=model, step=best_step).restore(best_path).expect_partial()
    predictions = None
    if predictions_file:  # every task gathers the top codes; the chief writes them
        predictions = evaluation.PredictionsWriter(
            predictions_file if write.chief else None, experiment.labels, config.dataset_dir
        )
    results = evaluate(experiment, predictions)
    results["best_step"] = int(best_step)
    if write.chief:
        files.write_json(metrics_path, results)
    write.cleanup()
    return results


def validate(experiment: Experiment, writer, step: int) -> float:
    """Dev micro F1 at its best threshold, with micro PR-AUC, ROC-AUC and a PR curve to TensorBoard.

    Only numbers are written: no note text reaches logs or summaries.
    """
    counts = experiment.count("dev")
    threshold, dev_f1 = evaluation.tune_threshold(counts)
    results = experiment.metrics("dev", counts, threshold)
    logging.info(
        "step %d  dev micro F1 %.4f at threshold %.2f (recall on codes unseen in training %.3f)",
        step,
        dev_f1,
        threshold,
        results["unseen_code_recall"],
    )
    with writer.as_default(step=step):
        tf.summary.scalar("micro_f1", dev_f1)
        tf.summary.scalar("threshold", threshold)
        for name in ("micro_pr_auc", "micro_roc_auc", "unseen_code_recall"):
            tf.summary.scalar(name, results[name])
        curve = evaluation.pr_curve(counts)
        true_positives = curve["true_positive_counts"]
        summary = pr_curve_summary.raw_data_pb(
            "pr_curve",
            **curve,
            precision=metrics.ratio(
                true_positives, true_positives + curve["false_positive_counts"]
            ),
            recall=metrics.ratio(true_positives, true_positives + curve["false_negative_counts"]),
            num_thresholds=len(true_positives),
        )
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
    return dev_f1


def evaluate(experiment: Experiment, predictions=None) -> dict:
    """Dev and test metrics at the micro-F1-best threshold on dev.

    `predictions`, an `evaluation.PredictionsWriter`, gets every note's top codes.
    """
    dev_counts = experiment.count("dev", predictions)
    threshold, _ = evaluation.tune_threshold(dev_counts)
    test_counts = experiment.count("test", predictions)
    if predictions is not None:
        predictions.close()
    return dict(
        dataset=experiment.config.dataset,
        model=experiment.config.model,
        input_length=experiment.config.input_length,
        encoder=experiment.config.encoder,
        dev=experiment.metrics("dev", dev_counts, threshold),
        test=experiment.metrics("test", test_counts, threshold),
    )
