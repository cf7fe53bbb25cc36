"""Encoder specs: what is refused, what is built once and cached."""

import os

import numpy as np
import pytest

from longbert_tf.data import tokenization
from longbert_tf.framework import tf
from longbert_tf.modeling import bert, encoder_specs, encoders


def test_folders_that_are_not_encoders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is neither a TF-Hub-format SavedModel"):
        encoder_specs.resolve(str(tmp_path / "empty"), str(tmp_path))
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.__call__ = tf.function(lambda x: x * module.scale, input_signature=[tf.TensorSpec(None)])
    tf.saved_model.save(module, str(tmp_path / "not_bert"))
    with pytest.raises(ValueError, match="is not a TF-Hub BERT encoder SavedModel"):
        encoders.load(encoder_specs.resolve(str(tmp_path / "not_bert"), str(tmp_path)), 32)


def test_random_spec_is_built_once_per_dataset_and_seed(tiny_dataset_dir):
    handle = encoder_specs.resolve("random:L-1_H-16_A-2", tiny_dataset_dir, seed=1)
    assert handle == os.path.join(tiny_dataset_dir, "encoders", "random-L-1_H-16_A-2-seed1")
    built = os.path.getmtime(os.path.join(handle, "saved_model.pb"))
    assert encoder_specs.resolve("random:L-1_H-16_A-2", tiny_dataset_dir, seed=1) == handle
    assert os.path.getmtime(os.path.join(handle, "saved_model.pb")) == built
    encoder = encoders.load(handle, segment_length=512)
    assert len(encoder.vocab.tokens) == 30522 and encoder.hidden_size == 16


def test_a_random_encoder_can_take_another_encoders_vocabulary(tiny_dataset_dir, tiny_encoder_dir):
    handle = encoder_specs.resolve(
        "random:L-1_H-16_A-2", tiny_dataset_dir, seed=1, vocab_source=tiny_encoder_dir
    )
    source = tokenization.load_vocab(tiny_encoder_dir)
    assert handle.endswith(f"random-L-1_H-16_A-2-seed1-vocab{source.fingerprint}")
    encoder = encoders.load(handle, segment_length=64)
    assert encoder.vocab.tokens == source.tokens and encoder.vocab.lower_case == source.lower_case
    word_embeddings = [w for w in encoder.layer.weights if "word_embeddings" in w.name]
    assert word_embeddings[0].shape[0] == len(source.tokens) == 600
    # The same tokens, not the same weights: the source's own table differs.
    source_table = [
        w for w in encoders.load(tiny_encoder_dir, 64).layer.weights if "word_embeddings" in w.name
    ][0]
    assert not np.allclose(word_embeddings[0].numpy()[:, :16], source_table.numpy()[:, :16])
    with pytest.raises(ValueError, match="is for random: encoders"):
        encoder_specs.resolve(tiny_encoder_dir, tiny_dataset_dir, vocab_source=tiny_encoder_dir)


