"""Interrupting training (SIGKILL) and running the same command again continues where it stopped."""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from longbert_tf import configs, training
from longbert_tf.framework import tf
from tests.conftest import kill_after_checkpoint, training_losses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_killed_run_resumes_at_the_same_step_and_input_position(
    tiny_data_dir, deterministic_encoder, tmp_path
):
    steps = 300
    flags = [
        f"--data_dir={tiny_data_dir}", f"--encoder={deterministic_encoder}", "--seq_len=256",
        "--segment_length=128", "--batch_size=2", f"--train_steps={steps}", "--eval_every=150",
        "--checkpoint_every=10", "--log_every=1",
    ]  # fmt: skip
    command = [sys.executable, "-m", "experiments.run", *flags]
    whole = subprocess.run(
        [*command, f"--model_dir={tmp_path}/whole"], cwd=ROOT, capture_output=True, timeout=600
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    command.append(f"--model_dir={tmp_path}/run")
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    kill_after_checkpoint([process], f"{tmp_path}/run/checkpoints", 20)
    assert not os.path.exists(f"{tmp_path}/run/metrics.json")

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    step = int(re.search(r"Resumed .*ckpt-(\d+) at step (\d+)", resumed.stderr).group(2))
    assert 20 <= step < steps
    assert f"step {step + 1}/{steps}" in resumed.stderr  # counting on from there, not from 0
    assert glob.glob(f"{tmp_path}/run/checkpoints/ckpt-{steps}.index")
    # The resumed run trained on the notes the uninterrupted one used: the same loss at every step.
    uninterrupted, interrupted = (
        training_losses(f"{tmp_path}/whole"),
        training_losses(f"{tmp_path}/run"),
    )
    assert sorted(interrupted) == sorted(uninterrupted) == list(range(1, steps + 1))
    for logged_step in range(1, steps + 1):
        assert interrupted[logged_step] == pytest.approx(uninterrupted[logged_step], rel=1e-4), (
            logged_step
        )
    with open(f"{tmp_path}/run/metrics.json") as metrics_file:
        assert json.load(metrics_file)["test"]["num_notes"] == 8


def test_a_checkpoint_holds_weights_optimizer_slots_and_counters_only(tiny_data_dir, tmp_path):
    config = configs.ExperimentConfig(
        dataset="synthetic",
        data_dir=tiny_data_dir,
        model_dir=str(tmp_path / "run"),
        encoder="random:L-1_H-64_A-2",
        segments=configs.SegmentConfig(256, 128),
        batch_size=2,
        learning_rate=1e-3,
        train_steps=3,
        eval_every=3,
    )
    training.train_and_evaluate(config)
    checkpoint = tf.train.latest_checkpoint(f"{config.model_dir}/checkpoints")
    reader = tf.train.load_checkpoint(checkpoint)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    # No note data: besides TensorFlow's own object graph, only numbers.
    assert {name for name, dtype in dtypes.items() if dtype == tf.string} == {
        "_CHECKPOINTABLE_OBJECT_GRAPH"
    }
    assert not [name for name in shapes if "train_data" in name or "iterator" in name]
    counters = {name for name, shape in shapes.items() if not shape}
    assert counters <= {
        "step/.ATTRIBUTES/VARIABLE_VALUE",
        "best_f1/.ATTRIBUTES/VARIABLE_VALUE",
        "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE",
        "optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE",
        "model/encoder/do_lower_case:0/.ATTRIBUTES/VARIABLE_VALUE",  # the encoder's own flag
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        "_CHECKPOINTABLE_OBJECT_GRAPH",
    }, counters
    # Its size: the model's weights and Adam's two moments of each trainable one, plus at most 5%.
    experiment = training.build_experiment(config)
    weights = sum(np.prod(variable.shape) for variable in experiment.model.weights)
    trainable = sum(np.prod(variable.shape) for variable in experiment.model.trainable_weights)
    expected_bytes = 4 * (weights + 2 * trainable)
    size = sum(os.path.getsize(path) for path in glob.glob(f"{checkpoint}.*"))
    assert expected_bytes <= size <= 1.05 * expected_bytes, (size, expected_bytes)
