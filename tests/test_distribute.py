"""Distribution: gradient accumulation, evaluation under MirroredStrategy, and two workers."""

import glob
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from longbert_tf.framework import keras
from longbert_tf.training import loop, optimization
from longbert_tf.training.experiment import build_experiment
from longbert_tf.training.trainer import Trainer
from tests.conftest import kill_after_checkpoint, tiny_config, training_losses

pytestmark = pytest.mark.slow  # trains, several processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def distributed_config(data_dir, model_dir, encoder, **overrides):
    """One segment (every note in one bucket), 1 step, 8 notes, float32: what is tested is
    how work is spread, not the arithmetic."""
    values = dict(encoder=encoder, train_steps=1, eval_every=1, max_notes=8)
    return tiny_config(data_dir, model_dir, **{**values, **overrides})


def test_gradient_accumulation_equals_one_large_batch(
    tiny_data_dir, deterministic_encoder, tmp_path
):
    updates = []
    for accumulation in (1, 4):
        config = distributed_config(
            tiny_data_dir,
            str(tmp_path / str(accumulation)),
            deterministic_encoder,
            grad_accum_steps=accumulation,
        )
        keras.utils.set_random_seed(0)
        experiment = build_experiment(config)
        before = [v.numpy() for v in experiment.model.trainable_variables]
        optimizer = keras.optimizers.SGD(1.0)  # the update is the gradient itself
        group = optimization.OptimizerGroup(optimizer, experiment.model.trainable_variables)
        trainer = Trainer(experiment.model, [group], experiment.strategy, 4, accumulation)
        outputs = trainer(experiment.train_iterator())
        after = [v.numpy() for v in experiment.model.trainable_variables]
        update = [b - a for a, b in zip(after, before)]
        updates.append((float(outputs["loss"]), int(outputs["note_tokens"]), update))
    (big_loss, big_tokens, big_update), (loss, tokens, update) = updates
    assert loss == pytest.approx(big_loss, rel=1e-5) and tokens == big_tokens
    for expected, actual in zip(big_update, update):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-7)


