"""The predictions file: every dev and test note's top codes, written whole, as the model scores
them."""

import dataclasses
import json
import os

import numpy as np
import pytest

from longbert_tf import configs
from longbert_tf.data import dataset, synthetic
from longbert_tf.evaluation import predictions
from longbert_tf.framework import tf
from longbert_tf.training import loop
from longbert_tf.training.experiment import build_experiment
from tests.conftest import TINY_SYNTHETIC, tiny_config


@pytest.mark.slow
def test_a_run_streams_every_notes_top_codes_to_the_predictions_file(
    deterministic_encoder, tmp_path
):
    """20 codes, so that each line holds the 15 best and not every code."""
    data_dir = str(tmp_path / "data")
    synthetic.prepare(data_dir, dataclasses.replace(TINY_SYNTHETIC, num_codes=20))
    config = tiny_config(
        data_dir,
        str(tmp_path / "run"),
        encoder=deterministic_encoder,
        segments=configs.SegmentConfig(256, 128),
        batch_size=3,
    )
    path = tmp_path / "predictions.jsonl"
    loop.train_and_evaluate(config, predictions_file=str(path))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    # The best weights' own probabilities, note by note.
    experiment = build_experiment(config)
    best = tf.train.latest_checkpoint(os.path.join(config.model_dir, "best"))
    tf.train.Checkpoint(model=experiment.model).restore(best).expect_partial()
    labels = experiment.labels
    assert len(labels) == 20 > predictions.TOP_CODES
    for split in ("dev", "test"):
        notes = dataset.read_notes(config.dataset_dir, split)
        scored = np.zeros([len(notes), len(labels)])
        for features, _ in experiment.dataset(split):
            probabilities = tf.sigmoid(experiment.model(features, training=False)).numpy()
            scored[features["note_index"].numpy()] = probabilities
        written = {line["note_id"]: line for line in lines if line["split"] == split}
        assert sorted(written) == sorted(notes.note_id)  # every note once
        for row, (note_id, codes) in enumerate(zip(notes.note_id, notes.codes)):
            line = written[note_id]
            assert line["codes"] == codes
            top = np.argsort(-scored[row])[: predictions.TOP_CODES]
            assert [code for code, _ in line["top_codes"]] == [labels[i] for i in top]
            np.testing.assert_allclose(
                [probability for _, probability in line["top_codes"]], scored[row, top], atol=1e-6
            )
    assert not list(tmp_path.glob("predictions.jsonl.tmp-*"))
