"""An experiment: a model with its labels, the token caches of every split, and how notes
become its inputs; counting a split's scores under the current weights."""

import dataclasses
import time

import numpy as np
from absl import logging

from longbert_tf import (
    dataset,
    descriptions,
    distribute,
    encoder_specs,
    encoders,
    evaluation,
    models,
    pipeline,
    runs,
    score_counts,
    segmentation,
    token_cache,
    words,
)
from longbert_tf.caml import CAML
from longbert_tf.configs import ExperimentConfig
from longbert_tf.framework import keras, tf
from longbert_tf.predictions import TOP_CODES, PredictionsWriter

_NOT_FINITE = "the model's logits are not finite (NaN or infinity): its weights diverged"


@dataclasses.dataclass
class Experiment:
    """A model with its label set, the token caches of every split and how notes become inputs."""

    config: ExperimentConfig
    labels: list
    token_caches: dict  # split -> token cache path
    model: keras.Model
    segmenter: object  # token ids -> (ids, mask), see pipeline.segment_dataset
    max_segments: int
    max_note_tokens: int  # the longest note prefix the model reads
    strategy: tf.distribute.Strategy
    train_label_counts: np.ndarray  # [num_labels] training notes per code

    def dataset(self, split: str) -> tf.data.Dataset:
        """Every note of `split` once, in batches of `batch_size` (`pipeline.segment_dataset`)."""
        return pipeline.segment_dataset(
            self.token_caches[split],
            self.segmenter,
            self.max_segments,
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
                self.token_caches["train"],
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
        self._split_codes = {}  # split -> (codes with a positive note, outside codes per note)

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
        num_notes = token_cache.num_notes(self.token_caches[split], self.config.max_notes)
        started = time.time()
        split_counts = score_counts.SplitCounts(
            len(self.labels),
            num_notes,
            *self.split_codes(split),
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
        logging.info("Counted %s: %d notes in %.1f s", split, num_notes, time.time() - started)
        return counts

    def split_codes(self, split: str) -> tuple:
        """`(tracked, outside)` of a split: the codes with a positive note (int `[codes]`) and
        each note's gold codes outside the label space (int `[notes]`)."""
        if split not in self._split_codes:
            cache, max_notes = self.token_caches[split], self.config.max_notes
            label_counts = token_cache.label_counts(cache, len(self.labels), max_notes)
            notes = dataset.read_notes(self.config.dataset_dir, split)
            outside = dataset.outside_codes(notes, self.labels)
            self._split_codes[split] = (
                np.flatnonzero(label_counts),
                outside[: token_cache.num_notes(cache, max_notes)],
            )
        return self._split_codes[split]

    def metrics(self, split: str, counts: dict, threshold: float) -> dict:
        """`evaluation.evaluate` of a split's counts, with recall on codes unseen in training."""
        unseen_rows = self.train_label_counts[self.split_codes(split)[0]] == 0
        return evaluation.evaluate(counts, threshold, len(self.labels), unseen_rows)


def build_experiment(
    config: ExperimentConfig, strategy: tf.distribute.Strategy = None
) -> Experiment:
    """Prepares the model's vocabulary, tokenizes every split once (cached) and builds the model.

    LongBERT loads its encoder (and the encoder's WordPiece vocabulary); CAML
    builds its word vocabulary and word2vec embeddings from the training notes.
    Either model starts its code biases at the training label frequencies. The
    model's variables belong to `strategy` (default: the current one). The
    returned experiment's config is bound to its vocabulary and labels (see
    `runs.bind_run`), which a resumed run must match.
    """
    strategy = strategy or tf.distribute.get_strategy()
    config = runs.resolve_compute_dtype(config)
    started = time.time()
    with strategy.scope():
        labels = dataset.read_labels(config.dataset_dir)
        model, vocab, segmenter, max_segments, max_note_tokens = _model_and_inputs(config, labels)
        config = runs.bind_run(config, vocab, labels)
        token_caches = {
            split: token_cache.build(config.dataset_dir, split, vocab) for split in dataset.SPLITS
        }
        probe = tf.ones([1, 1, 2], tf.int32)
        distribute.run_on_replicas(model, dict(input_word_ids=probe, input_mask=probe))
        train_label_counts = token_cache.label_counts(
            token_caches["train"], len(labels), config.max_notes
        )
        models.set_label_priors(
            model.label_attention,
            train_label_counts,
            token_cache.num_notes(token_caches["train"], config.max_notes),
        )
        if config.label_init == "descriptions":
            _set_descriptions(model, config.dataset_dir, labels, vocab, train_label_counts)
    logging.info("Built the experiment in %.1f s", time.time() - started)
    return Experiment(
        config,
        labels,
        token_caches,
        model,
        segmenter,
        max_segments,
        max_note_tokens,
        strategy,
        train_label_counts,
    )


def _model_and_inputs(config: ExperimentConfig, labels: list) -> tuple:
    """`(model, vocab, segmenter, max_segments, max_note_tokens)` of the config's model.

    LongBERT reads WordPiece segments of its encoder's vocabulary; CAML one
    segment of `max_words` words of a vocabulary built from the training notes.
    """
    if config.model == "caml":
        vocab, embeddings = words.cached_build(config.dataset_dir, config.seed)
        model = CAML(embeddings, num_labels=len(labels), seed=config.seed)
        return model, vocab, words.word_segmenter(config.max_words), 1, config.max_words
    encoder = encoders.load(encoder_specs.run_encoder(config), config.segments.segment_length)
    model = models.longbert_for(config, encoder, len(labels))
    segmenter = segmentation.bert_segmenter(config.segments, encoder.vocab)
    segments = config.segments
    return model, encoder.vocab, segmenter, segments.max_segments, segments.max_note_tokens


def _set_descriptions(model, dataset_dir: str, labels: list, vocab, train_label_counts) -> None:
    """Conditions every code's label attention on its description (see `descriptions`)."""
    started = time.time()
    texts = descriptions.code_descriptions(dataset_dir, labels)
    model.label_attention.set_descriptions(
        descriptions.cached_embed(model, texts, vocab, dataset_dir), train_label_counts > 0
    )
    logging.info(
        "Descriptions of %d codes embedded or read in %.1f s (%d empty; %d without training notes)",
        len(texts),
        time.time() - started,
        texts.count(""),
        int(np.sum(train_label_counts == 0)),
    )
