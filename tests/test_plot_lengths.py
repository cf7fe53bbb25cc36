"""data_prep.plot_lengths: Figure 2 from the token cache."""

import json
import os

import numpy as np
import pytest

from data_prep import plot_lengths
from longbert_tf.data import dataset, token_cache, tokenization
from tests.entry_points import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_length_report_matches_numpy():
    lengths = np.array([100, 600, 1500, 3000, 5000, 9000])
    report = plot_lengths.length_report(lengths)
    assert report["notes"] == 6
    assert report["share_within"] == {
        "512": 1 / 6,
        "1024": 2 / 6,
        "2048": 3 / 6,
        "4096": 4 / 6,
        "8192": 5 / 6,
    }
    assert report["percentiles"]["50"] == np.percentile(lengths, 50)


def test_token_lengths_follow_note_order(tiny_dataset_dir, tiny_encoder_dir):
    vocab = tokenization.Vocab(f"{tiny_encoder_dir}/assets/vocab.txt", lower_case=True)
    lengths = token_cache.token_lengths(token_cache.build(tiny_dataset_dir, "dev", vocab))
    texts = dataset.read_notes(tiny_dataset_dir, "dev").text.tolist()
    tokenizer = tokenization.make_tokenizer(vocab)
    expected = [len(tokenizer.tokenize([text]).flat_values) for text in texts]
    assert lengths.tolist() == expected


@pytest.mark.slow
def test_command_writes_the_figure_and_the_shares(tiny_dataset_dir, tiny_encoder_dir, tmp_path):
    out = tmp_path / "figure.png"
    result = run_main(
        "data_prep.plot_lengths",
        f"--dataset_dir={tiny_dataset_dir}",
        f"--encoder={tiny_encoder_dir}",
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    report = json.loads((tmp_path / "figure.json").read_text())
    assert report["notes"] == 40 and report["share_within"]["8192"] == 1.0
    assert "512 tokens:" in result.stdout
