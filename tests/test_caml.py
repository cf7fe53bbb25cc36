"""CAML: word tokenization, vocabulary and embeddings, the model, and its input pipeline."""

import os

import numpy as np
import pytest

from longbert_tf.data import words
from longbert_tf.framework import keras, tf
from longbert_tf.modeling.caml import CAML
from tests.test_label_attention import numpy_label_attention


def test_words_follow_caml_tokenization():
    text = "Pt's BP 120/80, s/p CABG x2; 3rd day. HbA1c_ 7.5% __init__ Naïve"
    assert words.split_words(text) == [
        "pt",
        "s",
        "bp",
        "s",
        "p",
        "cabg",
        "x2",
        "3rd",
        "day",
        "hba1c_",
        "__init__",
        "naïve",
    ]
    assert words.split_words("12 34.5 ___ 1/2") == []


def test_vocabulary_keeps_words_in_three_notes_by_frequency():
    texts = ["cough fever rash", "cough fever", "cough fever", "cough pain", "pain pain pain"]
    vocab, embeddings = words.build(texts, seed=0)
    # cough: 4 notes, fever: 3, pain: 2 (below the threshold), rash: 1.
    assert vocab.words == ("cough", "fever")
    assert vocab.tokenize(["Fever, cough and PAIN", ""]) == [[3, 2, 1, 1], []]
    assert embeddings.shape == (4, words.EMBEDDING_SIZE) and embeddings.dtype == np.float32
    assert not embeddings[words.PAD_ID].any()
    np.testing.assert_allclose(np.linalg.norm(embeddings[1:], axis=1), 1.0, rtol=1e-5)
    again = words.build(texts, seed=0)[1]
    np.testing.assert_array_equal(embeddings, again)


def test_cached_build_is_reused(tiny_dataset_dir):
    vocab, embeddings = words.cached_build(tiny_dataset_dir)
    written = os.path.getmtime(os.path.join(tiny_dataset_dir, "caml", "embeddings.npy"))
    again_vocab, again_embeddings = words.cached_build(tiny_dataset_dir)
    assert again_vocab == vocab and vocab.size > 50
    np.testing.assert_array_equal(again_embeddings, embeddings)
    assert os.path.getmtime(os.path.join(tiny_dataset_dir, "caml", "embeddings.npy")) == written


def test_word_segmenter_cuts_and_keeps_empty_notes_defined():
    segment = words.word_segmenter(max_words=3)
    ids, mask = segment(tf.constant([5, 6, 7, 8], tf.int64))
    assert ids.numpy().tolist() == [[5, 6, 7]] and mask.numpy().tolist() == [[1, 1, 1]]
    ids, mask = segment(tf.zeros([0], tf.int64))
    assert ids.numpy().tolist() == [[0]] and mask.numpy().tolist() == [[0]]


def numpy_caml(model, word_ids, mask):
    """Embedding (zeroed on padding) -> 'same' convolution -> tanh -> label attention."""
    table = model.embedding.embeddings.numpy()
    kernel, bias = (w.numpy() for w in model.convolution.weights)  # [k, in, out], [out]
    embedded = table[word_ids] * mask[..., None]
    size = kernel.shape[0]
    padded = np.pad(embedded, ((0, 0), ((size - 1) // 2, size // 2), (0, 0)))
    windows = np.stack([padded[:, i : i + size] for i in range(word_ids.shape[1])], axis=1)
    hidden = np.tanh(np.einsum("bnki,kio->bno", windows, kernel) + bias)
    queries, weights, biases = (w.numpy() for w in model.label_attention.weights)
    return numpy_label_attention(hidden, mask, queries, weights, biases)


@pytest.fixture
def caml_batch():
    rng = np.random.default_rng(3)
    word_ids = rng.integers(2, 40, size=(2, 1, 25)).astype(np.int32)
    mask = np.ones_like(word_ids)
    mask[1, 0, 12:] = 0
    word_ids[mask == 0] = 0
    return dict(input_word_ids=word_ids, input_mask=mask)


def test_caml_matches_numpy_and_ignores_padding(caml_batch):
    embeddings = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    model = CAML(embeddings, num_labels=5, kernel_size=4, num_filters=7, seed=1)
    logits = model(caml_batch).numpy()
    assert logits.shape == (2, 5)
    expected = numpy_caml(model, caml_batch["input_word_ids"][:, 0], caml_batch["input_mask"][:, 0])
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    noisy = dict(
        caml_batch,
        input_word_ids=np.where(caml_batch["input_mask"], caml_batch["input_word_ids"], 17),
    )
    np.testing.assert_allclose(model(noisy).numpy(), logits, atol=1e-6)
    alone = {key: value[1:, :, :12] for key, value in caml_batch.items()}
    np.testing.assert_allclose(model(alone).numpy(), logits[1:], atol=1e-5)


def test_caml_defaults_and_a_training_step(caml_batch):
    embeddings = np.random.default_rng(0).normal(size=(40, 100)).astype(np.float32)
    model = CAML(embeddings, num_labels=3)
    labels = np.array([[1, 0, 1], [0, 1, 0]], np.float32)

    def loss():
        logits = model(caml_batch, training=False)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))

    before = float(loss())
    assert model.convolution.kernel.shape == (10, 100, 50)  # CAML: kernel 10, 50 filters
    optimizer = keras.optimizers.Adam(1e-3)
    with tf.GradientTape() as tape:
        value = loss()
    optimizer.apply_gradients(
        zip(tape.gradient(value, model.trainable_variables), model.trainable_variables)
    )
    assert float(loss()) < before
