"""Masked-LM pretraining: masking statistics, a falling loss, and an encoder that loads back."""

import os

import numpy as np
import pytest

from longbert_tf.data import tokenization
from longbert_tf.modeling import bert, encoders
from longbert_tf.training import pretraining
from tests.entry_points import run_main

pytestmark = pytest.mark.slow  # pretrains and writes an encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_masking_chooses_15_percent_of_real_tokens_and_replaces_80_10_10():
    rng = np.random.default_rng(0)
    word_ids = rng.integers(10, 1000, [256, 512]).astype(np.int32)  # about 15,000 chosen
    word_ids[:, 0], word_ids[:, 400] = 2, 3  # [CLS], [SEP]
    input_mask = np.ones_like(word_ids)
    input_mask[:, 401:] = 0  # padding
    inputs, targets, weights = (
        t.numpy()
        for t in pretraining.mask_tokens(word_ids, input_mask, 1000, 4, [0, 2, 3, 4], [7, 0])
    )
    chosen = weights > 0
    real = (input_mask > 0) & (word_ids > 3)
    assert not (chosen & ~real).any()  # never special tokens or padding
    assert chosen.sum() / real.sum() == pytest.approx(0.15, abs=0.005)
    np.testing.assert_array_equal(targets, word_ids)
    np.testing.assert_array_equal(inputs[~chosen], word_ids[~chosen])
    masked = (inputs == 4)[chosen].mean()
    kept = (inputs == word_ids)[chosen].mean()
    assert masked == pytest.approx(0.8, abs=0.015)
    assert kept == pytest.approx(0.1 + 0.1 / 1000, abs=0.01)  # a random token may be the same
    assert 1 - masked - kept == pytest.approx(0.1, abs=0.01)
    again = pretraining.mask_tokens(word_ids, input_mask, 1000, 4, [0, 2, 3, 4], [7, 0])[0]
    np.testing.assert_array_equal(again.numpy(), inputs)  # seeded


def test_windows_cut_every_text_into_segments():
    index = np.array([[0, 0, 10], [0, 0, 0], [0, 0, 4]])
    np.testing.assert_array_equal(
        pretraining.windows([index], 4),
        [[0, 0, 4], [0, 4, 4], [0, 8, 2], [1, 0, 0], [2, 0, 4]],
    )


def test_pretraining_lowers_the_loss_and_writes_an_encoder_that_loads_back(
    tiny_data_dir, tiny_encoder_dir, tmp_path, compute_dtype
):
    text_dir = tmp_path / "texts"
    text_dir.mkdir()
    for number in range(3):
        (text_dir / f"case{number}.txt").write_text("the patient has chronic pancreatitis. " * 20)
    command = [
        "experiments.pretrain",
        f"--encoder={tiny_encoder_dir}",
        f"--data_dir={tiny_data_dir}",
        "--dataset=synthetic",
        f"--text_dir={text_dir}",
        f"--out_dir={tmp_path}/run",
        "--segment_length=64",
        "--batch_size=8",
        "--learning_rate=5e-3",
        "--warmup_steps=5",
        "--train_steps=100",
        "--checkpoint_every=50",
        "--log_every=1",
        f"--compute_dtype={compute_dtype}",
    ]
    completed = run_main(*command)
    assert completed.returncode == 0, completed.stderr[-3000:]
    losses = [
        float(line.split("masked-LM loss ")[1].split()[0])
        for line in completed.stderr.splitlines()
        if "masked-LM loss" in line
    ]
    assert len(losses) == 100
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    encoder_dir = f"{tmp_path}/run/encoder"
    assert bert.read_compute_dtype(encoder_dir) == "float32"  # whatever dtype it trained in
    encoder = encoders.load(encoder_dir, segment_length=64)
    source = tokenization.Vocab(f"{tiny_encoder_dir}/assets/vocab.txt", lower_case=True)
    assert encoder.vocab.tokens == source.tokens and encoder.vocab.lower_case
    trained = {w.name: w.numpy() for w in encoder.layer.weights}
    initial = {w.name: w.numpy() for w in encoders.load(tiny_encoder_dir, 64).layer.weights}
    assert trained.keys() == initial.keys()
    assert any(not np.allclose(trained[name], initial[name]) for name in trained)
    # The extra texts were tokenized once, with the encoder's vocabulary.
    assert len(list((tmp_path / "run" / "texts").glob("*.tfrecord"))) == 1
    again = run_main(*command)
    assert again.returncode == 0 and "is finished" in again.stderr
