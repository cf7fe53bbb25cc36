"""The training contract and one training step."""

import numpy as np
import pytest

from longbert_tf.framework import keras, tf
from longbert_tf.modeling import caml, encoders, longbert
from longbert_tf.training import optimization
from longbert_tf.training.pretraining import MaskedLM
from longbert_tf.training.trainer import TrainableModel, Trainer
from tests.test_longbert import NUM_LABELS


def test_one_training_step_lowers_the_loss(tiny_encoder_dir, batch):
    keras.utils.set_random_seed(0)
    encoder = encoders.load(tiny_encoder_dir, segment_length=32)
    model = longbert.LongBERT(encoder.layer, num_labels=NUM_LABELS)
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
    longbert_model = longbert.LongBERT(encoder, num_labels=NUM_LABELS)
    caml_model = caml.CAML(np.ones([10, 4], np.float32), num_labels=NUM_LABELS, dropout_rate=0.0)
    caml_batch = dict(batch, input_word_ids=batch["input_word_ids"] % 10)
    labels = np.array([[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 1]], np.float32)
    for model, features in ((longbert_model, batch), (caml_model, caml_batch)):
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
