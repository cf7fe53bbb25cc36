"""One training step on every replica: the model's loss, its gradients, one update."""

from longbert_tf.framework import tf


class Trainer:
    """One training step: binary cross-entropy (mean over codes and notes), one update.

    `optimizer_groups` (see `optimization.optimizer_groups`) say which
    optimizer updates which variables.

    Each replica computes `model.label_attention.loss` of its notes divided by
    the global batch size, so summed over replicas (which `apply_gradients`
    does) it is the mean over the global batch, for any number of replicas.
    With `grad_accum_steps` N, a step draws N micro-batches per replica and
    applies their summed gradients once: the same update as one batch N times
    larger. `jit_compile` compiles each replica's forward and backward with XLA.

    Call with an iterator of `(features, labels)` per-replica batches; returns
    `(loss, note tokens)` of the step.
    """

    def __init__(
        self,
        model,
        optimizer_groups,
        strategy,
        global_batch_size,
        grad_accum_steps=1,
        jit_compile=False,
    ):
        self.model = model
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

    def _loss_and_gradients(self, features, labels):
        with tf.GradientTape() as tape:
            tokens, mask = self.model.encode(features, training=True)
            loss = self.model.label_attention.loss(tokens, mask, labels, self.global_batch_size)
        gradients = tape.gradient(loss, self.variables)
        note_tokens = tf.reduce_sum(features["input_mask"])
        return loss, [tf.convert_to_tensor(g) for g in gradients], note_tokens

    def _replica_step(self, features, labels):
        loss, gradients, note_tokens = self._gradients(features, labels)
        if self.grad_accum_steps == 1:
            self._apply(gradients)
        else:
            for accumulated, gradient in zip(self.accumulated, gradients):
                accumulated.assign_add(gradient)
        return loss, note_tokens

    def _apply(self, gradients):
        """Each group's optimizer applies its variables' gradients (`self.variables` order)."""
        start = 0
        for group in self.optimizer_groups:
            end = start + len(group.variables)
            group.optimizer.apply_gradients(zip(gradients[start:end], group.variables))
            start = end

    def _apply_accumulated(self):
        self._apply([accumulated.read_value() for accumulated in self.accumulated])
        for accumulated in self.accumulated:
            accumulated.assign(tf.zeros_like(accumulated))

    def _train_step(self, iterator):
        total_loss, total_tokens = 0.0, 0
        for _ in range(self.grad_accum_steps):
            loss, note_tokens = self.strategy.run(self._replica_step, args=next(iterator))
            total_loss += self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
            total_tokens += self.strategy.reduce(tf.distribute.ReduceOp.SUM, note_tokens, axis=None)
        if self.grad_accum_steps > 1:
            self.strategy.run(self._apply_accumulated)
        return total_loss, total_tokens

    def __call__(self, iterator):
        return self._step(iterator)
