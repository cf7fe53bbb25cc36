"""An experiment's inputs resolved once (`training.inputs`), and an `Experiment` whose metrics need
nothing but the counts they are given."""

import numpy as np
import pandas as pd
import pytest

from longbert_tf import configs
from longbert_tf.data import dataset
from longbert_tf.training.experiment import build_experiment
from tests.conftest import tiny_config

LABELS = ["A", "B", "C", "D"]


@pytest.fixture
def outside_codes_data(tmp_path):
    """Dev and test notes with codes outside the label space; D has no training note."""
    train = pd.DataFrame(
        dict(
            note_id=["t1", "t2", "t3"],
            subject_id=["1", "2", "3"],
            text=["fever and cough", "chest pain", "fever"],
            codes=[["A", "B"], ["C"], ["A"]],
        )
    )
    held_out = pd.DataFrame(
        dict(
            note_id=["h1", "h2", "h3"],
            subject_id=["4", "5", "6"],
            text=["fever", "cough and pain", "rash"],
            codes=[["A", "X1"], ["D", "X1", "X2"], []],
        )
    )
    splits = {"train": train, "dev": held_out, "test": held_out.iloc[:2]}
    data_dir = tmp_path / "data"
    dataset.write_dataset(str(data_dir / "synthetic"), splits, LABELS)
    return str(data_dir)


def config_for(data_dir: str, encoder: str, model_dir: str, **overrides):
    values = dict(
        encoder=encoder,
        segments=configs.SegmentConfig(128, 64),
        batch_size=2,
        train_steps=1,
        eval_every=1,
    )
    return tiny_config(data_dir, model_dir, **{**values, **overrides})


def test_inputs_hold_every_splits_codes_counted_from_the_notes(
    outside_codes_data, tiny_encoder_dir, tmp_path
):
    config = config_for(outside_codes_data, tiny_encoder_dir, str(tmp_path / "run"))
    inputs = build_experiment(config).inputs
    assert inputs.labels == LABELS and inputs.config.labels_fingerprint is not None
    assert inputs.config.vocab_fingerprint == inputs.vocab.fingerprint
    for split in dataset.SPLITS:
        notes = dataset.read_notes(config.dataset_dir, split)
        expected = [sum(code in codes for codes in notes.codes) for code in LABELS]
        split_inputs = inputs.splits[split]
        assert split_inputs.num_notes == len(notes)
        np.testing.assert_array_equal(split_inputs.label_counts, expected)
    np.testing.assert_array_equal(inputs.splits["dev"].outside_codes, [1, 2, 0])
    np.testing.assert_array_equal(inputs.splits["test"].outside_codes, [1, 2])
    np.testing.assert_array_equal(inputs.splits["dev"].tracked_codes, [0, 3])  # A and D
    assert inputs.splits["train"].outside_codes is None  # never counted
    assert inputs.code_descriptions is None and inputs.word_embeddings is None
    truncated = build_experiment(config_for(**_args(config), max_notes=2)).inputs
    assert truncated.splits["dev"].num_notes == 2
    np.testing.assert_array_equal(truncated.splits["dev"].outside_codes, [1, 2])


def _args(config) -> dict:
    return dict(data_dir=config.data_dir, encoder=config.encoder, model_dir=config.model_dir)


def test_metrics_need_only_the_counts_they_are_given(
    outside_codes_data, tiny_encoder_dir, tmp_path
):
    """An experiment that never counted a split computes the same metrics from another's counts."""
    config = config_for(outside_codes_data, tiny_encoder_dir, str(tmp_path / "run"))
    counting = build_experiment(config)
    counts = counting.count("dev")
    fresh = build_experiment(config)
    expected = counting.metrics("dev", counts, threshold=0.5)
    assert fresh.metrics("dev", counts, threshold=0.5) == pytest.approx(expected, nan_ok=True)
    assert expected["unseen_code_recall"] == 0.0  # D: one dev note, no training note
    with pytest.raises(ValueError, match="train is not counted"):
        counting.count("train")
