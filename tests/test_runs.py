"""A run's identity: its saved config, the same-run check and the vocabulary/label binding."""

import dataclasses

import pytest

from longbert_tf import configs, run_folder
from longbert_tf.data import dataset
from longbert_tf.training import runs
from tests.conftest import tiny_config


class FakeVocab:
    fingerprint = "0123456789abcdef"


def make_config(tmp_path, **overrides):
    paths = dict(data_dir=str(tmp_path / "data"), model_dir=str(tmp_path / "run"))
    return tiny_config(**{**paths, **overrides})


def test_a_started_run_reads_back_its_config_and_labels(tmp_path):
    config = runs.bind_run(make_config(tmp_path), FakeVocab(), ["A", "B"])
    assert run_folder.saved_config(config.model_dir) is None
    runs.write_start(config, ["A", "B"])
    assert run_folder.saved_config(config.model_dir) == config
    assert dataset.read_labels(config.model_dir) == ["A", "B"]


def test_the_same_run_takes_the_saved_binding_and_another_config_is_refused(tmp_path):
    saved = runs.bind_run(make_config(tmp_path), FakeVocab(), ["A", "B"])
    assert runs.same_run(make_config(tmp_path), saved) == saved
    assert runs.same_run(make_config(tmp_path), None) == make_config(tmp_path)
    with pytest.raises(ValueError, match=r"different config \(\['learning_rate', 'seed'\]\)"):
        runs.same_run(make_config(tmp_path, learning_rate=1e-4, seed=3), saved)


def test_a_run_resumes_where_and_how_it_now_runs(tmp_path):
    saved = runs.bind_run(make_config(tmp_path), FakeVocab(), ["A", "B"])
    moved = make_config(
        tmp_path,
        model_dir=str(tmp_path / "run") + "/",
        data_dir=str(tmp_path / "moved_data"),
        log_every=1,
        checkpoint_every=1,
        strategy="one_device",
    )
    resumed = runs.same_run(moved, saved)
    binding = {name: getattr(saved, name) for name in configs.RUN_BINDING}
    assert resumed == dataclasses.replace(moved, **binding)
    for field, changed in (("eval_every", 1), ("train_steps", 4), ("compute_dtype", "bfloat16")):
        with pytest.raises(ValueError, match=rf"different config \(\['{field}'\]\)"):
            runs.same_run(make_config(tmp_path, **{field: changed}), saved)


def test_a_bound_run_refuses_another_vocabulary_or_label_order(tmp_path):
    bound = runs.bind_run(make_config(tmp_path), FakeVocab(), ["A", "B"])
    assert bound.labels_fingerprint == dataset.labels_fingerprint(["A", "B"])
    assert runs.bind_run(bound, FakeVocab(), ["A", "B"]) == bound
    with pytest.raises(ValueError, match="another label list"):
        runs.bind_run(bound, FakeVocab(), ["B", "A"])
    other_vocab = dataclasses.replace(bound, vocab_fingerprint="fedcba9876543210")
    with pytest.raises(ValueError, match="another encoder vocabulary"):
        runs.bind_run(other_vocab, FakeVocab(), ["A", "B"])


def test_auto_dtype_keeps_what_the_saved_run_started_with(tmp_path):
    saved = make_config(tmp_path, compute_dtype="bfloat16")
    resolved = runs.resolve_compute_dtype(make_config(tmp_path, compute_dtype="auto"), saved)
    assert resolved.compute_dtype == "bfloat16"
    assert runs.resolve_compute_dtype(saved).compute_dtype == "bfloat16"  # concrete: kept
