"""Encoders in the TF-Hub BERT encoder format: resolving, building, saving and loading.

Whatever `--encoder` names, the model reaches it through `hub.KerasLayer` over
a SavedModel with inputs `input_word_ids`, `input_mask`, `input_type_ids`,
outputs `sequence_output`, `pooled_output`, and the root attributes
`vocab_file` (asset) and `do_lower_case` (bool variable), as TF-Hub's BERT
encoders have. Encoder specs:

- a TF-Hub or Kaggle handle, e.g. the paper's `configs.PAPER_ENCODER`;
- a local folder holding such a SavedModel;
- `random:L-2_H-256_A-4` (any `L-*_H-*_A-*`): a randomly initialised BERT of
  that size with a 30,522-token WordPiece vocabulary learned from the
  dataset's training notes, built once and cached in the dataset folder.
"""

import dataclasses
import os
import tempfile

from absl import logging

from longbert_tf import data, files, tokenization
from longbert_tf.bert import BertArchitecture, build_bert_encoder
from longbert_tf.framework import hub, keras, tf

RANDOM_PREFIX = "random:"


@dataclasses.dataclass
class Encoder:
    """A loaded encoder with what the pipeline and the model need to know about it."""

    layer: hub.KerasLayer
    handle: str
    vocab: tokenization.Vocab
    hidden_size: int
    max_positions: int

    @property
    def num_parameters(self) -> int:
        return sum(weight.shape.num_elements() for weight in self.layer.trainable_weights)


def save_hub_encoder(model: keras.Model, vocab_tokens: list, lower_case: bool, out_dir: str):
    """Saves a Keras BERT (see `bert.build_bert_encoder`) as a TF-Hub-format SavedModel.

    The folder appears complete or not at all.
    """
    with tempfile.TemporaryDirectory() as scratch, files.atomic_dir(out_dir) as temporary:
        vocab_path = os.path.join(scratch, "vocab.txt")
        with open(vocab_path, "w", encoding="utf-8") as vocab_file:
            vocab_file.writelines(f"{token}\n" for token in vocab_tokens)
        model.vocab_file = tf.saved_model.Asset(vocab_path)
        model.do_lower_case = tf.Variable(lower_case, trainable=False, name="do_lower_case")
        model.save(temporary, include_optimizer=False, save_format="tf")


def build_random_encoder(arch: BertArchitecture, vocab_tokens: list, out_dir: str, seed: int):
    """Builds a randomly initialised BERT and saves it in the TF-Hub format (lower-cased)."""
    if len(vocab_tokens) != arch.vocab_size:
        raise ValueError(
            f"the vocabulary has {len(vocab_tokens)} tokens, the encoder {arch.vocab_size}"
        )
    save_hub_encoder(build_bert_encoder(arch, seed=seed), vocab_tokens, True, out_dir)


def resolve(spec: str, dataset_dir: str, seed: int = 0) -> str:
    """Turns an encoder spec into a handle `hub.KerasLayer` can load, building it if needed."""
    if spec.startswith(RANDOM_PREFIX):
        arch = BertArchitecture.from_name(spec[len(RANDOM_PREFIX) :])
        out_dir = os.path.join(dataset_dir, "encoders", f"random-{arch.name}-seed{seed}")
        if not os.path.exists(out_dir):
            logging.info("Building %s with a vocabulary learned from the training notes", spec)
            texts = data.read_notes(dataset_dir, "train").text
            vocab_tokens = tokenization.learn_vocab(texts, arch.vocab_size)
            build_random_encoder(arch, vocab_tokens, out_dir, seed)
        return out_dir
    if os.path.isdir(spec) and not os.path.exists(os.path.join(spec, "saved_model.pb")):
        raise ValueError(
            f"encoder folder {spec} holds no saved_model.pb: give a TF-Hub-format BERT "
            "SavedModel folder, a TF-Hub handle, or random:L-*_H-*_A-*"
        )
    return spec


def _vocab_of(resolved, handle: str) -> tokenization.Vocab:
    if not hasattr(resolved, "vocab_file") or not hasattr(resolved, "do_lower_case"):
        raise ValueError(
            f"encoder {handle} has no vocab_file/do_lower_case attributes: it is not a "
            "TF-Hub BERT encoder SavedModel"
        )
    return tokenization.Vocab(
        path=resolved.vocab_file.asset_path.numpy().decode("utf-8"),
        lower_case=bool(resolved.do_lower_case.numpy()),
    )


def load_vocab(handle: str) -> tokenization.Vocab:
    """The vocabulary and lower-casing flag of an encoder, without building a Keras layer."""
    return _vocab_of(hub.load(handle), handle)


def load(handle: str, segment_length: int) -> Encoder:
    """Loads an encoder through `hub.KerasLayer` (trainable) and checks it can read segments.

    Raises ValueError when the SavedModel lacks the TF-Hub BERT encoder
    attributes or when `segment_length` exceeds its position embeddings.
    """
    layer = hub.KerasLayer(handle, trainable=True, name="encoder")
    vocab = _vocab_of(layer.resolved_object, handle)
    position_tables = [w for w in layer.weights if "position_embedding" in w.name]
    max_positions = position_tables[0].shape[0] if position_tables else None
    if max_positions is not None and segment_length > max_positions:
        raise ValueError(
            f"segment_length={segment_length} exceeds the {max_positions} positions of "
            f"encoder {handle}; use a segment_length of at most {max_positions}"
        )
    probe = tf.zeros([1, segment_length], tf.int32)
    outputs = layer(dict(input_word_ids=probe, input_mask=probe + 1, input_type_ids=probe))
    return Encoder(
        layer=layer,
        handle=handle,
        vocab=vocab,
        hidden_size=int(outputs["sequence_output"].shape[-1]),
        max_positions=max_positions or segment_length,
    )


def count_parameters(spec: str, dataset_dir: str, segment_length: int, seed: int = 0) -> tuple:
    """Returns `(trainable parameters, hidden size, source)` of an encoder, needing no notes.

    A `random:` spec is counted on the network itself; a handle that cannot be
    reached (no network) is counted on a randomly initialised network of the
    size its name gives (e.g. `..._L-2_H-256_A-4`), which `source` says.
    """
    if not spec.startswith(RANDOM_PREFIX):
        try:
            encoder = load(resolve(spec, dataset_dir, seed), segment_length)
            return encoder.num_parameters, encoder.hidden_size, spec
        except OSError as error:
            logging.warning("Encoder %s is unavailable: %s", spec, error)
    arch = BertArchitecture.from_name(spec)
    source = spec if spec.startswith(RANDOM_PREFIX) else f"{arch.name} shape of {spec} (offline)"
    return build_bert_encoder(arch).count_params(), arch.hidden_size, source