def test_mirrored_evaluation_over_two_devices_equals_one_device(tiny_data_dir, tiny_encoder_dir):
    completed = subprocess.run(
        [sys.executable, "-m", "tests.mirrored_evaluation", tiny_data_dir, tiny_encoder_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results["replicas"] == 2
    for split in ("dev", "test"):
        expected, actual = results["one_device"][split], results["mirrored"][split]
        assert actual["num_notes"] == expected["num_notes"] == 8
        assert actual.keys() == expected.keys()
        for name, value in expected.items():
            assert actual[name] == pytest.approx(value, rel=1e-5, abs=1e-6), (split, name)


def free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_two_workers(flags: list, tmp_path) -> list:
    """Starts `experiments.run` as workers 0 and 1 of a localhost cluster.

    Each has its own TMPDIR and logs into `tmp_path/workerN.log`.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = []
    for index in range(2):
        scratch = tmp_path / f"worker{index}_tmp"
        scratch.mkdir(exist_ok=True)
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            TMPDIR=str(scratch),
        )
        command = [sys.executable, "-m", "experiments.run", "--strategy=multi_worker", *flags]
        with open(tmp_path / f"worker{index}.log", "w") as log:
            processes.append(
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
            )
    return processes


def finish(processes: list, tmp_path, timeout: int = 600) -> list:
    """Waits for the workers; returns their logs, each checked to have succeeded."""
    logs = []
    for index, process in enumerate(processes):
        process.wait(timeout=timeout)
        logs.append((tmp_path / f"worker{index}.log").read_text())
        assert process.returncode == 0, logs[-1][-3000:]
    return logs


def assert_only_the_chief_wrote(tmp_path, model_dir: str) -> None:
    """One checkpoint folder (the chief's, in the model dir); the workers' scratch is gone."""
    checkpoint_dirs = glob.glob(f"{tmp_path}/**/checkpoints", recursive=True)
    assert f"{model_dir}/checkpoints" in checkpoint_dirs
    assert not [path for path in checkpoint_dirs if "_tmp/" in os.path.relpath(path, tmp_path)]
    for index in range(2):  # (a killed TensorFlow leaves its own autograph files there)
        assert not glob.glob(f"{tmp_path}/worker{index}_tmp/longbert-*")


def test_two_workers_train_like_one_process_with_the_same_global_batch(
    tiny_data_dir, deterministic_encoder, tmp_path
):
    # 24 training notes, global batch 8: three steps an epoch, so each step's notes must be
    # the same ones however the workers split them; 7 steps cross two epoch boundaries.
    steps = 7
    config = distributed_config(
        tiny_data_dir,
        str(tmp_path / "one_process"),
        deterministic_encoder,
        batch_size=8,
        train_steps=steps,
        eval_every=7,
        log_every=1,
        max_notes=None,
    )
    expected = loop.train_and_evaluate(config)
    flags = [
        f"--data_dir={tiny_data_dir}",
        f"--encoder={deterministic_encoder}",
        "--seq_len=128",
        "--segment_length=128",
        "--batch_size=8",
        "--learning_rate=1e-3",
        f"--train_steps={steps}",
        "--eval_every=7",
        "--log_every=1",
        "--compute_dtype=float32",
        f"--model_dir={tmp_path}/two_workers",
    ]
    logs = finish(start_two_workers(flags, tmp_path), tmp_path)

    baseline, distributed = (
        training_losses(config.model_dir),
        training_losses(f"{tmp_path}/two_workers"),
    )
    assert sorted(distributed) == sorted(baseline) == list(range(1, steps + 1))
    for step in baseline:
        assert distributed[step] == pytest.approx(baseline[step], rel=1e-4), step
    assert all(f"step {steps}/{steps}" in log for log in logs)  # both workers trained

    assert_only_the_chief_wrote(tmp_path, f"{tmp_path}/two_workers")
    with open(f"{tmp_path}/two_workers/metrics.json") as metrics_file:
        results = json.load(metrics_file)
    for split in ("dev", "test"):
        assert results[split]["num_notes"] == expected[split]["num_notes"] == 8  # dev and test
        assert results[split]["micro_f1"] == pytest.approx(expected[split]["micro_f1"], abs=1e-6)


def test_killed_two_worker_run_resumes_at_the_same_input_position(
    tiny_data_dir, deterministic_encoder, tmp_path
):
    """Killed after the best validation (step 45 of 50), resumed: every worker trains on the
    notes and evaluates the weights the uninterrupted run does, though only the chief kept
    the best checkpoint."""
    steps = 50
    flags = [
        f"--data_dir={tiny_data_dir}",
        f"--encoder={deterministic_encoder}",
        "--seq_len=256",
        "--segment_length=128",
        "--batch_size=4",
        f"--train_steps={steps}",
        "--eval_every=15",
        "--log_every=1",
        "--compute_dtype=float32",
    ]
    finish(start_two_workers([*flags, f"--model_dir={tmp_path}/whole"], tmp_path), tmp_path)
    with open(f"{tmp_path}/whole/metrics.json") as metrics_file:
        expected = json.load(metrics_file)
    killed = [*flags, f"--model_dir={tmp_path}/run"]
    processes = start_two_workers(killed, tmp_path)
    kill_after_checkpoint(processes, f"{tmp_path}/run/checkpoints", expected["best_step"])
    assert not os.path.exists(f"{tmp_path}/run/metrics.json")
    # Worker 1 saved its share of the checkpoints into its scratch folder, not the model dir.
    assert glob.glob(f"{tmp_path}/worker1_tmp/longbert-*-worker1/checkpoints/ckpt-*.index")

    logs = finish(start_two_workers(killed, tmp_path), tmp_path)
    for log in logs:
        step = int(re.search(r"Resumed .*ckpt-\d+ at step (\d+)", log).group(1))
        assert expected["best_step"] <= step < steps, "the best step must precede the kill"
        assert f"step {steps}/{steps}" in log  # counting on from there, not from 0
    # Each worker trained on the notes the uninterrupted run used: the same loss at every step.
    uninterrupted, resumed = (
        training_losses(f"{tmp_path}/whole"),
        training_losses(f"{tmp_path}/run"),
    )
    assert sorted(resumed) == sorted(uninterrupted) == list(range(1, steps + 1))
    for step in range(1, steps + 1):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-4), step
    with open(f"{tmp_path}/run/metrics.json") as metrics_file:
        results = json.load(metrics_file)
    assert results["best_step"] == expected["best_step"] < steps
    for split in ("dev", "test"):
        assert results[split]["num_notes"] == 8
        for name in ("micro_f1", "micro_pr_auc", "micro_roc_auc"):
            assert results[split][name] == pytest.approx(expected[split][name], abs=1e-6), name
    assert_only_the_chief_wrote(tmp_path, f"{tmp_path}/run")
