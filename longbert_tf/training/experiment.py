"""An experiment: a model built from its resolved inputs (`inputs.resolve`), its batches, and
counting a split's scores under the current weights."""

import time

import numpy as np
from absl import logging

from longbert_tf import distribute
from longbert_tf.configs import ExperimentConfig
from longbert_tf.data import pipeline
from longbert_tf.evaluation import score_counts, split_metrics
from longbert_tf.evaluation.predictions import TOP_CODES, PredictionsWriter
from longbert_tf.framework import keras, tf
from longbert_tf.modeling import description_embeddings, longbert
from longbert_tf.modeling.caml import CAML
from longbert_tf.training import inputs as experiment_inputs

_NOT_FINITE = "the model's logits are not finite (NaN or infinity): its weights diverged"


class Experiment:
    """A model with the inputs it was built from (`inputs.ExperimentInputs`) and the strategy
    its variables belong to."""

    def __init__(
        self,
        inputs: experiment_inputs.ExperimentInputs,
        model: keras.Model,
        strategy: tf.distribute.Strategy,
    ):
        self.inputs = inputs
        self.model = model
        self.strategy = strategy
        self._outputs = tf.function(self._replica_outputs, reduce_retracing=True)

    @property
    def config(self):
        return self.inputs.config

    @property
    def labels(self) -> list:
        return self.inputs.labels

    @property
    def train_label_counts(self) -> np.ndarray:
        return self.inputs.train_label_counts

    def dataset(self, split: str) -> tf.data.Dataset:
        """Every note of `split` once, in batches of `batch_size` (`pipeline.segment_dataset`)."""
        return pipeline.segment_dataset(
            self.inputs.splits[split].token_cache,
            self.inputs.segmenter,
            self.inputs.max_segments,
            num_labels=len(self.labels),
            batch_size=self.config.batch_size,
            max_notes=self.config.max_notes,
        )

    def train_iterator(self, step: int = 0):
        """Training batches for every replica from training step `step` on.

        Each input pipeline reads its own share of the notes in the order of
        `pipeline.training_dataset`; a step draws `grad_accum_steps` batches for
        each of its replicas. Together a step's batches make the global
        `batch_size`.
        """
        micro_batch = self.config.batch_size // self.config.grad_accum_steps

        def replica_dataset(context: tf.distribute.InputContext):
            local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
            return pipeline.training_dataset(
                self.inputs.splits["train"].token_cache,
                self.inputs.segmenter,
                self.inputs.max_note_tokens,
                num_labels=len(self.labels),
                batch_size=context.get_per_replica_batch_size(micro_batch),
                seed=self.config.seed,
                batches_per_step=self.config.grad_accum_steps * local_replicas,
                first_step=step,
                max_notes=self.config.max_notes,
                shard=(context.num_input_pipelines, context.input_pipeline_id),
            )

        return iter(self.strategy.distribute_datasets_from_function(replica_dataset))

    @property
    def fits_untrained_offset(self) -> bool:
        """Whether the model scores codes it never trains on (a described label attention with
        codes that have no training note), whose offset each validation fits."""
        described = getattr(self.model.label_attention, "described", False)
        return described and bool((self.train_label_counts == 0).any())

    def _replica_outputs(self, features, labels, code_slots, untrained, gather_top_codes: bool):
        """Per replica: `score_counts.score_bins`, labels, top codes, their probabilities, note
        indices; with `gather_top_codes`, also the last three gathered from every replica."""

        def replica(features, labels):
            logits = tf.debugging.assert_all_finite(
                self.model(features, training=False), _NOT_FINITE
            )
            top = tf.math.top_k(logits, k=min(TOP_CODES, len(self.labels)))
            bins = score_counts.score_bins(logits, labels, code_slots, untrained)
            return (
                *(bins[name] for name in score_counts.BIN_NAMES),
                labels,
                top.indices,
                tf.sigmoid(top.values),
                features["note_index"],
            )

        outputs = self.strategy.run(replica, args=(features, labels))
        if not gather_top_codes:
            return outputs, None
        return outputs, [self.strategy.gather(output, axis=0) for output in outputs[-3:]]

    def count(self, split: str, predictions: PredictionsWriter | None = None) -> dict:
        """The `score_counts.SplitCounts` counts of `split` under the current weights.

        Batches are spread over every replica (and worker); each worker counts
        its replicas' notes and the counts are summed over workers, so every
        task gets the counts of the whole split, as a single device would.
        `predictions` receives every note's top codes, gathered from every replica.
        """
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        batches = self.strategy.experimental_distribute_dataset(
            self.dataset(split).with_options(options)
        )
        split_inputs = self.inputs.splits[split]
        if split_inputs.outside_codes is None:
            raise ValueError(
                f"{split} is not counted: choose from {experiment_inputs.EVALUATED_SPLITS}"
            )
        started = time.time()
        split_counts = score_counts.SplitCounts(
            len(self.labels),
            split_inputs.num_notes,
            split_inputs.tracked_codes,
            split_inputs.outside_codes,
            untrained=self.train_label_counts == 0,
        )
        code_slots = tf.constant(split_counts.code_slots)
        untrained = tf.constant(split_counts.untrained)
        for features, labels in batches:
            try:
                outputs, gathered = self._outputs(
                    features, labels, code_slots, untrained, predictions is not None
                )
            except tf.errors.InvalidArgumentError as error:
                if _NOT_FINITE not in str(error):
                    raise
                raise FloatingPointError(f"{split}: {_NOT_FINITE}") from None
            local = [self.strategy.experimental_local_results(output) for output in outputs]
            for replica in zip(*local):
                *bins, labels, top_codes, _, note_index = [value.numpy() for value in replica]
                split_counts.add(
                    dict(zip(score_counts.BIN_NAMES, bins)), labels, top_codes, note_index
                )
            if gathered is not None:
                predictions.write(split, *(tensor.numpy() for tensor in gathered))
        counts = distribute.sum_over_workers(self.strategy, split_counts.counts())
        score_counts.check_coverage(counts, split)
        logging.info(
            "Counted %s: %d notes in %.1f s", split, split_inputs.num_notes, time.time() - started
        )
        return counts

    def metrics(self, split: str, counts: dict, threshold: float) -> dict:
        """`split_metrics.evaluate` of a split's counts, with recall on codes unseen in training."""
        unseen_rows = self.train_label_counts[self.inputs.splits[split].tracked_codes] == 0
        return split_metrics.evaluate(counts, threshold, len(self.labels), unseen_rows)


