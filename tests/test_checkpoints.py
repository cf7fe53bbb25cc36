"""Interrupting training (SIGKILL) and running the same command again continues where it stopped."""

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from longbert_tf import configs
from longbert_tf.data import dataset, synthetic
from longbert_tf.framework import tf
from longbert_tf.serving import coder
from longbert_tf.training import loop
from longbert_tf.training.experiment import build_experiment
from tests.conftest import TINY_SYNTHETIC, kill_after_checkpoint, tiny_config, training_losses
from tests.entry_points import run_main

pytestmark = pytest.mark.slow  # trains and kills processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_run(data_dir, tmp_path, **overrides) -> configs.ExperimentConfig:
    """`tiny_config` with an H-64 encoder, two segments, 3 steps and one validation."""
    values = dict(
        encoder="random:L-1_H-64_A-2",
        segments=configs.SegmentConfig(256, 128),
        batch_size=2,
        train_steps=3,
        eval_every=3,
    )
    return tiny_config(data_dir, str(tmp_path / "run"), **{**values, **overrides})


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_killed_run_resumes_at_the_same_step_and_input_position(
    tiny_data_dir, deterministic_encoder, tiny_encoder_dir, tmp_path, dropout
):
    """With dropout too: its random state is checkpointed with the run (`bert_layers`). The
    killed run is a process; the uninterrupted run and the resumption run in this one."""
    encoder = tiny_encoder_dir if dropout else deterministic_encoder
    steps = 100
    flags = [
        f"--data_dir={tiny_data_dir}",
        f"--encoder={encoder}",
        "--seq_len=256",
        "--segment_length=128",
        "--batch_size=2",
        f"--train_steps={steps}",
        "--eval_every=50",
        "--checkpoint_every=10",
        "--log_every=1",
        "--compute_dtype=float32",
    ]
    whole = run_main("experiments.run", *flags, f"--model_dir={tmp_path}/whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    flags.append(f"--model_dir={tmp_path}/run")
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *flags],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_after_checkpoint([process], f"{tmp_path}/run/checkpoints", 20)
    assert not os.path.exists(f"{tmp_path}/run/metrics.json")

    resumed = run_main("experiments.run", *flags)
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
    config = tiny_run(tiny_data_dir, tmp_path)
    loop.train_and_evaluate(config)
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
    experiment = build_experiment(config)
    weights = sum(np.prod(variable.shape) for variable in experiment.model.weights)
    trainable = sum(np.prod(variable.shape) for variable in experiment.model.trainable_weights)
    expected_bytes = 4 * (weights + 2 * trainable)
    size = sum(os.path.getsize(path) for path in glob.glob(f"{checkpoint}.*"))
    assert expected_bytes <= size <= 1.05 * expected_bytes, (size, expected_bytes)


def test_a_run_refuses_another_vocabulary_or_label_list(tmp_path):
    """Resume and export use the run's own vocabulary and labels, or say why they cannot."""
    data_dir, model_dir = str(tmp_path / "data"), str(tmp_path / "run")
    synthetic.prepare(data_dir, TINY_SYNTHETIC)
    dataset_dir = f"{data_dir}/synthetic"
    config = tiny_config(data_dir, model_dir, max_notes=8)
    loop.train_and_evaluate(config)
    with open(f"{model_dir}/config.json") as config_file:
        saved = json.load(config_file)
    labels = dataset.read_labels(dataset_dir)
    assert saved["labels_fingerprint"] == dataset.labels_fingerprint(labels)
    assert saved["vocab_fingerprint"] == coder.load_trained(model_dir).vocab.fingerprint
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    os.remove(f"{model_dir}/metrics.json")  # unfinished again: running it resumes

    (tmp_path / "data/synthetic/labels.txt").write_text("".join(f"{c}\n" for c in labels[::-1]))
    with pytest.raises(ValueError, match=r"another label list \(labels.txt\)"):
        loop.train_and_evaluate(config)
    assert dataset.read_labels(model_dir) == labels  # the run's own list is left as it was

    # Prepared again from other notes: the random encoder is rebuilt with another vocabulary.
    synthetic.prepare(data_dir, dataclasses.replace(TINY_SYNTHETIC, seed=4))
    with pytest.raises(ValueError, match="another encoder vocabulary"):
        loop.train_and_evaluate(config)
    (tmp_path / "run" / "metrics.json").write_text(metrics)
    with pytest.raises(ValueError, match="another encoder vocabulary"):
        coder.load_trained(model_dir)


@pytest.mark.parametrize("empty_split", ["train", "dev"])
def test_an_empty_split_is_refused_before_any_work(tmp_path, empty_split):
    data_dir = str(tmp_path / "data")
    synthetic.prepare(data_dir, TINY_SYNTHETIC)
    dataset_dir = f"{data_dir}/synthetic"
    splits = {split: dataset.read_notes(dataset_dir, split) for split in dataset.SPLITS}
    splits[empty_split] = splits[empty_split].iloc[:0]
    dataset.write_dataset(dataset_dir, splits, dataset.read_labels(dataset_dir))
    config = tiny_config(data_dir, str(tmp_path / "run"))
    expected = (
        rf"{empty_split}.jsonl.gz holds no notes: the {empty_split} split is empty; prepare "
        r"the dataset again with the data_prep module that wrote it"
    )
    with pytest.raises(ValueError, match=expected):
        loop.train_and_evaluate(config)
    assert not os.path.exists(f"{dataset_dir}/encoders")  # refused before building anything
    assert not os.path.exists(config.model_dir)


def test_a_diverged_run_stops_with_the_step_and_saves_nothing_of_it(
    tiny_data_dir, tmp_path, monkeypatch
):
    config = tiny_run(tiny_data_dir, tmp_path, train_steps=4, eval_every=2)
    step = loop.Trainer.__call__

    def diverging_at_step_3(trainer, iterator):
        outputs = step(trainer, iterator)
        trainer.calls = getattr(trainer, "calls", 0) + 1
        return {**outputs, "loss": np.float32("nan")} if trainer.calls == 3 else outputs

    monkeypatch.setattr(loop.Trainer, "__call__", diverging_at_step_3)
    with pytest.raises(FloatingPointError, match=r"step 3: the training loss is nan"):
        loop.train_and_evaluate(config)
    assert tf.train.latest_checkpoint(f"{config.model_dir}/checkpoints").endswith("ckpt-2")
    # Weights that give NaN logits: counting a split says so, naming it.
    experiment = build_experiment(config)
    experiment.model.label_attention.label_biases.assign(
        np.full(experiment.model.label_attention.label_biases.shape, np.nan, np.float32)
    )
    with pytest.raises(FloatingPointError, match=r"dev: the model's logits are not finite"):
        experiment.count("dev")


def test_the_latest_state_is_saved_every_checkpoint_every_steps_and_at_the_end(
    tiny_data_dir, tmp_path, monkeypatch
):
    config = tiny_run(
        tiny_data_dir,
        tmp_path,
        encoder="random:L-1_H-16_A-2",
        train_steps=7,
        eval_every=2,
        checkpoint_every=3,
    )
    saved, save_latest = [], loop.RunCheckpoints.save_latest

    def recording(state):
        saved.append(int(state.step))
        save_latest(state)

    monkeypatch.setattr(loop.RunCheckpoints, "save_latest", recording)
    loop.train_and_evaluate(config)
    assert saved == [3, 6, 7]  # not at the evaluations of steps 2 and 4
