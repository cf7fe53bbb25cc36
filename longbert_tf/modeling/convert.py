"""Hugging Face BERT checkpoints -> TF-Hub-format BERT encoder SavedModels.

    python -m experiments.convert --hf_dir=PATH --out_dir=PATH [--num_layers=N]

A Hugging Face folder holds `config.json` (`model_type` bert), `model.safetensors`
and `vocab.txt` (and optionally `tokenizer_config.json` with `do_lower_case`).
The weights go into the package's Keras BERT (`longbert_tf.modeling.bert`), which
computes exactly what the reference implementation computes, and the result is
saved with the same inputs, outputs and assets as a TF-Hub BERT encoder.
`experiments.run --encoder=HF_FOLDER` does this once and caches the result.
"""

import json
import os
import struct

import numpy as np
from absl import logging

from longbert_tf import files
from longbert_tf.framework import tf
from longbert_tf.modeling import bert

HF_FILES = ("config.json", "model.safetensors", "vocab.txt")
SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": tf.bfloat16.as_numpy_dtype,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def is_hf_folder(path: str) -> bool:
    return os.path.isdir(path) and all(os.path.exists(os.path.join(path, f)) for f in HF_FILES)


def read_safetensors(path: str) -> dict:
    """All tensors of a `.safetensors` file as NumPy arrays (floats as float32)."""
    with open(path, "rb") as tensor_file:
        (header_size,) = struct.unpack("<Q", tensor_file.read(8))
        header = json.loads(tensor_file.read(header_size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=SAFETENSORS_DTYPES[info["dtype"]])
        array = array.reshape(info["shape"])
        is_float = info["dtype"] in ("F64", "F32", "F16", "BF16")
        tensors[name] = array.astype(np.float32) if is_float else np.array(array)
    return tensors


def architecture_from_config(config: dict, source: str, num_layers: int = None):
    """A `BertArchitecture` from a Hugging Face `config.json`; refuses what BERT is not."""
    if config.get("model_type") != "bert":
        raise ValueError(
            f"{source}: model_type {config.get('model_type')!r} is not supported; only BERT "
            "checkpoints (WordPiece vocabulary, absolute positions) convert exactly"
        )
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{source}: hidden_act {config['hidden_act']!r} is not supported (gelu)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{source}: only absolute position embeddings are supported")
    available = config["num_hidden_layers"]
    if num_layers is not None and not 1 <= num_layers <= available:
        raise ValueError(f"num_layers={num_layers}: {source} has {available} layers")
    return bert.BertArchitecture(
        num_layers=num_layers or available,
        hidden_size=config["hidden_size"],
        num_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"],
        vocab_size=config["vocab_size"],
        max_positions=config["max_position_embeddings"],
        type_vocab_size=config.get("type_vocab_size", 2),
        dropout_rate=config.get("hidden_dropout_prob", 0.1),
        initializer_range=config.get("initializer_range", 0.02),
        layer_norm_epsilon=config.get("layer_norm_eps", 1e-12),
    )


def keras_weights(checkpoint: dict, arch: bert.BertArchitecture, source: str) -> dict:
    """Maps Hugging Face BERT tensor names to the Keras BERT's weight names.

    Dense kernels are transposed (PyTorch stores `[out, in]`). A missing
    pooler (some checkpoints drop it; LongBERT does not use it) is left at its
    random initialisation, with a warning.
    """
    names = {name.removeprefix("bert."): name for name in checkpoint}

    def tensor(name, transpose=False):
        for candidate in (name, name.replace(".weight", ".gamma"), name.replace(".bias", ".beta")):
            if candidate in names:
                value = checkpoint[names[candidate]]
                return value.T if transpose else value
        raise ValueError(f"{source}: tensor {name} is missing")

    def dense(keras_name, hf_name):
        return {
            f"{keras_name}/kernel": tensor(f"{hf_name}.weight", transpose=True),
            f"{keras_name}/bias": tensor(f"{hf_name}.bias"),
        }

    def layer_norm(keras_name, hf_name):
        return {
            f"{keras_name}/gamma": tensor(f"{hf_name}.weight"),
            f"{keras_name}/beta": tensor(f"{hf_name}.bias"),
        }

    weights = {
        "word_embeddings/embeddings": tensor("embeddings.word_embeddings.weight"),
        "position_embedding/embeddings": tensor("embeddings.position_embeddings.weight"),
        "type_embeddings/embeddings": tensor("embeddings.token_type_embeddings.weight"),
        **layer_norm("embeddings_layer_norm", "embeddings.LayerNorm"),
    }
    for index in range(arch.num_layers):
        weights.update(_block_weights(index, dense, layer_norm))
    if "pooler.dense.weight" in names:
        weights.update(dense("pooler", "pooler.dense"))
    return weights


def _block_weights(index: int, dense, layer_norm) -> dict:
    """Keras names -> tensors of transformer block `index` (see `keras_weights`)."""
    ours, theirs = f"transformer/layer_{index}", f"encoder.layer.{index}"
    weights = {}
    for projection in ("query", "key", "value"):
        weights.update(
            dense(f"{ours}/self_attention/{projection}", f"{theirs}.attention.self.{projection}")
        )
    weights.update(dense(f"{ours}/self_attention/output", f"{theirs}.attention.output.dense"))
    weights.update(
        layer_norm(f"{ours}/self_attention_layer_norm", f"{theirs}.attention.output.LayerNorm")
    )
    weights.update(dense(f"{ours}/intermediate", f"{theirs}.intermediate.dense"))
    weights.update(dense(f"{ours}/output", f"{theirs}.output.dense"))
    weights.update(layer_norm(f"{ours}/output_layer_norm", f"{theirs}.output.LayerNorm"))
    return weights


def convert(hf_dir: str, out_dir: str, num_layers: int = None) -> str:
    """Converts a Hugging Face BERT folder (optionally its first `num_layers` blocks)."""
    missing = [name for name in HF_FILES if not os.path.exists(os.path.join(hf_dir, name))]
    if missing:
        raise FileNotFoundError(f"{hf_dir} lacks {missing}: not a Hugging Face BERT folder")
    with open(os.path.join(hf_dir, "config.json")) as config_file:
        arch = architecture_from_config(json.load(config_file), hf_dir, num_layers)
    lower_case = True
    tokenizer_config = os.path.join(hf_dir, "tokenizer_config.json")
    if os.path.exists(tokenizer_config):
        with open(tokenizer_config) as config_file:
            lower_case = bool(json.load(config_file).get("do_lower_case", True))
    with open(os.path.join(hf_dir, "vocab.txt"), encoding="utf-8") as vocab_file:
        vocab_tokens = files.split_lines(vocab_file.read())
    model = bert.build_bert_encoder(arch)
    weights = keras_weights(
        read_safetensors(os.path.join(hf_dir, "model.safetensors")), arch, hf_dir
    )
    if "pooler/kernel" not in weights:
        logging.warning(
            "%s has no pooler weights; pooled_output stays randomly initialised", hf_dir
        )
        weights.update(
            {w.name.removesuffix(":0"): w.numpy() for w in model.weights if "pooler" in w.name}
        )
    bert.assign_weights(model, weights)
    return bert.save_hub_format(model, arch, vocab_tokens, lower_case, out_dir)
