"""A TF-Hub encoder exported by TF Model Garden, rebuilt from its own variables: the same outputs
as Model Garden's graph in float32, and a bfloat16 copy that `hub.KerasLayer` runs.

The fixture (`tests/fixtures/model_garden_encoder`, 2 layers, hidden 16) and its reference
outputs were written by Model Garden's own exporter (`make_model_garden_encoder.py`)."""

import logging
import os

import numpy as np
import pytest

from longbert_tf.data import tokenization
from longbert_tf.framework import hub, tf
from longbert_tf.modeling import bert, encoder_specs, encoders, model_garden

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ENCODER = os.path.join(FIXTURES, "model_garden_encoder")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.path.join(FIXTURES, "model_garden_reference.npz")))


def inputs(reference: dict) -> dict:
    names = ("input_word_ids", "input_mask", "input_type_ids")
    return {name: tf.constant(reference[name]) for name in names}


def test_the_rebuilt_network_gives_model_gardens_outputs(reference):
    weights = {v.name.removesuffix(":0"): v.numpy() for v in hub.load(ENCODER).variables}
    assert model_garden.is_model_garden(weights)
    arch = model_garden.architecture(weights, ENCODER)
    assert arch == bert.BertArchitecture(
        num_layers=2,
        hidden_size=16,
        num_heads=2,
        intermediate_size=32,
        vocab_size=40,
        max_positions=64,
        type_vocab_size=2,
        activation="gelu_tanh",
    )
    network = bert.build_bert_encoder(arch)
    bert.assign_weights(network, model_garden.keras_weights(weights, arch))  # every weight set
    outputs = network(inputs(reference), training=False)
    real = reference["input_mask"].astype(bool)  # padded positions are not compared
    np.testing.assert_allclose(
        outputs["sequence_output"].numpy()[real], reference["sequence_output"][real], atol=2e-5
    )
    np.testing.assert_allclose(
        outputs["pooled_output"].numpy(), reference["pooled_output"], atol=2e-5
    )


def test_factorised_embeddings_are_refused_by_name():
    weights = {v.name.removesuffix(":0"): v.numpy() for v in hub.load(ENCODER).variables}
    weights["embedding_projection/kernel"] = np.zeros([16, 16], np.float32)
    with pytest.raises(ValueError, match="embedding_projection"):
        model_garden.architecture(weights, "albert")


def test_a_tf_hub_encoder_computes_in_bfloat16_from_its_own_variables(
    reference, tmp_path, monkeypatch
):
    monkeypatch.setenv(encoder_specs.CACHE_ENV, str(tmp_path))
    assert encoder_specs.with_compute_dtype(ENCODER, "float32") == ENCODER  # as it is
    mixed_dir = encoder_specs.with_compute_dtype(ENCODER, "bfloat16")
    assert mixed_dir.startswith(str(tmp_path / "compute_dtype"))
    assert bert.read_compute_dtype(mixed_dir) == "bfloat16"
    assert encoder_specs.with_compute_dtype(ENCODER, "bfloat16") == mixed_dir  # built once
    assert tokenization.load_vocab(mixed_dir).tokens == tokenization.load_vocab(ENCODER).tokens
    assert tokenization.load_vocab(mixed_dir).lower_case

    layer = encoders.load(mixed_dir, 12).layer  # hub.KerasLayer, as any encoder
    outputs = layer(inputs(reference))
    assert outputs["sequence_output"].dtype == tf.float32
    real = reference["input_mask"].astype(bool)
    error = np.abs(outputs["sequence_output"].numpy()[real] - reference["sequence_output"][real])
    assert 1e-4 < error.max() < 0.15, error.max()  # bfloat16 products, the same weights
    assert all(weight.dtype == tf.float32 for weight in layer.trainable_weights)


def test_other_saved_models_stay_float32_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(encoder_specs.CACHE_ENV, str(tmp_path / "cache"))
    module = tf.Module()
    module.kernel = tf.Variable(tf.ones([3, 3]), name="some/kernel")
    module.call = tf.function(lambda x: tf.matmul(x, module.kernel), [tf.TensorSpec([None, 3])])
    folder = str(tmp_path / "other")
    tf.saved_model.save(module, folder)
    with caplog.at_level(logging.WARNING):
        assert encoder_specs.with_compute_dtype(folder, "bfloat16") == folder
    assert "neither this package's nor a TF Model Garden BERT" in caplog.text
    assert not (tmp_path / "cache").exists()
