"""The predictions file: every dev and test note's top codes, written whole."""

import json

import pytest

from longbert_tf import configs, dataset, training


@pytest.mark.slow
def test_a_run_streams_every_notes_top_codes_to_the_predictions_file(
    tiny_data_dir, deterministic_encoder, tmp_path
):
    config = configs.ExperimentConfig(
        dataset="synthetic",
        data_dir=tiny_data_dir,
        model_dir=str(tmp_path / "run"),
        encoder=deterministic_encoder,
        segments=configs.SegmentConfig(256, 128),
        batch_size=3,
        learning_rate=1e-3,
        train_steps=2,
        eval_every=2,
        compute_dtype="float32",
    )
    path = tmp_path / "predictions.jsonl"
    training.train_and_evaluate(config, predictions_file=str(path))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    labels = dataset.read_labels(config.dataset_dir)
    for split in ("dev", "test"):
        notes = dataset.read_notes(config.dataset_dir, split)
        written = {line["note_id"]: line for line in lines if line["split"] == split}
        assert sorted(written) == sorted(notes.note_id)  # every note once
        for note_id, codes in zip(notes.note_id, notes.codes):
            line = written[note_id]
            assert line["codes"] == codes
            probabilities = [probability for _, probability in line["top_codes"]]
            assert len(probabilities) == len(labels)  # 15 or all codes, when fewer
            assert probabilities == sorted(probabilities, reverse=True)
            assert {code for code, _ in line["top_codes"]} == set(labels)
    assert not list(tmp_path.glob("predictions.jsonl.tmp-*"))
