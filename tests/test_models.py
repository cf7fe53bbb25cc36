"""LongBERT: segment loop, masking, parameter breakdown and a training step."""

import numpy as np
import pytest

from longbert_tf import encoders, models, optimization
from longbert_tf.framework import keras, tf
from longbert_tf.pretraining import MaskedLM
from longbert_tf.trainer import TrainableModel, Trainer
from tests.test_layers import numpy_label_attention

NUM_LABELS = 6


@pytest.fixture(scope="module")
def model(tiny_encoder_dir):
    encoder = encoders.load(tiny_encoder_dir, segment_length=32)
    return models.LongBERT(encoder.layer, num_labels=NUM_LABELS, seed=4)


@pytest.fixture
def batch():
    """Two notes: three full segments, and one segment of 10 real positions then padding."""
    rng = np.random.default_rng(1)
    word_ids = rng.integers(5, 600, size=(2, 3, 32)).astype(np.int32)
    mask = np.ones((2, 3, 32), np.int32)
    mask[1, 0, 10:] = 0
    mask[1, 1:] = 0
    word_ids[mask == 0] = 0
    return dict(input_word_ids=word_ids, input_mask=mask)


def test_changing_padded_tokens_leaves_logits_unchanged(model, batch):
    logits = model(batch).numpy()
    noisy = dict(batch)
    rng = np.random.default_rng(2)
    noisy["input_word_ids"] = np.where(
        batch["input_mask"] == 1, batch["input_word_ids"], rng.integers(5, 600, (2, 3, 32))
    ).astype(np.int32)
    np.testing.assert_allclose(model(noisy).numpy(), logits, rtol=1e-6, atol=1e-6)
    # The first note alone gives the same logits: the other note's padding never leaks in.
    alone = {key: value[:1] for key, value in batch.items()}
    np.testing.assert_allclose(model(alone).numpy(), logits[:1], rtol=1e-5, atol=1e-6)


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
    np.testing.assert_allclose(model(batch).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attend_special_tokens", [True, False])
def test_an_empty_note_attends_to_nothing(tiny_encoder_dir, batch, attend_special_tokens):
    """An empty text is one `[CLS] [SEP]` segment: its logits are the biases alone, while a
    note with content still reads its special tokens when asked to."""
    encoder = encoders.load(tiny_encoder_dir, segment_length=32)
    cls_id, sep_id = encoder.vocab.cls_id, encoder.vocab.sep_id
    model = models.LongBERT(
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
    breakdown = models.parameter_breakdown(
        sum(w.shape.num_elements() for w in model.encoder.trainable_weights), 16, NUM_LABELS
    )
    assert breakdown["attention layer"] == NUM_LABELS * 16
    assert breakdown["classification layer"] == NUM_LABELS * 17
    assert breakdown["total"] == sum(w.shape.num_elements() for w in model.trainable_weights)


def test_one_training_step_lowers_the_loss(tiny_encoder_dir, batch):
    keras.utils.set_random_seed(0)
    encoder = encoders.load(tiny_encoder_dir, segment_length=32)
    model = models.LongBERT(encoder.layer, num_labels=NUM_LABELS)
    labels = np.array([[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 1]], np.float32)
    model(batch)
    group = optimization.OptimizerGroup(keras.optimizers.Adam(2e-4), model.trainable_variables)
    train_step = Trainer(model, [group], tf.distribute.get_strategy(), 2)
    batches = iter(tf.data.Dataset.from_tensors((batch, labels)).repeat())

    def loss():
        logits = model(batch, training=False)
        return float(tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits)))

    before = loss()
    train_step(batches)
    assert loss() < before


def test_the_models_and_the_pretrainer_follow_the_training_contract(deterministic_encoder, batch):
    """Without dropout, each model's training loss equals a NumPy loss of its logits."""
    encoder = encoders.load(deterministic_encoder, 32).layer
    longbert = models.LongBERT(encoder, num_labels=NUM_LABELS)
    caml = models.CAML(np.ones([10, 4], np.float32), num_labels=NUM_LABELS, dropout_rate=0.0)
    caml_batch = dict(batch, input_word_ids=batch["input_word_ids"] % 10)
    labels = np.array([[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 1]], np.float32)
    for model, features in ((longbert, batch), (caml, caml_batch)):
        assert isinstance(model, TrainableModel)
        logits = model(features).numpy().astype(np.float64)
        loss, metrics = model.loss(features, labels, global_batch_size=4)
        cross_entropy = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-abs(logits)))
        # Each note's mean over codes, summed over this replica's 2 notes, over the global 4.
        assert float(loss) == pytest.approx(cross_entropy.mean(1).sum() / 4, rel=1e-5)
        assert metrics == {}
        head = {id(variable) for variable in model.head_variables}
        assert head == {id(variable) for variable in model.label_attention.trainable_variables}

    masked_lm = MaskedLM(encoders.load(deterministic_encoder, 32).layer)
    assert isinstance(masked_lm, TrainableModel)
    ids = tf.constant([[2, 5, 6, 3]])
    inputs = dict(input_word_ids=ids, input_mask=tf.ones_like(ids), input_type_ids=ids * 0)
    chosen = tf.constant([[0.0, 1.0, 1.0, 0.0]])  # the loss is taken on tokens 1 and 2
    logits = masked_lm(inputs).numpy()[0].astype(np.float64)
    loss, metrics = masked_lm.loss(inputs, dict(token_ids=ids, weights=chosen), 2)
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(log_probabilities[1, 5] + log_probabilities[2, 6]) / 2
    assert float(loss) == pytest.approx(expected / 2, rel=1e-5)  # 1 of the global batch's 2
    hits = (logits[1].argmax() == 5) + (logits[2].argmax() == 6)
    assert float(metrics["masked_lm_accuracy"]) == pytest.approx(hits / 2 / 2)
    encoder_variables = {id(variable) for variable in masked_lm.encoder.trainable_variables}
    assert {id(variable) for variable in masked_lm.head_variables}.isdisjoint(encoder_variables)
    assert len(masked_lm.head_variables) == 5  # dense kernel and bias, norm scale and shift, bias
