"""An experiment's inputs, resolved once and in order: the encoder and its vocabulary, the label
list, the code descriptions, the token caches and what each split holds.

`resolve(config)` returns one `ExperimentInputs` that the model builder and the
trainer take (see `experiment.build_experiment`); nothing after it reads the
dataset folder again.
"""

import dataclasses

import numpy as np

from longbert_tf.configs import ExperimentConfig
from longbert_tf.data import dataset, descriptions, segmentation, token_cache, words
from longbert_tf.modeling import encoder_specs, encoders
from longbert_tf.training import runs

EVALUATED_SPLITS = ("dev", "test")


@dataclasses.dataclass(frozen=True)
class SplitInputs:
    """One split as the experiment reads it (its first `max_notes` notes)."""

    token_cache: str  # the split's token cache (see `token_cache.build`)
    num_notes: int
    label_counts: np.ndarray  # int64 [num_labels]: notes carrying each code
    outside_codes: np.ndarray | None  # int [num_notes]: gold codes outside the labels (dev, test)

    @property
    def tracked_codes(self) -> np.ndarray:
        """Label indices of the codes with a positive note, int `[codes]`."""
        return np.flatnonzero(self.label_counts)


@dataclasses.dataclass(frozen=True)
class ExperimentInputs:
    """What a model and its trainer are built from.

    `config` is bound to `vocab` and `labels` (`runs.bind_run`) and its compute
    dtype is resolved. LongBERT reads WordPiece segments of its `encoder`'s
    vocabulary; CAML one segment of `max_words` words of a vocabulary built from
    the training notes, with `word_embeddings` float32 `[vocab, dim]`.
    `code_descriptions` holds every label's text with `label_init=descriptions`.
    """

    config: ExperimentConfig
    vocab: object  # tokenization.Vocab or words.WordVocab
    encoder: encoders.Encoder | None
    word_embeddings: np.ndarray | None
    labels: list
    code_descriptions: list | None
    splits: dict  # split -> SplitInputs
    segmenter: object  # token ids -> (ids, mask), see pipeline.segment_dataset
    max_segments: int
    max_note_tokens: int  # the longest note prefix the model reads

    @property
    def train_label_counts(self) -> np.ndarray:
        """Training notes per code, int64 `[num_labels]`."""
        return self.splits["train"].label_counts


def resolve(config: ExperimentConfig) -> ExperimentInputs:
    """Loads the encoder (its variables belong to the current strategy) or builds CAML's word
    vocabulary, reads the labels and descriptions, and tokenizes every split once (cached)."""
    config = runs.resolve_compute_dtype(config)
    if config.model == "caml":
        encoder = None
        vocab, word_embeddings = words.cached_build(config.dataset_dir, config.seed)
        segmenter = words.word_segmenter(config.max_words)
        max_segments, max_note_tokens = 1, config.max_words
    else:
        word_embeddings = None
        encoder = encoders.load(encoder_specs.run_encoder(config), config.segments.segment_length)
        vocab = encoder.vocab
        segmenter = segmentation.bert_segmenter(config.segments, vocab)
        max_segments = config.segments.max_segments
        max_note_tokens = config.segments.max_note_tokens
    labels = dataset.read_labels(config.dataset_dir)
    config = runs.bind_run(config, vocab, labels)
    texts = None
    if config.label_init == "descriptions":
        texts = descriptions.code_descriptions(config.dataset_dir, labels)
    splits = {split: _split_inputs(config, split, vocab, labels) for split in dataset.SPLITS}
    return ExperimentInputs(
        config,
        vocab,
        encoder,
        word_embeddings,
        labels,
        texts,
        splits,
        segmenter,
        max_segments,
        max_note_tokens,
    )


def _split_inputs(config: ExperimentConfig, split: str, vocab, labels: list) -> SplitInputs:
    cache = token_cache.build(config.dataset_dir, split, vocab)
    num_notes = token_cache.num_notes(cache, config.max_notes)
    outside = None
    if split in EVALUATED_SPLITS:
        notes = dataset.read_notes(config.dataset_dir, split)
        outside = dataset.outside_codes(notes, labels)[:num_notes]
    label_counts = token_cache.label_counts(cache, len(labels), config.max_notes)
    return SplitInputs(cache, num_notes, label_counts, outside)
