"""Optimizers and learning-rate schedules: the label head's rate, and the encoder's own if set.

The paper trains everything with one constant Adam rate (2e-4): the default.
Fine-tuning a pretrained encoder usually wants its own, smaller rate, a warmup
and a decay; `--encoder_learning_rate`, `--warmup_steps`, `--lr_schedule` and
`--weight_decay` give that. The head is `model.head_variables` (see
`trainer.TrainableModel`; label attention for LongBERT and CAML); the encoder
is every other trainable variable (the BERT encoder, or CAML's embeddings and
convolution).
"""

import dataclasses
import math

from longbert_tf.configs import LR_SCHEDULES
from longbert_tf.framework import keras, tf


@keras.utils.register_keras_serializable(package="longbert_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`peak` reached linearly over `warmup_steps`, then constant, or decayed to 0 at `total_steps`.

    The rate of step s (counting from 0) is `peak * (s + 1) / warmup_steps`
    during warmup, so the first update is not wasted at rate 0; after it,
    `constant` keeps `peak`, `linear` falls linearly and `cosine` along half a
    cosine to 0 at `total_steps`.
    """

    def __init__(self, peak: float, schedule: str, warmup_steps: int, total_steps: int):
        super().__init__()
        if schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={schedule!r}: choose from {LR_SCHEDULES}")
        self.peak = peak
        self.schedule = schedule
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(self.warmup_steps, tf.float32)
        warming = self.peak * (step + 1.0) / tf.maximum(warmup, 1.0)
        progress = tf.clip_by_value(
            (step - warmup) / tf.maximum(float(self.total_steps) - warmup, 1.0), 0.0, 1.0
        )
        if self.schedule == "linear":
            decayed = self.peak * (1.0 - progress)
        elif self.schedule == "cosine":
            decayed = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            decayed = tf.constant(self.peak, tf.float32)
        return tf.where(step < warmup, warming, decayed)

    def get_config(self):
        return dict(
            peak=self.peak,
            schedule=self.schedule,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
        )


@dataclasses.dataclass
class OptimizerGroup:
    """An optimizer and the variables it updates."""

    optimizer: keras.optimizers.Optimizer
    variables: list


def make_optimizer(peak: float, config) -> keras.optimizers.Optimizer:
    """Adam (AdamW with `config.weight_decay` > 0) on `config`'s schedule, peaking at `peak`."""
    rate = peak
    if config.lr_schedule != "constant" or config.warmup_steps:
        rate = WarmupSchedule(peak, config.lr_schedule, config.warmup_steps, config.train_steps)
    if config.weight_decay:
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(learning_rate=rate)


def optimizer_groups(model: keras.Model, config) -> list:
    """One group for all variables, or, with `config.encoder_learning_rate`, head and encoder.

    Create them inside the strategy's scope; each optimizer is built for its variables.
    """
    variables = model.trainable_variables
    if config.encoder_learning_rate is None:
        groups = [OptimizerGroup(make_optimizer(config.learning_rate, config), variables)]
    else:
        head = {id(variable) for variable in model.head_variables}
        groups = [
            OptimizerGroup(
                make_optimizer(config.learning_rate, config),
                [variable for variable in variables if id(variable) in head],
            ),
            OptimizerGroup(
                make_optimizer(config.encoder_learning_rate, config),
                [variable for variable in variables if id(variable) not in head],
            ),
        ]
    for group in groups:
        group.optimizer.build(group.variables)
    return groups