@pytest.mark.parametrize("dtype, lowest_error", [("bfloat16", 1e-4), ("float16", 1e-5)])
def test_a_16_bit_copy_computes_in_its_dtype_on_the_same_float32_variables(
    tiny_encoder_dir, tmp_path, monkeypatch, dtype, lowest_error
):
    monkeypatch.setenv(encoder_specs.CACHE_ENV, str(tmp_path))
    mixed_dir = encoder_specs.with_compute_dtype(tiny_encoder_dir, dtype)
    assert mixed_dir.startswith(str(tmp_path)) and bert.read_compute_dtype(mixed_dir) == dtype
    assert encoder_specs.with_compute_dtype(tiny_encoder_dir, dtype) == mixed_dir  # cached
    assert encoder_specs.with_compute_dtype(mixed_dir, dtype) == mixed_dir
    assert encoder_specs.with_compute_dtype(tiny_encoder_dir, "float32") == tiny_encoder_dir
    assert bert.read_architecture(mixed_dir) == bert.read_architecture(tiny_encoder_dir)
    full, mixed = (encoders.load(folder, 64) for folder in (tiny_encoder_dir, mixed_dir))
    assert mixed.vocab.fingerprint == full.vocab.fingerprint

    def by_name(layer):
        return {weight.name: weight for weight in layer.trainable_weights}

    assert by_name(mixed.layer).keys() == by_name(full.layer).keys()
    for name, weight in by_name(mixed.layer).items():
        assert weight.dtype == tf.float32, name
        np.testing.assert_array_equal(weight.numpy(), by_name(full.layer)[name].numpy())

    rng = np.random.default_rng(0)
    mask = np.ones([3, 64], np.int32)
    mask[1, 40:] = 0  # padding
    inputs = dict(
        input_word_ids=tf.constant(rng.integers(5, 600, [3, 64]) * mask, tf.int32),
        input_mask=tf.constant(mask),
        input_type_ids=tf.zeros([3, 64], tf.int32),
    )
    reference = full.layer(inputs)["sequence_output"].numpy()
    with tf.GradientTape() as tape:
        outputs = mixed.layer(inputs)["sequence_output"]
        loss = tf.reduce_sum(outputs**2)
    assert outputs.dtype == tf.float32  # the encoder contract's outputs
    error = np.abs(outputs.numpy() - reference).max()
    # 16-bit products (8 or 11 significant bits), not float32's 24
    assert lowest_error < error < 0.1, error
    gradients = tape.gradient(loss, mixed.layer.trainable_weights)
    gradients = [tf.convert_to_tensor(gradient) for gradient in gradients]  # embeddings: slices
    assert all(gradient.dtype == tf.float32 for gradient in gradients)
    assert all(np.isfinite(gradient.numpy()).all() for gradient in gradients)
    assert sum(float(tf.reduce_sum(tf.abs(gradient))) for gradient in gradients) > 0


def test_an_encoder_moved_onto_a_new_vocabulary_carries_its_embeddings_piece_by_piece(
    tiny_encoder_dir, tmp_path
):
    source = encoders.load(tiny_encoder_dir, 64)
    old = source.vocab.tokens
    table = {w.name: w.numpy() for w in source.layer.weights}
    (embeddings,) = [value for name, value in table.items() if "word_embeddings" in name]
    words = [t for t in old if t.isalpha() and len(t) > 2]
    continuations = [t for t in old if t.startswith("##") and t[2:].isalpha()]
    # A word the old vocabulary splits into exactly two of its tokens.
    word, piece = next(
        (w, c)
        for w in words
        for c in continuations
        if source.vocab.tokenize([w + c[2:]])[0] == [old.index(w), old.index(c)]
    )
    new_tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", words[0], word + piece[2:]]
    new_tokens += ["##" + word + piece[2:], "жжж"]
    moved_dir = encoder_specs.with_vocab(tiny_encoder_dir, new_tokens, str(tmp_path / "moved"))

    moved = encoders.load(moved_dir, 64)
    assert moved.vocab.tokens == new_tokens and moved.vocab.lower_case == source.vocab.lower_case
    moved_table = {w.name: w.numpy() for w in moved.layer.weights}
    (moved_embeddings,) = [v for name, v in moved_table.items() if "word_embeddings" in name]
    expected = [embeddings[old.index(token)] for token in new_tokens[:6]]
    split = (embeddings[old.index(word)] + embeddings[old.index(piece)]) / 2
    expected += [split, split, embeddings.mean(axis=0)]  # a "##" token: its letters' pieces
    np.testing.assert_allclose(moved_embeddings, np.stack(expected), rtol=1e-6)
    assert moved_table.keys() == table.keys()
    for name, value in table.items():
        if "word_embeddings" not in name:
            np.testing.assert_array_equal(moved_table[name], value, err_msg=name)
