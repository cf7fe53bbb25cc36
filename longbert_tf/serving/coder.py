"""The serving module: notes in, codes with probabilities and their evidence out.

`Coder` (token ids) and `TextCoder` (raw text) wrap a finished run's best
weights (`load_trained`); `export.export` saves one with its
`serving_default` signature, which takes

- `inputs="text"`: `text`, a string batch `[batch]` of raw notes. Invalid UTF-8
  is replaced (U+FFFD), tokenization (tensorflow-text `FastBertTokenizer`, the
  encoder's vocabulary and lower-casing) and segmenting run in-graph. Its
  tokenizer ops are tensorflow-text's: TensorFlow Serving has them built in, a
  bare TensorFlow process must `import tensorflow_text` before loading.
- `inputs="token_ids"`: `token_ids` int32 `[batch, max_tokens]` (WordPiece ids
  of the encoder's `vocab.txt`, which the SavedModel carries as an asset, no
  special tokens, padded) and `lengths` int32 `[batch]`; only core TensorFlow ops.

and returns, per note, the codes whose probability reaches the threshold tuned
on validation (at most `max_codes`, most probable first):

- `codes` string `[batch, K]`, `code_probabilities` float32 `[batch, K]`
  (K is the batch's largest count; shorter rows are padded with "" and 0),
  `num_codes` int32 `[batch]`;
- `probabilities` float32 `[batch, num_labels]`, every code, label order;
- evidence, the `EVIDENCE_TOKENS` tokens with the most label attention for each
  returned code: `evidence_token_index` int32 `[batch, K, E]` (the token's
  position in the note, -1 where none), `evidence_weight` float32, and for text
  inputs `evidence_start`/`evidence_end` int64 byte offsets into the (UTF-8) note.

A text export has a second signature, `codes_from` (`CODES_FROM`), taking
`text` and `min_probability` float32 `[]`: the same outputs for the codes whose
probability reaches `min_probability` instead of the threshold (callers that
want the codes under it too, such as `suggestions.Suggester`'s near misses; the
stored threshold is left alone).

A run fused with term matching (`experiments.fuse`) is served with text inputs
only: its probabilities and threshold are the fusion's (`lexical.fusion`),
the matcher runs in-graph, and `match_start`/`match_end` int64 `[batch, K]` are
the byte offsets of each returned code's longest matched term (-1 where none),
evidence beside the attention's tokens.

A run fused with the terms of another copy of its notes (`experiments.fuse
--match_data_dir`: a model reading the English translation, a dictionary
matching the Spanish original) is a `TranslationCoder`: both signatures take
`text`, the note as written, which the matcher reads and `match_start`/
`match_end` point into, and `translation` `[batch]`, the same note as the
model read it in training, which `evidence_start`/`evidence_end` point into.

The label list (`labels`, and the asset `labels.txt`), the `threshold`, the
segment geometry and the vocabulary are stored in the SavedModel; nothing else
is needed to serve it. It also carries the dataset's descriptions of its codes
(the asset `descriptions.tsv`) and their classification (`code_system`), for
`experiments.predict` and other clients.
"""

import dataclasses
import json
import os

from longbert_tf import run_folder
from longbert_tf.configs import ExperimentConfig, SegmentConfig
from longbert_tf.data import dataset, segmentation, tokenization
from longbert_tf.evaluation import score_counts
from longbert_tf.framework import tf
from longbert_tf.lexical import fitting
from longbert_tf.lexical.fusion import Fusion
from longbert_tf.lexical.term_matcher import TermIndex, TermMatcher
from longbert_tf.modeling import encoder_specs, encoders, longbert
from longbert_tf.training import runs

EVIDENCE_TOKENS = 3
MAX_CODES = 100
# The text exports' second signature: the codes down to a probability the caller gives.
CODES_FROM = "codes_from"


@dataclasses.dataclass
class TrainedModel:
    """A finished run's best weights with what serving needs beside them."""

    config: ExperimentConfig
    model: longbert.LongBERT
    vocab: tokenization.Vocab
    labels: list
    threshold: float
    fusion: Fusion | None = None
    term_index: TermIndex | None = None
    # The fusion matched another copy of the notes than the model read (a translation).
    reads_translation: bool = False


