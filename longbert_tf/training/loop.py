"""Training and evaluation of one experiment, with TensorBoard summaries.

The model directory holds a run's config, label order, checkpoints, TensorBoard
event files and, once finished, its metrics (see `run_folder`). Running the
same command again resumes from `checkpoints/`; a finished run (one with
`metrics.json`) is not retrained. Under a distribution strategy only the chief writes there; the
other workers write into temporary folders, removed at the end.
"""

import json
import math
import os
import time

from absl import logging
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

from longbert_tf import distribute, files, run_folder
from longbert_tf.configs import ExperimentConfig
from longbert_tf.data import dataset
from longbert_tf.evaluation import metrics, split_metrics
from longbert_tf.evaluation.predictions import PredictionsWriter
from longbert_tf.framework import keras, tf
from longbert_tf.training import optimization, runs
from longbert_tf.training.checkpoints import RunCheckpoints, named_optimizers
from longbert_tf.training.experiment import Experiment, build_experiment
from longbert_tf.training.loss_scale import DynamicLossScale, loss_scale_for
from longbert_tf.training.trainer import Trainer


def train_and_evaluate(config: ExperimentConfig, predictions_file: str | None = None) -> dict:
    """Trains with the paper's recipe and returns the metrics written to `metrics.json`.

    Adam (see `optimization`), binary cross-entropy averaged over codes and
    notes, validation every `eval_every` steps; the weights with the best dev
    micro F1 (at the dev-tuned threshold) are evaluated on test at that threshold.
    Runs under `config.strategy`; `batch_size` is the global batch. With
    `predictions_file`, the final evaluation also writes every dev and test
    note's top codes there (see `predictions.PredictionsWriter`).
    """
    strategy = distribute.make_strategy(config.strategy, config.tpu)
    saved = run_folder.saved_config(config.model_dir)
    config = runs.same_run(runs.resolve_compute_dtype(config, saved), saved)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % (config.grad_accum_steps * replicas):
        raise ValueError(
            f"batch_size={config.batch_size} is not divisible by grad_accum_steps="
            f"{config.grad_accum_steps} x {replicas} replicas"
        )
    metrics_path = os.path.join(config.model_dir, run_folder.METRICS_FILE)
    if os.path.exists(metrics_path):
        logging.info("%s is finished; delete %s to evaluate again", config.model_dir, metrics_path)
        with open(metrics_path) as metrics_file:
            return json.load(metrics_file)
    for split in dataset.SPLITS:
        dataset.require_notes(config.dataset_dir, split)
    write = distribute.WriteDir(config.model_dir, strategy)
    keras.utils.set_random_seed(config.seed)
    experiment = build_experiment(config, strategy)  # refuses another vocabulary or label list
    if write.chief:  # a resumed run records where and how it now runs
        runs.write_start(experiment.config, experiment.labels)
    with strategy.scope():
        groups = optimization.optimizer_groups(experiment.model, experiment.config)
        loss_scale = loss_scale_for(experiment.config.compute_dtype)
    trackables = named_optimizers(groups) | ({"loss_scale": loss_scale} if loss_scale else {})
    state = RunCheckpoints(experiment.model, trackables, config.model_dir, write)
    resumed = state.resume()
    if resumed:
        logging.info("Resumed %s at step %d", resumed, int(state.step))
    train(experiment, groups, state, write, loss_scale)
    predictions = None
    if predictions_file:  # every task gathers the top codes; the chief writes them
        predictions = PredictionsWriter(
            predictions_file if write.chief else None, experiment.labels, config.dataset_dir
        )
    best_step = state.restore_best(strategy)
    results = evaluate(experiment, predictions)
    results["best_step"] = best_step
    if write.chief:
        files.write_json(metrics_path, results)
    write.cleanup()
    return results


