"""Learning-rate schedules and the encoder's own rate, checked on the updates applied."""

import math

import numpy as np
import pytest

from longbert_tf import configs
from longbert_tf.framework import keras, tf
from longbert_tf.modeling import encoders, longbert
from longbert_tf.training import optimization
from longbert_tf.training.trainer import Trainer


def expected_rate(step, peak, schedule, warmup, total):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return dict(
        constant=peak,
        linear=peak * (1 - progress),
        cosine=peak * 0.5 * (1 + math.cos(math.pi * progress)),
    )[schedule]


@pytest.mark.parametrize("schedule", configs.LR_SCHEDULES)
def test_schedules_warm_up_then_hold_or_decay_to_zero(schedule):
    rate = optimization.WarmupSchedule(1e-3, schedule, warmup_steps=4, total_steps=20)
    for step in range(0, 25):
        assert float(rate(step)) == pytest.approx(
            expected_rate(step, 1e-3, schedule, 4, 20), rel=1e-5, abs=1e-10
        ), step


def config(**overrides):
    values = dict(
        dataset="synthetic",
        data_dir="unused",
        model_dir="unused",
        encoder="unused",
        segments=configs.SegmentConfig(128, 128),
        batch_size=2,
        learning_rate=1e-2,
        train_steps=10,
        eval_every=10,
    )
    return configs.ExperimentConfig(**{**values, **overrides})


def test_the_head_and_the_encoder_move_at_their_own_scheduled_rates(tiny_encoder_dir):
    keras.utils.set_random_seed(0)
    model = longbert.LongBERT(encoders.load(tiny_encoder_dir, 32).layer, num_labels=6)
    rng = np.random.default_rng(0)
    features = dict(
        input_word_ids=tf.constant(rng.integers(5, 500, [2, 1, 32]), tf.int32),
        input_mask=tf.ones([2, 1, 32], tf.int32),
    )
    labels = tf.constant([[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 1]], tf.float32)
    model(features)
    settings = config(encoder_learning_rate=1e-4, warmup_steps=2, lr_schedule="linear")
    groups = optimization.optimizer_groups(model, settings)
    head, encoder = groups
    assert {id(v) for v in head.variables} == {
        id(v) for v in model.label_attention.trainable_variables
    }
    assert len(encoder.variables) == len(model.encoder.trainable_variables)
    trainer = Trainer(model, groups, tf.distribute.get_strategy(), 2)
    batches = iter(tf.data.Dataset.from_tensors((features, labels)).repeat())
    for step in range(3):
        before = [[v.numpy() for v in group.variables] for group in groups]
        trainer(batches)
        for group, peak, start in zip(groups, (1e-2, 1e-4), before):
            rate = expected_rate(step, peak, "linear", 2, 10)
            moved = max(np.abs(v.numpy() - s).max() for v, s in zip(group.variables, start))
            if step == 0:  # Adam's first update moves every weight with a gradient by the rate
                assert moved == pytest.approx(rate, rel=1e-2), (step, peak)
            assert moved <= rate * 1.001 * (1 if step == 0 else 10), (step, peak)
            # What TensorBoard logs: the rate of the update just applied.
            assert float(group.optimizer.learning_rate) == pytest.approx(rate, rel=1e-5)


def test_one_optimizer_by_default_and_adamw_with_weight_decay(tiny_encoder_dir):
    model = longbert.LongBERT(encoders.load(tiny_encoder_dir, 32).layer, num_labels=6)
    model(
        dict(input_word_ids=tf.ones([1, 1, 4], tf.int32), input_mask=tf.ones([1, 1, 4], tf.int32))
    )
    (group,) = optimization.optimizer_groups(model, config())
    assert type(group.optimizer) is keras.optimizers.Adam
    assert float(group.optimizer.learning_rate) == pytest.approx(1e-2)
    assert len(group.variables) == len(model.trainable_variables)
    (group,) = optimization.optimizer_groups(model, config(weight_decay=0.01))
    assert type(group.optimizer) is keras.optimizers.AdamW


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(encoder_learning_rate=0.0), "encoder_learning_rate=0.0 must be positive"),
        (dict(lr_schedule="step"), "lr_schedule='step': choose from"),
        (dict(warmup_steps=11), "warmup_steps=11 must be between 0 and train_steps=10"),
        (dict(weight_decay=-1.0), "weight_decay=-1.0 must be at least 0"),
    ],
)
def test_bad_optimizer_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)
