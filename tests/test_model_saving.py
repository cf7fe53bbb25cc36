"""Keras serialisation: configs round-trip, and each model survives a `.keras` save and load.

The loaded models are compared on a batch with padding and an empty note, after every
trainable weight has been moved off its seeded initial value (a model rebuilt from its
config alone would give different logits).
"""

import json

import numpy as np
import pytest

from longbert_tf.framework import keras
from longbert_tf.modeling import caml, encoders, longbert
from longbert_tf.modeling.bert_layers import PositionEmbedding, SelfAttention
from longbert_tf.modeling.label_attention import LabelAttention
from longbert_tf.training.optimization import WarmupSchedule

NUM_LABELS = 6
SEGMENT_LENGTH = 32


def perturb_weights(model, seed):
    """Adds seeded noise to every trainable weight."""
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        weight.assign(weight + rng.normal(scale=0.1, size=weight.shape).astype(np.float32))


def run_model_saving_test(model, inputs, path):
    """Saves `model` (already called) to `path` (`.keras`), loads it without custom_objects
    and checks its class, config and logits; and that `from_config(get_config())` rebuilds
    the same config."""
    config = model.get_config()
    json.dumps(config)
    assert type(model).from_config(config).get_config() == config
    expected = model(inputs).numpy()
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == config
    np.testing.assert_allclose(loaded(inputs).numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    return encoders.load(tiny_encoder_dir, segment_length=SEGMENT_LENGTH)


def longbert_batch(cls_id, sep_id):
    """Three notes, int32 `[3, 3, 32]`: three full segments; one segment of 10 tokens then
    padding; and an empty note (`[CLS] [SEP]`, then padding)."""
    rng = np.random.default_rng(1)
    word_ids = rng.integers(5, 600, size=(3, 3, SEGMENT_LENGTH)).astype(np.int32)
    mask = np.ones_like(word_ids)
    mask[1, 0, 10:] = 0
    mask[1:, 1:] = 0
    mask[2, 0, 2:] = 0
    word_ids[2, 0, :2] = cls_id, sep_id
    word_ids[mask == 0] = 0
    return dict(input_word_ids=word_ids, input_mask=mask)


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(label_attention_args=dict(chunk_size=4), normalize_tokens=True),
        dict(label_attention_args=dict(chunk_size=4, described=True), attend_special_tokens=False),
    ],
    ids=["dense", "chunked", "chunked-described"],
)
def test_longbert_saves_and_loads(encoder, tmp_path, options):
    cls_id, sep_id = encoder.vocab.cls_id, encoder.vocab.sep_id
    model = longbert.LongBERT(
        encoder.layer,
        num_labels=NUM_LABELS,
        seed=4,
        special_token_ids=(cls_id, sep_id),
        **options,
    )
    batch = longbert_batch(cls_id, sep_id)
    model(batch)
    perturb_weights(model, seed=5)
    if model.label_attention.described:
        descriptions = np.eye(NUM_LABELS, 16, dtype=np.float32)
        model.label_attention.set_descriptions(descriptions, np.arange(NUM_LABELS) < 4)
    run_model_saving_test(model, batch, str(tmp_path / "longbert.keras"))


def caml_batch():
    """Three notes, int32 `[3, 1, 25]`: 25 words; 12 words then padding; an empty note (the
    word segmenter's single padding word)."""
    rng = np.random.default_rng(3)
    word_ids = rng.integers(2, 40, size=(3, 1, 25)).astype(np.int32)
    mask = np.ones_like(word_ids)
    mask[1, 0, 12:] = 0
    mask[2] = 0
    word_ids[mask == 0] = 0
    return dict(input_word_ids=word_ids, input_mask=mask)


def test_caml_saves_and_loads(tmp_path):
    embeddings = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    model = caml.CAML(embeddings, num_labels=5, kernel_size=4, num_filters=7, seed=1)
    model(caml_batch())
    perturb_weights(model, seed=2)
    run_model_saving_test(model, caml_batch(), str(tmp_path / "caml.keras"))


def test_caml_config_holds_the_table_shape_not_the_table():
    embeddings = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    model = caml.CAML(embeddings, num_labels=5, seed=1)
    np.testing.assert_array_equal(model.embedding.embeddings.numpy(), embeddings)
    config = model.get_config()
    assert "embeddings" not in config
    assert (config["vocab_size"], config["embedding_size"]) == (40, 6)
    rebuilt = caml.CAML.from_config(config)
    rebuilt(caml_batch())
    assert rebuilt.embedding.embeddings.shape == (40, 6)


def test_caml_rejects_a_missing_or_mismatched_table():
    with pytest.raises(ValueError, match="embedding_size=None"):
        caml.CAML(num_labels=5, vocab_size=40)
    with pytest.raises(ValueError, match=r"\(40, 6\) do not match vocab_size=41"):
        caml.CAML(np.zeros((40, 6), np.float32), num_labels=5, vocab_size=41)


@pytest.mark.parametrize(
    "arguments",
    [
        dict(num_labels=7),
        dict(num_labels=7, seed=3, kernel_initializer="glorot_uniform", chunk_size=4),
        dict(num_labels=7, chunk_size=2, matmul_dtype="bfloat16", described=True),
    ],
)
def test_label_attention_config_round_trip(arguments):
    layer = LabelAttention(**arguments, name="label_attention")
    config = layer.get_config()
    json.dumps(config)
    rebuilt = LabelAttention.from_config(config)
    assert rebuilt.get_config() == config
    tokens, mask = np.ones([1, 2, 8], np.float32), np.ones([1, 2], np.int32)
    layer(tokens, mask)
    rebuilt(tokens, mask)
    for weight, rebuilt_weight in zip(layer.weights, rebuilt.weights):
        np.testing.assert_array_equal(rebuilt_weight.numpy(), weight.numpy())  # same seeds


def test_custom_objects_deserialize_by_their_registered_names():
    layers = [
        LabelAttention(3, chunk_size=2),
        PositionEmbedding(16, "glorot_uniform"),
        SelfAttention(2, 0.1, ["glorot_uniform"] * 4),
    ]
    for layer in layers:
        serialized = json.loads(json.dumps(keras.layers.serialize(layer)))
        assert serialized["registered_name"] == f"longbert_tf>{type(layer).__name__}"
        rebuilt = keras.layers.deserialize(serialized)
        assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()
    schedule = WarmupSchedule(1e-3, "cosine", warmup_steps=10, total_steps=100)
    serialized = keras.optimizers.schedules.serialize(schedule)
    rebuilt = keras.optimizers.schedules.deserialize(serialized)
    assert type(rebuilt) is WarmupSchedule and rebuilt.get_config() == schedule.get_config()
