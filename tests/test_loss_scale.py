"""Dynamic loss scaling (float16): exactly undone on finite steps, a skipped step on overflow, the
same decision on every replica, and a float16 run that trains, checkpoints its scale and resumes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from longbert_tf.framework import keras, tf
from longbert_tf.training import loop
from longbert_tf.training.loss_scale import DynamicLossScale
from longbert_tf.training.optimization import OptimizerGroup
from longbert_tf.training.trainer import Trainer
from tests.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = np.array([0.5, -1.0, 2.0], np.float32)


class Quadratic(keras.Model):
    """The training contract on a least-squares toy: two variables, one per optimizer group."""

    def __init__(self):
        super().__init__()
        self.encoder_weight = tf.Variable(START, name="encoder_weight")
        self.head_weight = tf.Variable(START[::-1].copy(), name="head_weight")

    def loss(self, features, targets, global_batch_size):
        predictions = features["x"] * self.encoder_weight * self.head_weight
        per_note = tf.reduce_sum(tf.square(predictions - targets), axis=-1)
        return tf.reduce_sum(per_note) / global_batch_size, {}

    @property
    def head_variables(self):
        return [self.head_weight]


def batch(scale: float = 1.0, notes: int = 4) -> tuple:
    x = scale * np.linspace(0.5, 2.0, 3 * notes, dtype=np.float32).reshape(notes, 3)
    return dict(x=x, input_mask=np.ones([notes, 2], np.int32)), np.ones([notes, 3], np.float32)


def trainer(strategy, loss_scale: DynamicLossScale | None):
    """A Quadratic, its trainer (Adam for the encoder, SGD for the head) and its groups."""
    with strategy.scope():
        model = Quadratic()
        groups = [
            OptimizerGroup(keras.optimizers.Adam(0.1), [model.head_weight]),
            OptimizerGroup(keras.optimizers.SGD(0.1), [model.encoder_weight]),
        ]
    return model, groups, Trainer(model, groups, strategy, 4, loss_scale=loss_scale)


def steps(strategy, loss_scale, batches: list) -> tuple:
    """Runs one step per batch; returns the model, its groups and the losses."""
    model, groups, train_step = trainer(strategy, loss_scale)
    losses = []
    for features, targets in batches:
        dataset = tf.data.Dataset.from_tensors((features, targets))
        if strategy.num_replicas_in_sync > 1:
            dataset = strategy.experimental_distribute_dataset(dataset.unbatch().batch(4))
        losses.append(float(train_step(iter(dataset))["loss"]))
    return model, groups, losses


def values(model) -> list:
    return [model.encoder_weight.numpy(), model.head_weight.numpy()]


def test_a_scaled_loss_gives_exactly_the_unscaled_updates():
    strategy = tf.distribute.get_strategy()
    plain, _, plain_losses = steps(strategy, None, [batch()] * 3)
    scaled, _, scaled_losses = steps(strategy, DynamicLossScale(), [batch()] * 3)
    assert scaled_losses == plain_losses  # the loss reported is the unscaled one
    for expected, actual in zip(values(plain), values(scaled)):
        np.testing.assert_array_equal(actual, expected)  # powers of 2 scale exactly
    assert not np.array_equal(values(plain)[0], START)  # the steps did move the weights


def test_an_overflowing_step_is_skipped_by_every_group_and_halves_the_scale():
    loss_scale = DynamicLossScale()
    model, groups, _ = steps(tf.distribute.get_strategy(), loss_scale, [batch(scale=1e18)])
    np.testing.assert_array_equal(values(model)[0], START)
    np.testing.assert_array_equal(values(model)[1], START[::-1])
    assert float(loss_scale.scale) == 2.0**14 and int(loss_scale.finite_steps) == 0
    assert [int(group.optimizer.iterations) for group in groups] == [1, 1]  # schedules advance


def test_the_scale_doubles_after_growth_steps_finite_steps_and_never_drops_below_one():
    loss_scale = DynamicLossScale(initial_scale=4.0, growth_steps=2)
    steps(tf.distribute.get_strategy(), loss_scale, [batch()])
    assert (float(loss_scale.scale), int(loss_scale.finite_steps)) == (4.0, 1)
    steps(tf.distribute.get_strategy(), loss_scale, [batch()])
    assert (float(loss_scale.scale), int(loss_scale.finite_steps)) == (8.0, 0)
    low = DynamicLossScale(initial_scale=1.0)
    steps(tf.distribute.get_strategy(), low, [batch(scale=1e30)])
    assert float(low.scale) == 1.0


def mirrored_run() -> dict:
    """Under MirroredStrategy over 2 logical CPUs: a finite step equals one device's; a batch
    that overflows on one replica only is skipped on both. Run in a process of its own."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one, _, one_losses = steps(tf.distribute.get_strategy(), DynamicLossScale(), [batch()] * 2)
    with mirrored.scope():
        loss_scale = DynamicLossScale()
    two, _, two_losses = steps(mirrored, loss_scale, [batch()] * 2)
    features, targets = batch()
    features["x"][2:] *= 1e18  # the second replica's notes overflow
    skipped, _, _ = steps(mirrored, DynamicLossScale(), [(features, targets)])
    return dict(
        one=[v.tolist() for v in values(one)],
        two=[v.tolist() for v in values(two)],
        losses=[one_losses, two_losses],
        skipped=[v.tolist() for v in values(skipped)],
        per_replica_scale=[float(v) for v in loss_scale.scale.values],
    )


