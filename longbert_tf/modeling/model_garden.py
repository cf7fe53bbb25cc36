"""TF-Hub BERT encoders exported by TF Model Garden (the paper's `small_bert`) as this package's
network: the same variables, rebuilt so they can compute in another dtype.

A TF-Hub SavedModel replays the graph it was traced with, in float32. Its
variables, named by Model Garden's `BertEncoder` (`transformer/layer_0/
self_attention/query/kernel` of shape `[hidden, heads, head_size]`, ...), are
all a BERT needs: `architecture` reads the sizes from their shapes and
`keras_weights` maps them onto `bert.build_bert_encoder`'s names and shapes,
which `encoder_specs.with_compute_dtype` then saves in the TF-Hub format in any
compute dtype.
"""

import re

import numpy as np

from longbert_tf.modeling import bert

LAYER = re.compile(r"^transformer/layer_(\d+)/")
# Model Garden's name -> this package's, outside the per-head attention projections.
RENAMED = {
    "embeddings/layer_norm/": "embeddings_layer_norm/",
    "self_attention/attention_output/": "self_attention/output/",
    "pooler_transform/": "pooler/",
}


def is_model_garden(weights: dict) -> bool:
    """Whether `weights` (name without `:0` -> array) are a Model Garden BERT encoder's."""
    return {
        "word_embeddings/embeddings",
        "embeddings/layer_norm/gamma",
        "transformer/layer_0/self_attention/query/kernel",
    } <= weights.keys()


def architecture(weights: dict, source: str) -> bert.BertArchitecture:
    """The `BertArchitecture` of a Model Garden encoder, read from its variables' shapes.
    Embedding factorisation (ALBERT-style `embedding_projection`) is refused by name."""
    if "embedding_projection/kernel" in weights:
        raise ValueError(f"{source}: factorised embeddings (embedding_projection) are not BERT's")
    vocab_size, hidden_size = weights["word_embeddings/embeddings"].shape
    layers = {int(match.group(1)) for name in weights if (match := LAYER.match(name))}
    if layers != set(range(len(layers))):
        raise ValueError(f"{source}: transformer layers {sorted(layers)} are not 0 to N-1")
    return bert.BertArchitecture(
        num_layers=len(layers),
        hidden_size=hidden_size,
        num_heads=weights["transformer/layer_0/self_attention/query/kernel"].shape[1],
        intermediate_size=weights["transformer/layer_0/intermediate/kernel"].shape[1],
        vocab_size=vocab_size,
        max_positions=weights["position_embedding/embeddings"].shape[0],
        type_vocab_size=weights["type_embeddings/embeddings"].shape[0],
        activation="gelu_tanh",  # Model Garden's "gelu" is the tanh approximation
    )


def keras_weights(weights: dict, arch: bert.BertArchitecture) -> dict:
    """`bert.build_bert_encoder`'s weights (name -> array) from a Model Garden encoder's.

    The per-head attention tensors are flattened in their own order: query, key and
    value kernels `[hidden, heads, head_size]` -> `[hidden, hidden]` and biases
    `[heads, head_size]` -> `[hidden]`; the output kernel `[heads, head_size, hidden]`
    -> `[hidden, hidden]`, as `SelfAttention` splits and joins heads.
    """
    hidden = arch.hidden_size
    converted = {}
    for name, value in weights.items():
        ours = name
        for theirs, renamed in RENAMED.items():
            ours = ours.replace(theirs, renamed)
        if "/self_attention/" in ours and value.ndim >= 2 and ours.endswith("/kernel"):
            value = value.reshape(hidden, hidden)
        elif "/self_attention/" in ours and value.ndim == 2:
            value = value.reshape(hidden)
        converted[ours] = np.asarray(value, np.float32)
    return converted