def load_trained(
    model_dir: str, compute_dtype: str | None = None, with_fusion: bool = True
) -> TrainedModel:
    """Rebuilds the model of a finished `experiments.run` and restores its best checkpoint;
    its products run in the run's compute dtype, or in `compute_dtype` when given (the
    variables are float32 either way). With `with_fusion`, the run's lexical fusion
    (`experiments.fuse`), when it has one, comes too, with its threshold."""
    config = run_folder.saved_config(model_dir)
    if config is None:
        raise FileNotFoundError(f"{model_dir} holds no run ({run_folder.CONFIG_FILE} is missing)")
    if compute_dtype is not None:
        config = dataclasses.replace(config, compute_dtype=compute_dtype)
    if config.model != "longbert":
        raise ValueError(f"{model_dir} holds a {config.model} model; export serves LongBERT models")
    metrics_path = os.path.join(model_dir, run_folder.METRICS_FILE)
    if not os.path.exists(metrics_path):
        raise FileNotFoundError(f"{metrics_path} does not exist: finish training before exporting")
    with open(metrics_path) as metrics_file:
        threshold = json.load(metrics_file)["dev"]["threshold"]
    labels = dataset.read_labels(model_dir)
    encoder = encoders.load(encoder_specs.run_encoder(config), config.segments.segment_length)
    runs.bind_run(config, encoder.vocab, labels)  # the run's own vocabulary and labels
    model = longbert.longbert_for(config, encoder, len(labels))
    probe = tf.ones([1, 1, 2], tf.int32)
    model(dict(input_word_ids=probe, input_mask=probe))
    best = tf.train.latest_checkpoint(os.path.join(model_dir, run_folder.BEST_DIR))
    tf.train.Checkpoint(model=model).restore(
        best
    ).expect_partial().assert_existing_objects_matched()
    trained = TrainedModel(config, model, encoder.vocab, labels, threshold)
    fusion_dir = os.path.join(model_dir, run_folder.FUSION_DIR)
    fusion_path = os.path.join(fusion_dir, run_folder.FUSION_FILE)
    if with_fusion and os.path.exists(fusion_path):
        stale = fitting.stale_fusion(model_dir)
        if stale:
            raise ValueError(f"{stale}: fit it again (experiments.fuse) or export without it")
        with open(fusion_path) as fusion_file:
            trained.reads_translation = bool(json.load(fusion_file).get("match_data_dir"))
        trained.fusion = Fusion.load(fusion_path)
        trained.term_index = TermIndex.load(os.path.join(fusion_dir, run_folder.TERM_INDEX_FILE))
        trained.threshold = trained.fusion.threshold
    return trained


class Coder(tf.Module):
    """Token ids in, codes out (core TensorFlow ops only); see the module docstring."""

    def __init__(self, trained: TrainedModel, max_codes: int = MAX_CODES):
        super().__init__(name="coder")
        if trained.fusion is not None and not isinstance(self, TextCoder):
            raise ValueError(
                "the run's codes are fused with term matching, which reads text: export it with "
                "text inputs, or without its fusion"
            )
        self.model = trained.model
        self.fusion = trained.fusion
        self.labels = tf.Variable(trained.labels, trainable=False, name="labels")
        # Selects, in float32, exactly the probabilities the metrics counted as reaching it.
        self.threshold = tf.Variable(
            score_counts.float32_at_least(trained.threshold), trainable=False, name="threshold"
        )
        self.vocab_file = tf.saved_model.Asset(trained.vocab.path)
        self.do_lower_case = tf.Variable(trained.vocab.lower_case, trainable=False)
        self.seq_len = tf.Variable(trained.config.segments.seq_len, trainable=False)
        self._segments = trained.config.segments
        self._special_ids = (trained.vocab.cls_id, trained.vocab.sep_id, trained.vocab.pad_id)
        self._max_codes = min(max_codes, len(trained.labels))

    def _segment_batch(self, token_ids, lengths):
        """Ids `[batch, max_tokens]` -> features and token index (`[batch, segments, width]`)."""
        segments: SegmentConfig = self._segments
        shape = [segments.max_segments, segments.segment_length]

        def one_note(note):
            ids, length = note
            word_ids, mask = segmentation.segment_tokens(ids[:length], segments, *self._special_ids)
            token_index, _ = segmentation.segment_layout(length, segments)
            rows = [[0, segments.max_segments - tf.shape(word_ids)[0]], [0, 0]]
            return (
                tf.pad(word_ids, rows),
                tf.pad(mask, rows),
                tf.pad(token_index, rows, constant_values=-1),
            )

        spec = tf.TensorSpec(shape, tf.int32)
        word_ids, mask, token_index = tf.map_fn(
            one_note, (token_ids, lengths), fn_output_signature=(spec, spec, spec)
        )
        num_segments = tf.maximum(tf.reduce_max(tf.reduce_sum(mask[:, :, 0], axis=1)), 1)
        width = tf.maximum(tf.reduce_max(tf.reduce_sum(mask, axis=-1)), 1)

        def trim(values):
            return values[:, :num_segments, :width]

        features = dict(input_word_ids=trim(word_ids), input_mask=trim(mask))
        return features, trim(token_index)

    def _code(self, token_ids, lengths, min_probability, matches=None):
        """Outputs of the module docstring for the codes whose probability reaches
        `min_probability` (float32 scalar); `matches` (`term_matcher.TermMatcher` outputs)
        fuse the logits (`fusion.Fusion`) and add the returned codes' matched spans."""
        token_ids = tf.cast(token_ids, tf.int32)
        lengths = tf.clip_by_value(tf.cast(lengths, tf.int32), 0, tf.shape(token_ids)[1])
        features, token_index = self._segment_batch(token_ids, lengths)
        tokens, token_mask = self.model.encode(features, training=False)
        logits = self.model.label_attention(tokens, token_mask)
        if matches is not None:
            logits = self.fusion.logits(logits, matches["features"])
        probabilities = tf.sigmoid(logits)
        top = tf.math.top_k(probabilities, self._max_codes)
        num_codes = tf.reduce_sum(tf.cast(top.values >= min_probability, tf.int32), axis=1)
        num_returned = tf.reduce_max(tf.concat([num_codes, [0]], 0))
        label_indices = top.indices[:, :num_returned]
        returned = tf.range(num_returned)[tf.newaxis, :] < num_codes[:, tf.newaxis]
        attention = self.model.label_attention.attention_weights(tokens, token_mask, label_indices)
        evidence = tf.math.top_k(attention, tf.minimum(EVIDENCE_TOKENS, tf.shape(attention)[2]))
        flat_index = tf.reshape(token_index, [tf.shape(token_index)[0], -1])
        evidence_index = tf.gather(flat_index, evidence.indices, batch_dims=1)
        has_evidence = returned[:, :, tf.newaxis] & (evidence_index >= 0) & (evidence.values > 0)
        outputs = {}
        if matches is not None:
            for side in ("start", "end"):
                found = tf.gather(matches[side], label_indices, batch_dims=1)
                outputs[f"match_{side}"] = tf.where(returned, found, tf.constant(-1, tf.int64))
        return dict(
            **outputs,
            codes=tf.where(returned, tf.gather(self.labels, label_indices), ""),
            code_probabilities=tf.where(returned, top.values[:, :num_returned], 0.0),
            num_codes=num_codes,
            probabilities=probabilities,
            evidence_token_index=tf.where(has_evidence, evidence_index, -1),
            evidence_weight=tf.where(has_evidence, evidence.values, 0.0),
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="token_ids"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ]
    )
    def serve(self, token_ids, lengths):
        return self._code(token_ids, lengths, self.threshold)

    def signatures(self) -> dict:
        """The SavedModel's signatures: name -> concrete function."""
        return {"serving_default": self.serve.get_concrete_function()}