def train(
    experiment: Experiment,
    groups: list,
    state: RunCheckpoints,
    write: distribute.WriteDir,
    loss_scale: DynamicLossScale | None = None,
) -> None:
    """Trains from `state.step` to `train_steps`, validating and checkpointing on the way
    (float16 runs scale the loss with `loss_scale`)."""
    config = experiment.config
    trainer = Trainer(
        experiment.model,
        groups,
        experiment.strategy,
        config.batch_size,
        config.grad_accum_steps,
        loss_scale=loss_scale,
    )
    train_iterator = experiment.train_iterator(int(state.step))
    if write.chief:
        train_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
        dev_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "dev"))
    else:
        train_writer = dev_writer = tf.summary.create_noop_writer()
    tokens, started = 0, time.time()
    while int(state.step) < config.train_steps:
        outputs = trainer(train_iterator)
        state.step.assign_add(1)
        tokens += int(outputs["note_tokens"])
        step = int(state.step)
        if not math.isfinite(float(outputs["loss"])):
            raise FloatingPointError(
                f"step {step}: the training loss is {float(outputs['loss'])}: training diverged "
                "(nothing of this step was saved; the checkpoints hold earlier weights)"
            )
        last = step == config.train_steps
        if step % config.log_every == 0 or last:
            _log_step(
                config,
                step,
                outputs["loss"],
                tokens / (time.time() - started),
                groups,
                train_writer,
            )
            tokens, started = 0, time.time()
        if step % config.eval_every == 0 or last:
            state.save_if_best(validate(experiment, dev_writer, step))
            started = time.time()
        if step % (config.checkpoint_every or config.eval_every) == 0 or last:
            state.save_latest()


def _log_step(config, step: int, loss, tokens_per_second: float, groups: list, writer) -> None:
    """The training loss, learning rates and throughput to the log and TensorBoard."""
    logging.info(
        "step %d/%d  loss %.5f  %.0f tokens/s",
        step,
        config.train_steps,
        float(loss),
        tokens_per_second,
    )
    with writer.as_default(step=step):
        tf.summary.scalar("loss", loss)
        for name, optimizer in named_optimizers(groups).items():
            rate_name = name.replace("optimizer", "learning_rate")
            tf.summary.scalar(rate_name, tf.convert_to_tensor(optimizer.learning_rate))
        tf.summary.scalar("tokens_per_second", tokens_per_second)


def validate(experiment: Experiment, writer, step: int) -> float:
    """Dev micro F1 at its best threshold, with micro PR-AUC, ROC-AUC and a PR curve to TensorBoard.

    Only numbers are written: no note text reaches logs or summaries.
    """
    counts = experiment.count("dev")
    if experiment.fits_untrained_offset:
        counts = _fit_untrained_offset(experiment, counts, step)
    threshold, dev_f1 = split_metrics.tune_threshold(counts)
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
        if experiment.fits_untrained_offset:
            offset = experiment.model.label_attention.untrained_offset.read_value()
            tf.summary.scalar("untrained_offset", offset)
        for name in ("micro_pr_auc", "micro_roc_auc", "map", "unseen_code_recall"):
            tf.summary.scalar(name, results[name])
        curve = split_metrics.pr_curve(counts)
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


def _fit_untrained_offset(experiment: Experiment, counts: dict, step: int) -> dict:
    """Moves the logits of the codes without a training note by the offset that fits the dev
    `counts` best (`split_metrics.fit_untrained_offset`); returns dev's counts under it (counted
    again when it moved: the weights a best checkpoint keeps are the weights measured)."""
    layer = experiment.model.label_attention
    offset = split_metrics.fit_untrained_offset(counts)
    if offset:
        layer.untrained_offset.assign_add(offset)
        counts = experiment.count("dev")
    logging.info(
        "step %d  codes without a training note: logits moved by %+.2f (offset now %+.2f)",
        step,
        offset,
        float(layer.untrained_offset.read_value()),
    )
    return counts


def evaluate(experiment: Experiment, predictions=None) -> dict:
    """Dev and test metrics at the micro-F1-best threshold on dev (and the logit offset of the
    codes without a training note, when the model fits one).

    `predictions`, a `predictions.PredictionsWriter`, gets every note's top codes.
    """
    dev_counts = experiment.count("dev", predictions)
    threshold, _ = split_metrics.tune_threshold(dev_counts)
    test_counts = experiment.count("test", predictions)
    if predictions is not None:
        predictions.close()
    results = dict(
        dataset=experiment.config.dataset,
        model=experiment.config.model,
        input_length=experiment.config.input_length,
        encoder=experiment.config.encoder,
        dev=experiment.metrics("dev", dev_counts, threshold),
        test=experiment.metrics("test", test_counts, threshold),
    )
    if experiment.fits_untrained_offset:
        offset = experiment.model.label_attention.untrained_offset.read_value()  # any strategy
        results["untrained_offset"] = float(offset)
    return results