def build_experiment(
    config: ExperimentConfig, strategy: tf.distribute.Strategy = None
) -> Experiment:
    """Resolves the config's inputs once (`inputs.resolve`) and builds its model from them.

    The model's variables belong to `strategy` (default: the current one). The
    experiment's config is bound to its vocabulary and labels (see
    `runs.bind_run`), which a resumed run must match.
    """
    strategy = strategy or tf.distribute.get_strategy()
    started = time.time()
    with strategy.scope():
        inputs = experiment_inputs.resolve(config)
        model = build_model(inputs)
    logging.info("Built the experiment in %.1f s", time.time() - started)
    return Experiment(inputs, model, strategy)


def build_model(inputs: experiment_inputs.ExperimentInputs) -> longbert.NoteClassifier:
    """The config's model (LongBERT on `inputs.encoder`, or CAML on its word embeddings), its
    variables created, its code biases at the training label frequencies and, with
    `label_init=descriptions`, every code's label attention conditioned on its description."""
    config, num_labels = inputs.config, len(inputs.labels)
    if config.model == "caml":
        model = CAML(inputs.word_embeddings, num_labels=num_labels, seed=config.seed)
    else:
        model = longbert.longbert_for(config, inputs.encoder, num_labels)
    probe = tf.ones([1, 1, 2], tf.int32)
    distribute.run_on_replicas(model, dict(input_word_ids=probe, input_mask=probe))
    longbert.set_label_priors(
        model.label_attention, inputs.train_label_counts, inputs.splits["train"].num_notes
    )
    if inputs.code_descriptions is not None:
        _set_descriptions(model, inputs)
    return model


def _set_descriptions(model, inputs: experiment_inputs.ExperimentInputs) -> None:
    """Conditions every code's label attention on its description (`description_embeddings`)."""
    started, texts = time.time(), inputs.code_descriptions
    embeddings = description_embeddings.cached_embed(
        model, texts, inputs.vocab, inputs.config.dataset_dir
    )
    model.label_attention.set_descriptions(embeddings, inputs.train_label_counts > 0)
    logging.info(
        "Descriptions of %d codes embedded or read in %.1f s (%d empty; %d without training notes)",
        len(texts),
        time.time() - started,
        texts.count(""),
        int(np.sum(inputs.train_label_counts == 0)),
    )
