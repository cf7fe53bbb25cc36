"""LongBERT: segment loop, masking, parameter breakdown and a training step."""

import numpy as np
import pytest

from longbert_tf.modeling import encoders, longbert
from tests.dtypes import tolerance
from tests.test_label_attention import numpy_label_attention

NUM_LABELS = 6


@pytest.fixture(scope="module")
def model(tiny_encoder_dir, compute_dtype):
    """Chunked label attention (4 codes, then 2) in the suite's compute dtype."""
    encoder = encoders.load(tiny_encoder_dir, segment_length=32)
    label_attention_args = dict(chunk_size=4, matmul_dtype=compute_dtype)
    return longbert.LongBERT(
        encoder.layer, num_labels=NUM_LABELS, seed=4, label_attention_args=label_attention_args
    )


def test_changing_padded_tokens_leaves_logits_unchanged(model, batch):
    logits = model(batch).numpy()
    noisy = dict(batch)
    rng = np.random.default_rng(2)
    noisy["input_word_ids"] = np.where(
        batch["input_mask"] == 1, batch["input_word_ids"], rng.integers(5, 600, (2, 3, 32))
    ).astype(np.int32)
    # Padding has exactly zero attention, in any dtype.
    np.testing.assert_allclose(model(noisy).numpy(), logits, rtol=1e-6, atol=1e-6)
    # The first note alone gives the same logits: the other note's padding never leaks in.
    alone = {key: value[:1] for key, value in batch.items()}
    atol = tolerance(model.label_attention.matmul_dtype, 1e-6, scale=np.abs(logits).max())
    np.testing.assert_allclose(model(alone).numpy(), logits[:1], rtol=1e-5, atol=atol)


def test_segments_are_encoded_separately_and_concatenated(model, batch):
    segment_outputs = [
        model.encoder(
            dict(
                input_word_ids=batch["input_word_ids"][:, k],
                input_mask=batch["input_mask"][:, k],
                input_type_ids=np.zeros_like(batch["input_word_ids"][:, k]),
            )
        )["sequence_output"].numpy()
        for k in range(3)
    ]
    tokens = np.concatenate(segment_outputs, axis=1)  # [batch, 3 * 32, hidden]
    queries, weights, biases = (w.numpy() for w in model.label_attention.weights)
    expected = numpy_label_attention(
        tokens, batch["input_mask"].reshape(2, -1), queries, weights, biases
    )
    atol = tolerance(model.label_attention.matmul_dtype, 1e-5, scale=np.abs(expected).max())
    np.testing.assert_allclose(model(batch).numpy(), expected, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("attend_special_tokens", [True, False])
def test_an_empty_note_attends_to_nothing(tiny_encoder_dir, batch, attend_special_tokens):
    """An empty text is one `[CLS] [SEP]` segment: its logits are the biases alone, while a
    note with content still reads its special tokens when asked to."""
    encoder = encoders.load(tiny_encoder_dir, segment_length=32)
    cls_id, sep_id = encoder.vocab.cls_id, encoder.vocab.sep_id
    model = longbert.LongBERT(
        encoder.layer,
        num_labels=NUM_LABELS,
        special_token_ids=(cls_id, sep_id),
        attend_special_tokens=attend_special_tokens,
    )
    empty = dict(batch)
    empty["input_word_ids"] = batch["input_word_ids"].copy()
    empty["input_mask"] = batch["input_mask"].copy()
    empty["input_word_ids"][1] = 0
    empty["input_mask"][1] = 0
    empty["input_word_ids"][1, 0, :2] = cls_id, sep_id
    empty["input_mask"][1, 0, :2] = 1
    empty["input_word_ids"][0, :, 0] = cls_id
    model.label_attention.build([None, None, 16])
    model.label_attention.label_biases.assign(np.arange(NUM_LABELS, dtype=np.float32))
    logits = model(empty).numpy()
    np.testing.assert_allclose(logits[1], np.arange(NUM_LABELS), atol=1e-6)
    _, mask = model.encode(empty)
    assert mask.numpy()[0, 0] == attend_special_tokens  # the first note's [CLS]


def test_parameter_breakdown_counts_the_model(model):
    breakdown = longbert.parameter_breakdown(
        sum(w.shape.num_elements() for w in model.encoder.trainable_weights), 16, NUM_LABELS
    )
    assert breakdown["attention layer"] == NUM_LABELS * 16
    assert breakdown["classification layer"] == NUM_LABELS * 17
    assert breakdown["total"] == sum(w.shape.num_elements() for w in model.trainable_weights)
