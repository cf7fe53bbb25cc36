"""Loading an encoder in the TF-Hub BERT encoder format through `hub.KerasLayer`.

Whatever `--encoder` names (see `encoder_specs`), the model reaches it
through `hub.KerasLayer` over a SavedModel with inputs `input_word_ids`,
`input_mask`, `input_type_ids`, outputs `sequence_output`, `pooled_output`,
and the root attributes `vocab_file` (asset) and `do_lower_case` (bool
variable), as TF-Hub's BERT encoders have.
"""

import dataclasses

from absl import logging

from longbert_tf import distribute
from longbert_tf.data import tokenization
from longbert_tf.framework import hub, tf
from longbert_tf.modeling import encoder_specs
from longbert_tf.modeling.bert import BertArchitecture, build_bert_encoder


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


def load(handle: str, segment_length: int) -> Encoder:
    """Loads an encoder through `hub.KerasLayer` (trainable) and checks it can read segments.

    Raises ValueError when the SavedModel lacks the TF-Hub BERT encoder
    attributes or when `segment_length` exceeds its position embeddings.
    """
    layer = hub.KerasLayer(handle, trainable=True, name="encoder")
    vocab = tokenization.vocab_of(layer.resolved_object, handle)
    position_tables = [w for w in layer.weights if "position_embedding" in w.name]
    max_positions = position_tables[0].shape[0] if position_tables else None
    if max_positions is not None and segment_length > max_positions:
        raise ValueError(
            f"segment_length={segment_length} exceeds the {max_positions} positions of "
            f"encoder {handle}; use a segment_length of at most {max_positions}"
        )
    probe = tf.zeros([1, segment_length], tf.int32)
    outputs = distribute.run_on_replicas(
        layer, dict(input_word_ids=probe, input_mask=probe + 1, input_type_ids=probe)
    )
    return Encoder(
        layer=layer,
        handle=handle,
        vocab=vocab,
        hidden_size=int(outputs["sequence_output"].shape[-1]),
        max_positions=max_positions or segment_length,
    )


def count_parameters(
    spec: str,
    dataset_dir: str,
    segment_length: int,
    seed: int = 0,
    num_layers: int = None,
    vocab_source: str | None = None,
) -> tuple:
    """Returns `(trainable parameters, hidden size, source)` of an encoder, needing no notes.

    A `random:` spec is counted on the network itself; a handle that cannot be
    reached (no network) is counted on a randomly initialised network of the
    size its name gives (e.g. `..._L-2_H-256_A-4`), which `source` says.
    """
    if not spec.startswith(encoder_specs.RANDOM_PREFIX) or vocab_source:
        try:
            handle = encoder_specs.resolve(spec, dataset_dir, seed, num_layers, vocab_source)
            encoder = load(handle, segment_length)
            return encoder.num_parameters, encoder.hidden_size, spec
        except OSError as error:
            logging.warning("Encoder %s is unavailable: %s", spec, error)
    arch = BertArchitecture.from_name(spec)
    if num_layers is not None:
        arch = dataclasses.replace(arch, num_layers=num_layers)
    source = (
        spec
        if spec.startswith(encoder_specs.RANDOM_PREFIX)
        else f"{arch.name} shape of {spec} (offline)"
    )
    return build_bert_encoder(arch).count_params(), arch.hidden_size, source
