"""A BERT encoder network in Keras with the TF-Hub BERT encoder interface.

Inputs (int32, `[batch, length]`): `input_word_ids`, `input_mask` (1 for real
tokens), `input_type_ids`. Outputs: `sequence_output` `[batch, length, hidden]`,
`pooled_output` `[batch, hidden]` (tanh dense over the first token) and
`encoder_outputs` (one `[batch, length, hidden]` tensor per layer).

The computation is the original BERT's (post-layer-norm blocks, exact GELU),
so weights of published BERT checkpoints reproduce their reference outputs
(see `longbert_tf.modeling.convert`).
"""

import contextlib
import dataclasses
import json
import os
import re
import tempfile

from longbert_tf import files
from longbert_tf.configs import MATMUL_DTYPES
from longbert_tf.framework import keras, tf
from longbert_tf.modeling import bert_layers
from longbert_tf.modeling.bert_layers import PositionEmbedding, SelfAttention, dropout_layer

ARCHITECTURE_FILE = "encoder_config.json"


@dataclasses.dataclass(frozen=True)
class BertArchitecture:
    """Sizes of a BERT encoder; the defaults are the paper's L-2/H-256/A-4."""

    num_layers: int = 2
    hidden_size: int = 256
    num_heads: int = 4
    intermediate_size: int = 1024
    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    initializer_range: float = 0.02
    layer_norm_epsilon: float = 1e-12
    activation: str = "gelu"  # of the feed-forward network: a key of bert_layers.ACTIVATIONS

    def __post_init__(self):
        if self.activation not in bert_layers.ACTIVATIONS:
            raise ValueError(
                f"activation={self.activation!r}: one of {list(bert_layers.ACTIVATIONS)}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )

    @classmethod
    def from_name(cls, name: str, **overrides) -> "BertArchitecture":
        """Parses the small-BERT naming scheme, e.g. `L-2_H-256_A-4` (intermediate = 4 H)."""
        match = re.search(r"L-(\d+)_H-(\d+)_A-(\d+)", name, flags=re.IGNORECASE)
        if not match:
            raise ValueError(f"{name!r} does not name a BERT size like 'L-2_H-256_A-4'")
        num_layers, hidden_size, num_heads = (int(group) for group in match.groups())
        return cls(
            num_layers=num_layers,
            hidden_size=hidden_size,
            num_heads=num_heads,
            intermediate_size=4 * hidden_size,
            **overrides,
        )

    @property
    def name(self) -> str:
        return f"L-{self.num_layers}_H-{self.hidden_size}_A-{self.num_heads}"


def _transformer_block(hidden, mask, arch: BertArchitecture, initializer, prefix: str):
    """One post-norm BERT block on `[batch, length, hidden]`: self-attention, then the
    feed-forward network, each with dropout, a residual and layer normalisation."""
    attention = SelfAttention(
        arch.num_heads,
        arch.dropout_rate,
        [initializer() for _ in range(4)],
        name=f"{prefix}/self_attention",
    )(hidden, mask)
    attention = dropout_layer(arch.dropout_rate)(attention)
    hidden = keras.layers.LayerNormalization(
        epsilon=arch.layer_norm_epsilon, name=f"{prefix}/self_attention_layer_norm"
    )(hidden + attention)
    intermediate = keras.layers.Dense(
        arch.intermediate_size,
        activation=bert_layers.ACTIVATIONS[arch.activation],
        kernel_initializer=initializer(),
        name=f"{prefix}/intermediate",
    )(hidden)
    output = keras.layers.Dense(
        arch.hidden_size, kernel_initializer=initializer(), name=f"{prefix}/output"
    )(intermediate)
    output = dropout_layer(arch.dropout_rate)(output)
    return keras.layers.LayerNormalization(
        epsilon=arch.layer_norm_epsilon, name=f"{prefix}/output_layer_norm"
    )(hidden + output)


@contextlib.contextmanager
def _dtype_policy(compute_dtype: str):
    """Layers created inside compute in `compute_dtype` with float32 variables (Keras' mixed
    precision: `mixed_bfloat16`, `mixed_float16`), or in float32."""
    if compute_dtype not in MATMUL_DTYPES:
        raise ValueError(f"compute_dtype={compute_dtype!r}: choose from {MATMUL_DTYPES}")
    previous = keras.mixed_precision.global_policy()
    policy = "float32" if compute_dtype == "float32" else f"mixed_{compute_dtype}"
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_bert_encoder(
    arch: BertArchitecture,
    seed: int = 0,
    name: str = "bert_encoder",
    compute_dtype: str = "float32",
) -> keras.Model:
    """Builds a randomly initialised BERT with the TF-Hub encoder inputs and outputs.

    Every weight matrix gets its own initializer seeded from `seed`, so the
    encoder is reproducible and no two layers start equal. With
    `compute_dtype="bfloat16"` (or float16) every layer computes in it on float32
    variables (softmax and layer-norm statistics stay float32) and the outputs
    are float32, as the encoder contract has them.
    """
    with _dtype_policy(compute_dtype):
        outputs, inputs = _network(arch, seed)
    if compute_dtype != "float32":
        to_float32 = keras.layers.Activation("linear", dtype="float32", name="float32_outputs")
        outputs = tf.nest.map_structure(to_float32, outputs)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def _network(arch: BertArchitecture, seed: int) -> tuple:
    """`(outputs, inputs)` of `build_bert_encoder`, in the current dtype policy."""
    seeds = iter(range(seed * 1000, seed * 1000 + 1000))

    def initializer():
        return keras.initializers.TruncatedNormal(stddev=arch.initializer_range, seed=next(seeds))

    word_ids = keras.Input([None], dtype=tf.int32, name="input_word_ids")
    mask = keras.Input([None], dtype=tf.int32, name="input_mask")
    type_ids = keras.Input([None], dtype=tf.int32, name="input_type_ids")

    word_embedding = keras.layers.Embedding(
        arch.vocab_size,
        arch.hidden_size,
        embeddings_initializer=initializer(),
        name="word_embeddings",
    )(word_ids)
    type_embedding = keras.layers.Embedding(
        arch.type_vocab_size,
        arch.hidden_size,
        embeddings_initializer=initializer(),
        name="type_embeddings",
    )(type_ids)
    position_embedding = PositionEmbedding(
        arch.max_positions, initializer(), name="position_embedding"
    )(word_embedding)
    embeddings = keras.layers.Add()([word_embedding, position_embedding, type_embedding])
    embeddings = keras.layers.LayerNormalization(
        epsilon=arch.layer_norm_epsilon, name="embeddings_layer_norm"
    )(embeddings)
    hidden = dropout_layer(arch.dropout_rate)(embeddings)

    encoder_outputs = []
    for index in range(arch.num_layers):
        hidden = _transformer_block(hidden, mask, arch, initializer, f"transformer/layer_{index}")
        encoder_outputs.append(hidden)

    first_token = keras.layers.Lambda(lambda x: x[:, 0, :], name="first_token")(hidden)
    pooled = keras.layers.Dense(
        arch.hidden_size, activation="tanh", kernel_initializer=initializer(), name="pooler"
    )(first_token)
    outputs = dict(sequence_output=hidden, pooled_output=pooled, encoder_outputs=encoder_outputs)
    return outputs, dict(input_word_ids=word_ids, input_mask=mask, input_type_ids=type_ids)


def save_hub_format(
    model: keras.Model,
    arch: BertArchitecture,
    vocab_tokens: list,
    lower_case: bool,
    out_dir: str,
    compute_dtype: str = "float32",
) -> str:
    """Saves a network of `build_bert_encoder` as a TF-Hub BERT encoder SavedModel.

    The SavedModel gets the root attributes `vocab_file` (asset) and
    `do_lower_case`, as TF-Hub's BERT encoders have, and the folder an
    `encoder_config.json` with `arch` and the network's `compute_dtype` (so the
    package can rebuild it, e.g. with fewer layers or in another dtype). The
    folder appears complete or not at all.
    """
    if len(vocab_tokens) != arch.vocab_size:
        raise ValueError(
            f"the vocabulary has {len(vocab_tokens)} tokens, the encoder {arch.vocab_size}"
        )
    with (
        tempfile.TemporaryDirectory() as scratch,
        files.atomic_dir(out_dir, (*files.SAVED_MODEL_ENTRIES, "encoder_config.json")) as temporary,
    ):
        vocab_path = os.path.join(scratch, "vocab.txt")
        with open(vocab_path, "w", encoding="utf-8") as vocab_file:
            vocab_file.writelines(f"{token}\n" for token in vocab_tokens)
        model.vocab_file = tf.saved_model.Asset(vocab_path)
        model.do_lower_case = tf.Variable(lower_case, trainable=False, name="do_lower_case")
        model.save(temporary, include_optimizer=False, save_format="tf")
        with open(os.path.join(temporary, ARCHITECTURE_FILE), "w") as config_file:
            json.dump(dataclasses.asdict(arch) | {"compute_dtype": compute_dtype}, config_file)
    return out_dir


def read_architecture(saved_model_dir: str):
    """The `BertArchitecture` saved beside a SavedModel of this package, or None."""
    path = os.path.join(saved_model_dir, ARCHITECTURE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as config_file:
        values = json.load(config_file)
    values.pop("compute_dtype", None)
    return BertArchitecture(**values)


def own_architecture(saved_model_dir: str, needed_by: str) -> BertArchitecture:
    """The `BertArchitecture` of an encoder this package built or converted, else a ValueError
    saying what needs one (`needed_by`, e.g. "pretraining writes back")."""
    arch = read_architecture(saved_model_dir)
    if arch is None:
        raise ValueError(
            f"{saved_model_dir} has no {ARCHITECTURE_FILE}: {needed_by} encoders this package "
            "built or converted (random:, Hugging Face folders, their truncations)"
        )
    return arch


def read_compute_dtype(saved_model_dir: str) -> str:
    """What a SavedModel of this package computes in ("float32" when it does not say)."""
    path = os.path.join(saved_model_dir, ARCHITECTURE_FILE)
    if not os.path.exists(path):
        return "float32"
    with open(path) as config_file:
        return json.load(config_file).get("compute_dtype", "float32")


def assign_weights(model: keras.Model, weights: dict) -> None:
    """Sets every weight of `model` from `weights` (name without `:0` -> array), shapes checked."""
    for variable in model.weights:
        name = variable.name.removesuffix(":0")
        if name not in weights:
            raise ValueError(f"no value for weight {name} {variable.shape}")
        value = weights[name]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"weight {name}: shape {value.shape}, expected {variable.shape}")
        variable.assign(value)
