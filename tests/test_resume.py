"""Interrupting training (SIGKILL) and running the same command again continues where it stopped."""

import glob
import json
import os
import re
import subprocess
import sys

from longbert_tf import configs, data, tokenization
from longbert_tf.framework import tf
from tests.conftest import kill_after_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_killed_run_resumes_from_its_last_checkpoint(tiny_data_dir, tmp_path):
    command = [
        sys.executable, "-m", "experiments.run", f"--data_dir={tiny_data_dir}",
        f"--model_dir={tmp_path}/run", "--encoder=random:L-1_H-16_A-2", "--seq_len=256",
        "--segment_length=128", "--batch_size=2", "--train_steps=300", "--eval_every=150",
        "--checkpoint_every=10",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    kill_after_checkpoint([process], f"{tmp_path}/run/checkpoints", 20)
    assert not os.path.exists(f"{tmp_path}/run/metrics.json")

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    step = int(re.search(r"Resumed .*ckpt-(\d+) at step (\d+)", resumed.stderr).group(2))
    assert 20 <= step < 300
    assert f"step {step + 20}/300" in resumed.stderr  # counting on from there, not from 0
    assert glob.glob(f"{tmp_path}/run/checkpoints/ckpt-300.index")
    with open(f"{tmp_path}/run/metrics.json") as metrics_file:
        assert json.load(metrics_file)["test"]["num_notes"] == 8


def test_the_input_position_is_part_of_the_checkpoint(tiny_dataset_dir, tiny_encoder_dir, tmp_path):
    vocab = tokenization.Vocab(f"{tiny_encoder_dir}/assets/vocab.txt", lower_case=True)
    records = data.token_cache(tiny_dataset_dir, "train", vocab)
    segments = configs.SegmentConfig(256, 128)

    def iterator():
        dataset = data.segment_dataset(
            records, data.bert_segmenter(segments, vocab), 2, 12, 3, training=True, seed=4
        )
        return iter(dataset)

    def next_notes(it, count):
        return [next(it)[0]["note_index"].numpy().tolist() for _ in range(count)]

    first = iterator()
    next_notes(first, 5)
    tf.train.Checkpoint(data=first).write(str(tmp_path / "position"))
    expected = next_notes(first, 6)  # crosses an epoch boundary (24 notes, batches of 3)
    second = iterator()
    tf.train.Checkpoint(data=second).read(str(tmp_path / "position")).assert_consumed()
    assert next_notes(second, 6) == expected
