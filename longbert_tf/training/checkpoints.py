"""A run's checkpoints: the latest state (to resume from) and the best weights (to evaluate).

`checkpoints/` holds the model, the optimizers' slots (and a float16 run's
loss scale) and two counters (the step and the best dev micro F1), never note
data: the input position follows from the step (see
`pipeline.training_dataset`). `best/` holds the weights
with the best dev micro F1 so far and their step. Every task restores from
the chief's copies in the model dir; see `distribute.WriteDir` for where the
others write.
"""

import os

from longbert_tf import distribute, run_folder
from longbert_tf.framework import tf


def named_optimizers(optimizer_groups: list) -> dict:
    """Checkpoint names of the optimizers: the head's is `optimizer` (as in runs made before the
    encoder had its own), the encoder's `encoder_optimizer`."""
    names = ("optimizer", "encoder_optimizer")
    return {name: group.optimizer for name, group in zip(names, optimizer_groups)}


class RunCheckpoints:
    """Saves and restores one run's state; `step` and `best_f1` are its host-side counters.

    The counters are plain variables, the same on every task, not distributed ones.
    """

    def __init__(self, model, trackables: dict, model_dir: str, write: distribute.WriteDir):
        """`trackables`: the optimizers by checkpoint name (`named_optimizers`), and any other
        state a resumed run needs (a loss scale)."""
        self.model = model
        self.model_dir = model_dir
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.best_f1 = tf.Variable(
            -1.0, dtype=tf.float64, trainable=False, name="best_dev_micro_f1"
        )
        state = tf.train.Checkpoint(model=model, step=self.step, best_f1=self.best_f1, **trackables)
        self._state = state
        self._latest = tf.train.CheckpointManager(
            state, write.path(run_folder.CHECKPOINTS_DIR), max_to_keep=1
        )
        self._best = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model, step=self.step),
            write.path(run_folder.BEST_DIR),
            max_to_keep=1,
        )

    def resume(self) -> str | None:
        """Restores the chief's latest state, if any; returns its path."""
        latest = tf.train.latest_checkpoint(
            os.path.join(self.model_dir, run_folder.CHECKPOINTS_DIR)
        )
        if latest:
            self._state.restore(latest).expect_partial()
        return latest

    def save_latest(self) -> None:
        self._latest.save(checkpoint_number=int(self.step))

    def save_if_best(self, dev_f1: float) -> None:
        """Keeps the current weights as the best when `dev_f1` beats every earlier validation."""
        if dev_f1 > float(self.best_f1):
            self.best_f1.assign(dev_f1)
            self._best.save(checkpoint_number=int(self.step))

    def restore_best(self, strategy: tf.distribute.Strategy) -> int:
        """Restores the chief's best weights into the model; returns their step.

        Every worker reads the chief's copy: after a resume the other workers'
        own `best/` (in their emptied scratch folders) can be empty. The barrier
        waits for the chief's last save. `step` keeps counting training steps.
        """
        distribute.barrier(strategy)
        path = tf.train.latest_checkpoint(os.path.join(self.model_dir, run_folder.BEST_DIR))
        if path is None:
            raise FileNotFoundError(f"no best checkpoint in {self.model_dir}/best to evaluate")
        best_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        tf.train.Checkpoint(model=self.model, step=best_step).restore(path).expect_partial()
        return int(best_step)
