"""Serving SavedModels: notes in, codes with probabilities and their evidence out.

`export(model_dir, export_dir, inputs)` writes a SavedModel whose
`serving_default` signature takes

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

The label list (`labels`, and the asset `labels.txt`), the `threshold`, the
segment geometry and the vocabulary are stored in the SavedModel; nothing else
is needed to serve it. It also carries the dataset's descriptions of its codes
(the asset `descriptions.tsv`) and their classification (`code_system`), for
`experiments.predict` and other clients.

Folders follow TensorFlow Serving's layout: `export_dir` named by a number
(`exports/coder/3`) is that version; any other `export_dir` is a model base
folder, and the export becomes its next version (`exports/coder/1`, `2`, ...).
Nothing but an earlier export of this package at the same version is ever
replaced (`EXPORT_INFO` marks one).
"""

import dataclasses
import json
import os
import tempfile

from longbert_tf import files
from longbert_tf.configs import ExperimentConfig, SegmentConfig
from longbert_tf.data import dataset, descriptions, segmentation, tokenization
from longbert_tf.evaluation import score_counts
from longbert_tf.framework import tf
from longbert_tf.modeling import encoder_specs, encoders, longbert
from longbert_tf.modeling.longbert import LongBERT
from longbert_tf.training import runs

EVIDENCE_TOKENS = 3
MAX_CODES = 100
# Beside the SavedModel files: what was exported from which run (marks an export of this package).
EXPORT_INFO = "longbert_tf_export.json"


@dataclasses.dataclass
class TrainedModel:
    """A finished run's best weights with what serving needs beside them."""

    config: ExperimentConfig
    model: LongBERT
    vocab: tokenization.Vocab
    labels: list
    threshold: float


def load_trained(model_dir: str) -> TrainedModel:
    """Rebuilds the model of a finished `experiments.run` and restores its best checkpoint."""
    config = runs.saved_config(model_dir)
    if config is None:
        raise FileNotFoundError(f"{model_dir} holds no run ({runs.CONFIG_FILE} is missing)")
    if config.model != "longbert":
        raise ValueError(f"{model_dir} holds a {config.model} model; export serves LongBERT models")
    metrics_path = os.path.join(model_dir, runs.METRICS_FILE)
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
    best = tf.train.latest_checkpoint(os.path.join(model_dir, "best"))
    tf.train.Checkpoint(model=model).restore(
        best
    ).expect_partial().assert_existing_objects_matched()
    return TrainedModel(config, model, encoder.vocab, labels, threshold)


