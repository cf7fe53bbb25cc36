"""The model contract and one training step on every replica: loss, gradients, one update.

Model Garden's `Task` writes down once what a trainer may ask of a model
(inputs, losses, train step); here `TrainableModel` does, and `Trainer`
asks nothing else. LongBERT, CAML (`modeling.longbert`, `modeling.caml`) and
the masked-LM pretrainer (`pretraining.MaskedLM`) follow it; their inputs come
from `data.pipeline` and `pretraining.window_dataset` as `(features, targets)`
batches.
"""

from typing import Protocol, runtime_checkable

from longbert_tf.framework import tf
from longbert_tf.training.loss_scale import all_finite


@runtime_checkable
class TrainableModel(Protocol):
    """What `Trainer` and `optimization.optimizer_groups` need of a model."""

    def loss(self, features: dict, targets, global_batch_size: int) -> tuple:
        """`(loss, metrics)` of one replica's batch, computed with `training=True`.

        `loss` is a float32 scalar scaled so that summed over the replicas it
        is the mean loss over the global batch of `global_batch_size`
        examples; `metrics` maps names to float32 scalars scaled the same way.
        `features` holds at least `input_mask` (int32, 1 on real tokens).
        """

    @property
    def head_variables(self) -> list:
        """The trainable variables of the task head: they learn at `learning_rate` when the
        encoder has its own `encoder_learning_rate`."""


class Trainer:
    """One training step of a `TrainableModel`: its loss, gradients, one update.

    `optimizer_groups` (see `optimization.optimizer_groups`) say which
    optimizer updates which variables. Each replica's loss is its share of
    the global batch mean (see `TrainableModel.loss`), so the gradients summed
    over replicas (which `apply_gradients` does) are those of the mean over
    the global batch, for any number of replicas. With `grad_accum_steps` N,
    a step draws N micro-batches per replica and applies their summed
    gradients once: the same update as one batch N times larger.
    `jit_compile` compiles each replica's forward and backward with XLA.
    With a `loss_scale` (`loss_scale.DynamicLossScale`, for float16) the
    gradients are those of the scaled loss, summed over replicas, divided back
    and applied only when all are finite; every group skips a step together.

    Call with an iterator of `(features, targets)` per-replica batches;
    returns the step's float32 `loss`, int32 `note_tokens` (real input tokens)
    and the model's metrics, summed over replicas and micro-batches.
    """

    def __init__(
        self,
        model,
        optimizer_groups,
        strategy,
        global_batch_size,
        grad_accum_steps=1,
        jit_compile=False,
        loss_scale=None,
    ):
        self.model = model
        self.loss_scale = loss_scale
        self.optimizer_groups = optimizer_groups
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.grad_accum_steps = grad_accum_steps
        self.variables = [variable for group in optimizer_groups for variable in group.variables]
        if grad_accum_steps > 1:
            with strategy.scope():
                self.accumulated = [
                    tf.Variable(
                        tf.zeros_like(variable),
                        trainable=False,
                        synchronization=tf.VariableSynchronization.ON_READ,
                        aggregation=tf.VariableAggregation.SUM,
                    )
                    for variable in self.variables
                ]
        self._gradients = tf.function(self._loss_and_gradients, jit_compile=jit_compile)
        self._step = tf.function(self._train_step)

    def _loss_and_gradients(self, features, targets):
        with tf.GradientTape() as tape:
            loss, metrics = self.model.loss(features, targets, self.global_batch_size)
            scaled = loss if self.loss_scale is None else loss * self.loss_scale.scale
        gradients = tape.gradient(scaled, self.variables)
        outputs = dict(loss=loss, note_tokens=tf.reduce_sum(features["input_mask"]), **metrics)
        return outputs, [tf.convert_to_tensor(g) for g in gradients]

    def _replica_step(self, features, targets):
        outputs, gradients = self._gradients(features, targets)
        if self.grad_accum_steps == 1:
            self._apply(gradients)
        else:
            for accumulated, gradient in zip(self.accumulated, gradients):
                accumulated.assign_add(gradient)
        return outputs

    def _apply(self, gradients):
        """Applies one replica's gradients (`self.variables` order), unscaled if scaled."""
        if self.loss_scale is None:
            self._apply_groups(gradients)
            return
        context = tf.distribute.get_replica_context()
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        context.merge_call(self._apply_if_finite, args=(summed,))

    def _apply_groups(self, gradients, summed=False):
        """Each group's optimizer applies its variables' gradients; `summed`: already summed
        over replicas."""
        start = 0
        for group in self.optimizer_groups:
            end = start + len(group.variables)
            group.optimizer.apply_gradients(
                zip(gradients[start:end], group.variables), skip_gradients_aggregation=summed
            )
            start = end

    def _apply_if_finite(self, strategy, summed):
        """In cross-replica context: the unscaled update if every gradient is finite, then the
        loss scale's update (the same decision on every replica: the sums are the same)."""
        finite = strategy.extended.call_for_each_replica(
            lambda gradients: tf.cast(all_finite(gradients), tf.float32), args=(summed,)
        )
        finite = tf.equal(
            strategy.reduce(tf.distribute.ReduceOp.SUM, finite, axis=None),
            float(strategy.num_replicas_in_sync),
        )

        def apply():
            strategy.extended.call_for_each_replica(
                lambda gradients: self._apply_groups(
                    [gradient / self.loss_scale.scale for gradient in gradients], summed=True
                ),
                args=(summed,),
            )
            return tf.constant(True)

        def skip():  # the schedules still advance, as they would under Keras' LossScaleOptimizer
            for group in self.optimizer_groups:
                group.optimizer.iterations.assign_add(1, read_value=False)
            return tf.constant(False)

        tf.cond(finite, apply, skip)
        self.loss_scale.update(finite)

    def _apply_accumulated(self):
        self._apply([accumulated.read_value() for accumulated in self.accumulated])
        for accumulated in self.accumulated:
            accumulated.assign(tf.zeros_like(accumulated))

    def _train_step(self, iterator):
        totals = None
        for _ in range(self.grad_accum_steps):
            outputs = self.strategy.run(self._replica_step, args=next(iterator))
            reduced = {
                name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for name, value in outputs.items()
            }
            totals = reduced if totals is None else {n: totals[n] + reduced[n] for n in totals}
        if self.grad_accum_steps > 1:
            self.strategy.run(self._apply_accumulated)
        return totals

    def __call__(self, iterator):
        return self._step(iterator)