@pytest.mark.slow
def test_every_replica_takes_the_same_decision():
    command = [
        sys.executable,
        "-c",
        "import json, tests.test_loss_scale as t; print(json.dumps(t.mirrored_run()))",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["two"], result["one"], rtol=1e-6)
    np.testing.assert_allclose(result["losses"][1], result["losses"][0], rtol=1e-6)
    np.testing.assert_array_equal(result["skipped"], [START.tolist(), START[::-1].tolist()])
    assert result["per_replica_scale"] == [2.0**15, 2.0**15]


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_a_float16_run_trains_saves_its_loss_scale_and_resumes(
    tiny_data_dir, tmp_path, monkeypatch
):
    model_dir = str(tmp_path / "run")
    config = tiny_config(
        tiny_data_dir,
        model_dir,
        train_steps=3,
        eval_every=3,
        checkpoint_every=2,
        max_notes=8,
        compute_dtype="float16",
    )
    save_latest = loop.RunCheckpoints.save_latest

    def save_then_stop(state):  # the run stops right after its step-2 checkpoint
        save_latest(state)
        raise Interrupted

    monkeypatch.setattr(loop.RunCheckpoints, "save_latest", save_then_stop)
    with pytest.raises(Interrupted):
        loop.train_and_evaluate(config)

    def saved_scale() -> tuple:
        """The latest checkpoint's step and loss scale (scale, finite steps)."""
        path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
        reader = tf.train.load_checkpoint(path)
        names = [name for name, _ in tf.train.list_variables(path) if name.startswith("loss_")]
        assert len(names) == 2, names
        scale = [name for name in names if name.startswith("loss_scale/scale")][0]
        finite = [name for name in names if name.startswith("loss_scale/finite_steps")][0]
        return int(path.rsplit("-", 1)[1]), (
            float(reader.get_tensor(scale)),
            int(reader.get_tensor(finite)),
        )

    step, (scale, finite) = saved_scale()
    assert step == 2 and scale in (2.0**15, 2.0**14, 2.0**13) and finite in (0, 1, 2)
    with open(os.path.join(model_dir, "config.json")) as config_file:
        assert json.load(config_file)["compute_dtype"] == "float16"
    monkeypatch.setattr(loop.RunCheckpoints, "save_latest", save_latest)
    results = loop.train_and_evaluate(config)
    assert np.isfinite(results["test"]["micro_f1"]) and results["best_step"] == 3
    # The resumed run went on from the saved scale: one more finite step, or one halving.
    assert saved_scale() in ((3, (scale, finite + 1)), (3, (scale / 2, 0)))