class Coder(tf.Module):
    """Token ids in, codes out (core TensorFlow ops only); see the module docstring."""

    def __init__(self, trained: TrainedModel, max_codes: int = MAX_CODES):
        super().__init__(name="coder")
        self.model = trained.model
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

    def _code(self, token_ids, lengths):
        token_ids = tf.cast(token_ids, tf.int32)
        lengths = tf.clip_by_value(tf.cast(lengths, tf.int32), 0, tf.shape(token_ids)[1])
        features, token_index = self._segment_batch(token_ids, lengths)
        tokens, token_mask = self.model.encode(features, training=False)
        probabilities = tf.sigmoid(self.model.label_attention(tokens, token_mask))
        top = tf.math.top_k(probabilities, self._max_codes)
        num_codes = tf.reduce_sum(tf.cast(top.values >= self.threshold, tf.int32), axis=1)
        num_returned = tf.reduce_max(tf.concat([num_codes, [0]], 0))
        label_indices = top.indices[:, :num_returned]
        returned = tf.range(num_returned)[tf.newaxis, :] < num_codes[:, tf.newaxis]
        attention = self.model.label_attention.attention_weights(tokens, token_mask, label_indices)
        evidence = tf.math.top_k(attention, tf.minimum(EVIDENCE_TOKENS, tf.shape(attention)[2]))
        flat_index = tf.reshape(token_index, [tf.shape(token_index)[0], -1])
        evidence_index = tf.gather(flat_index, evidence.indices, batch_dims=1)
        has_evidence = returned[:, :, tf.newaxis] & (evidence_index >= 0) & (evidence.values > 0)
        return dict(
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
        return self._code(token_ids, lengths)


class TextCoder(Coder):
    """Raw text in, codes out; tokenizes in-graph with tensorflow-text."""

    def __init__(self, trained: TrainedModel, max_codes: int = MAX_CODES):
        super().__init__(trained, max_codes)
        self.tokenizer = tokenization.make_tokenizer(trained.vocab)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        text = tf.strings.unicode_transcode(
            text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        token_ids, starts, ends = self.tokenizer.tokenize_with_offsets(text)
        outputs = self._code(token_ids.to_tensor(), tf.cast(token_ids.row_lengths(), tf.int32))
        index = outputs["evidence_token_index"]
        for name, offsets in (("evidence_start", starts), ("evidence_end", ends)):
            # One extra column, so a batch of empty notes still has something to gather.
            dense = tf.pad(
                tf.cast(offsets.to_tensor(-1), tf.int64), [[0, 0], [0, 1]], constant_values=-1
            )
            found = tf.gather(dense, tf.maximum(index, 0), batch_dims=1)
            outputs[name] = tf.where(index >= 0, found, tf.constant(-1, tf.int64))
        return outputs


def _attach_code_files(module: tf.Module, trained: TrainedModel, scratch: str) -> None:
    """Gives the export its label list (`labels.txt`, the order of `probabilities`) and the
    dataset's descriptions of those codes (`descriptions.tsv`, when it has them) as assets, and
    the classification of its codes (`code_system`, "" when they are made up)."""
    labels_path = os.path.join(scratch, dataset.LABELS_FILE)
    files.write_text(labels_path, "".join(f"{code}\n" for code in trained.labels))
    module.labels_file = tf.saved_model.Asset(labels_path)
    dataset_descriptions = os.path.join(trained.config.dataset_dir, descriptions.DESCRIPTIONS_FILE)
    if os.path.exists(dataset_descriptions):
        known = descriptions.read_descriptions(dataset_descriptions)
        descriptions.write_descriptions(
            scratch, {code: known[code] for code in trained.labels if code in known}
        )
        module.descriptions_file = tf.saved_model.Asset(
            os.path.join(scratch, descriptions.DESCRIPTIONS_FILE)
        )
    module.code_system = tf.Variable(trained.config.preset.code_system, trainable=False)


def code_descriptions(loaded) -> tuple:
    """`({code: description}, code_system)` of a loaded export (empty for exports made before
    they carried them)."""
    code_system = loaded.code_system.numpy().decode() if hasattr(loaded, "code_system") else ""
    if not hasattr(loaded, "descriptions_file"):
        return {}, code_system
    path = loaded.descriptions_file.asset_path.numpy().decode()
    return descriptions.read_descriptions(path), code_system


def version_dir(export_dir: str) -> str:
    """The folder an export to `export_dir` writes: `export_dir` itself when its name is a
    version number, else the next version below it, a model base folder that must hold
    nothing but versions."""
    if os.path.basename(os.path.normpath(export_dir)).isdigit():
        return export_dir
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise FileExistsError(f"--export_dir={export_dir} is a file, not a folder")
    entries = os.listdir(export_dir) if os.path.isdir(export_dir) else []
    # Hidden entries are the temporaries of exports under way (see files.atomic_dir).
    foreign = sorted(entry for entry in entries if not entry.isdigit() and entry[:1] != ".")
    if foreign:
        raise FileExistsError(
            f"--export_dir={export_dir} holds {', '.join(foreign[:5])}: it is not a model base "
            "folder (version folders 1, 2, ... only), so nothing is written there; name a new "
            "or empty folder, or a version folder"
        )
    versions = [int(entry) for entry in entries if entry.isdigit()]
    return os.path.join(export_dir, str(max(versions, default=0) + 1))


def latest_version(export_dir: str) -> str:
    """The SavedModel folder of `export_dir`: itself when it holds one, else its highest
    version (as TensorFlow Serving picks)."""
    if os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        return export_dir
    versions = []
    if os.path.isdir(export_dir):
        versions = [
            int(entry)
            for entry in os.listdir(export_dir)
            if entry.isdigit() and os.path.exists(os.path.join(export_dir, entry, "saved_model.pb"))
        ]
    if not versions:
        raise FileNotFoundError(
            f"{export_dir} holds no SavedModel, neither itself nor in a version folder "
            "(1, 2, ...): pass a folder experiments.export wrote"
        )
    return os.path.join(export_dir, str(max(versions)))


def export(
    model_dir: str, export_dir: str, inputs: str = "text", max_codes: int = MAX_CODES
) -> str:
    """Writes the serving SavedModel of a finished run (atomically) as a version of
    `export_dir` (`version_dir`) and returns the version's folder."""
    if inputs not in ("text", "token_ids"):
        raise ValueError(f"inputs={inputs!r}: choose text or token_ids")
    target = version_dir(export_dir)
    if os.path.isdir(target) and os.listdir(target):
        if not os.path.exists(os.path.join(target, EXPORT_INFO)):
            raise FileExistsError(
                f"{target} is not empty and not an export of this package: it is not replaced"
            )
    trained = load_trained(model_dir)
    module = (TextCoder if inputs == "text" else Coder)(trained, max_codes)
    with (
        tempfile.TemporaryDirectory() as scratch,
        files.atomic_dir(target, (*files.SAVED_MODEL_ENTRIES, EXPORT_INFO)) as temporary,
    ):
        _attach_code_files(module, trained, scratch)
        tf.saved_model.save(
            module, temporary, signatures={"serving_default": module.serve.get_concrete_function()}
        )
        info = dict(model_dir=os.path.abspath(model_dir), inputs=inputs, max_codes=max_codes)
        files.write_json(os.path.join(temporary, EXPORT_INFO), info)
    return target
