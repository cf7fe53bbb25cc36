"""Dynamic loss scaling, which float16 training needs and bfloat16 does not.

float16 keeps 10 mantissa bits to bfloat16's 7, but only 5 exponent bits: the
smallest normal value is 6e-5, and the backward pass's small gradients vanish
below it. Multiplying the loss by a scale S lifts every gradient by S; the
update divides them back in float32. S starts at 2**15; a step whose gradients
hold an Inf or NaN is skipped and halves S (not below 1), and every
`growth_steps` finite steps in a row double it. One scale serves every optimizer
group (see `Trainer`), so the groups skip together. Keras'
`LossScaleOptimizer` keeps one scale per optimizer, which would not.
"""

from longbert_tf.framework import tf

INITIAL_SCALE = 2.0**15
GROWTH_STEPS = 2000


class DynamicLossScale(tf.Module):
    """The scale `S` (float32) and the count of finite steps since it last changed.

    Create it in the strategy's scope (`loss_scale_for`); `update` runs in
    cross-replica context (as `Trainer` calls it, inside `merge_call`), after a
    finiteness check of gradients already summed over replicas, so every replica
    takes the same decision.
    """

    def __init__(self, initial_scale: float = INITIAL_SCALE, growth_steps: int = GROWTH_STEPS):
        super().__init__(name="loss_scale")
        aggregation = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.scale = tf.Variable(
            initial_scale, dtype=tf.float32, trainable=False, aggregation=aggregation
        )
        self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=aggregation)
        self.growth_steps = growth_steps

    def update(self, all_finite):
        """Grows or halves the scale after a step whose gradients were `all_finite` (bool)."""
        grow = tf.logical_and(all_finite, self.finite_steps + 1 >= self.growth_steps)
        new_scale = tf.where(
            all_finite,
            tf.where(grow, 2.0 * self.scale, self.scale),
            tf.maximum(self.scale / 2.0, 1.0),
        )
        new_count = tf.where(
            tf.logical_and(all_finite, tf.logical_not(grow)),
            self.finite_steps + 1,
            tf.zeros_like(self.finite_steps),
        )
        return tf.group(self.scale.assign(new_scale), self.finite_steps.assign(new_count))


def loss_scale_for(compute_dtype: str) -> DynamicLossScale | None:
    """The loss scale a run computing in `compute_dtype` needs: float16's, else none."""
    return DynamicLossScale() if compute_dtype == "float16" else None


def all_finite(gradients: list):
    """Whether every gradient (float tensors) is free of Inf and NaN: a bool scalar."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(gradient)) for gradient in gradients])