class TextCoder(Coder):
    """Raw text in, codes out; tokenizes in-graph with tensorflow-text."""

    def __init__(self, trained: TrainedModel, max_codes: int = MAX_CODES):
        super().__init__(trained, max_codes)
        if trained.reads_translation and not isinstance(self, TranslationCoder):
            raise ValueError(
                "the run's fusion matched another copy of its notes than the model reads (a "
                "translation): serve it as a TranslationCoder, which takes both texts"
            )
        self.tokenizer = tokenization.make_tokenizer(trained.vocab)
        self.matcher = None
        if trained.fusion is not None:
            self.matcher = TermMatcher(trained.term_index, len(trained.labels))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return self.codes_from(text, self.threshold)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([], tf.float32, name="min_probability"),
        ]
    )
    def codes_from(self, text, min_probability):
        """`serve`'s outputs for the codes reaching `min_probability` (module docstring)."""
        text = valid_utf8(text)
        matches = None if self.matcher is None else self.matcher(text)
        return self._text_codes(text, min_probability, matches)

    def _text_codes(self, text, min_probability, matches):
        """`_code`'s outputs for the model's reading of `text` (valid UTF-8 `[batch]`), with
        the evidence tokens' byte offsets into it."""
        token_ids, starts, ends = self.tokenizer.tokenize_with_offsets(text)
        outputs = self._code(
            token_ids.to_tensor(),
            tf.cast(token_ids.row_lengths(), tf.int32),
            min_probability,
            matches,
        )
        index = outputs["evidence_token_index"]
        for name, offsets in (("evidence_start", starts), ("evidence_end", ends)):
            # One extra column, so a batch of empty notes still has something to gather.
            dense = tf.pad(
                tf.cast(offsets.to_tensor(-1), tf.int64), [[0, 0], [0, 1]], constant_values=-1
            )
            found = tf.gather(dense, tf.maximum(index, 0), batch_dims=1)
            outputs[name] = tf.where(index >= 0, found, tf.constant(-1, tf.int64))
        return outputs

    def signatures(self) -> dict:
        return {**super().signatures(), CODES_FROM: self.codes_from.get_concrete_function()}


class TranslationCoder(TextCoder):
    """Text in twice: the note as written (`text`, matched) and its `translation` (read by
    the model); see the module docstring."""

    def __init__(self, trained: TrainedModel, max_codes: int = MAX_CODES):
        if not trained.reads_translation:
            raise ValueError("the run's fusion matched the notes the model reads: a TextCoder")
        super().__init__(trained, max_codes)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None], tf.string, name="translation"),
        ]
    )
    def serve(self, text, translation):
        return self.codes_from(text, translation, self.threshold)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None], tf.string, name="translation"),
            tf.TensorSpec([], tf.float32, name="min_probability"),
        ]
    )
    def codes_from(self, text, translation, min_probability):
        """`serve`'s outputs for the codes reaching `min_probability` (module docstring)."""
        tf.debugging.assert_equal(
            tf.size(text), tf.size(translation), message="give one translation per note"
        )
        matches = self.matcher(valid_utf8(text))
        return self._text_codes(valid_utf8(translation), min_probability, matches)


def valid_utf8(text):
    """Strings `[batch]` with invalid UTF-8 replaced (U+FFFD)."""
    return tf.strings.unicode_transcode(
        text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
