"""Serving exports: raw text and token ids, saved_model_cli, input limits, and the predict CLI."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from longbert_tf import configs
from longbert_tf.data import dataset, descriptions, synthetic, tokenization
from longbert_tf.framework import tf
from longbert_tf.serving import coder, export
from longbert_tf.training import loop
from longbert_tf.training.experiment import build_experiment
from tests.conftest import predict_json
from tests.dtypes import tolerance

pytestmark = pytest.mark.slow  # trains and exports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Short notes, few codes: a tiny encoder learns where the evidence is within 300 steps.
EASY = synthetic.SyntheticConfig(
    num_codes=15,
    num_train=240,
    num_dev=30,
    num_test=30,
    median_tokens=120,
    length_sigma=0.5,
    min_tokens=60,
    max_tokens=400,
    min_codes_per_note=1,
    max_codes_per_note=3,
    distractors_per_note=1.0,
    seed=5,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, compute_dtype):
    """A run trained in the suite's compute dtype (each in turn): its exports serve in it."""
    root = tmp_path_factory.mktemp(f"export_{compute_dtype}")
    synthetic.prepare(str(root / "data"), EASY)
    config = configs.ExperimentConfig(
        dataset="synthetic",
        data_dir=str(root / "data"),
        model_dir=str(root / "run"),
        encoder="random:L-1_H-32_A-2",
        segments=configs.SegmentConfig(256, 128),
        batch_size=8,
        learning_rate=3e-3,
        train_steps=300,
        eval_every=300,
        compute_dtype=compute_dtype,
    )
    results = loop.train_and_evaluate(config)
    assert results["test"]["micro_f1"] > 0.6  # it learned enough for evidence to mean something
    return root, config


@pytest.fixture(scope="module")
def text_export(trained):
    root, config = trained
    return export.export(config.model_dir, str(root / "export_text"), "text")


@pytest.fixture(scope="module")
def ids_export(trained):
    root, config = trained
    return export.export(config.model_dir, str(root / "export_ids"), "token_ids")


def in_memory_and_served(config, export_dir) -> tuple:
    """Test-split probabilities `[notes, codes]` of the best checkpoint in memory, and the
    text export's outputs on the same notes."""
    experiment = build_experiment(config)
    best = tf.train.latest_checkpoint(os.path.join(config.model_dir, "best"))
    tf.train.Checkpoint(model=experiment.model).restore(best).expect_partial()
    in_memory = np.zeros([experiment.inputs.splits["test"].num_notes, len(experiment.labels)])
    for features, _ in experiment.dataset("test"):
        probabilities = tf.sigmoid(experiment.model(features, training=False)).numpy()
        in_memory[features["note_index"].numpy()] = probabilities
    texts = dataset.read_notes(config.dataset_dir, "test").text.tolist()
    serving = tf.saved_model.load(export_dir).signatures["serving_default"]
    return in_memory, serving(text=tf.constant(texts))


def test_loaded_export_gives_the_in_memory_probabilities(trained, text_export):
    _, config = trained
    in_memory, outputs = in_memory_and_served(config, text_export)
    served = outputs["probabilities"].numpy()
    atol = tolerance(config.compute_dtype, float32=1e-5)
    np.testing.assert_allclose(served, in_memory, atol=atol)
    with open(os.path.join(config.model_dir, "metrics.json")) as metrics_file:
        threshold = json.load(metrics_file)["dev"]["threshold"]
    # The export's codes are its probabilities at the dev threshold, compared in float32 with
    # the smallest float32 >= it, so that it selects what the metrics counted...
    stored = tf.saved_model.load(text_export).threshold.numpy()
    assert stored >= threshold and np.nextafter(stored, np.float32(0)) < threshold
    selected = served >= threshold
    np.testing.assert_array_equal(outputs["num_codes"].numpy(), selected.sum(axis=1))
    labels = dataset.read_labels(config.dataset_dir)
    for row, count in enumerate(selected.sum(axis=1)):
        codes = [code.decode() for code in outputs["codes"].numpy()[row][:count]]
        assert set(codes) == {labels[i] for i in np.flatnonzero(selected[row])}
    # ... and the in-memory model's, wherever the two cannot fall on either side of it.
    decided = np.abs(in_memory - threshold) > atol
    assert decided.mean() > 0.9
    np.testing.assert_array_equal(selected[decided], (in_memory >= threshold)[decided])


def test_an_export_can_compute_in_another_dtype_than_the_run(trained, text_export, tmp_path):
    """A server without bfloat16 gets a float32 export of a bfloat16 run, and the reverse: the
    same variables, products in the dtype asked for."""
    _, config = trained
    other = "bfloat16" if config.compute_dtype == "float32" else "float32"
    other_export = export.export(config.model_dir, str(tmp_path / "other"), compute_dtype=other)
    for folder, dtype in ((text_export, config.compute_dtype), (other_export, other)):
        with open(os.path.join(folder, export.EXPORT_INFO)) as info:
            assert json.load(info)["compute_dtype"] == dtype
    texts = tf.constant(dataset.read_notes(config.dataset_dir, "test").text.tolist())
    served, other_served = (
        tf.saved_model.load(folder).signatures["serving_default"](text=texts)["probabilities"]
        for folder in (text_export, other_export)
    )
    difference = np.abs(served.numpy() - other_served.numpy())
    # bfloat16 products throughout the encoder, not float32's: close, and not equal.
    assert 1e-6 < difference.max() < 0.05, difference.max()


def test_metrics_map_is_the_per_note_average_precision_of_the_served_probabilities(
    trained, text_export
):
    """`map` in metrics.json, computed while counting test, against scikit-learn per note on the
    export's probabilities (every synthetic gold code is in the label space)."""
    _, config = trained
    _, outputs = in_memory_and_served(config, text_export)
    served = outputs["probabilities"].numpy()
    labels = dataset.read_labels(config.dataset_dir)
    gold = np.zeros_like(served, bool)
    for row, codes in enumerate(dataset.read_notes(config.dataset_dir, "test").codes):
        gold[row, [labels.index(code) for code in codes]] = True
    per_note = [
        sk_metrics.average_precision_score(gold[row], served[row])
        for row in np.flatnonzero(gold.any(axis=1))
    ]
    with open(os.path.join(config.model_dir, "metrics.json")) as metrics_file:
        streamed = json.load(metrics_file)["test"]["map"]
    assert streamed == pytest.approx(np.mean(per_note), abs=tolerance(config.compute_dtype, 1e-4))


def test_a_described_model_exports(trained, tmp_path):
    """Description-conditioned label attention, token normalisation and no [CLS]/[SEP]: the
    served probabilities are the in-memory ones."""
    _, config = trained
    described = dataclasses.replace(
        config,
        model_dir=str(tmp_path / "run"),
        train_steps=20,
        eval_every=20,
        label_init="descriptions",
        normalize_tokens=True,
        attend_special_tokens=False,
    )
    loop.train_and_evaluate(described)
    export_dir = export.export(described.model_dir, str(tmp_path / "export"), "text")
    in_memory, outputs = in_memory_and_served(described, export_dir)
    atol = tolerance(described.compute_dtype, float32=1e-5)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), in_memory, atol=atol)


def run_saved_model_cli(export_dir, input_exprs, import_tf_text):
    arguments = [
        "run", "--dir", export_dir, "--tag_set", "serve",
        "--signature_def", "serving_default", "--input_exprs", input_exprs,
    ]  # fmt: skip
    prelude = "import tensorflow_text; " if import_tf_text else ""
    code = (
        f"import sys; {prelude}from tensorflow.python.tools import saved_model_cli; "
        f"sys.argv = ['saved_model_cli'] + {arguments!r}; sys.exit(saved_model_cli.main())"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_saved_model_cli_serves_raw_text_with_tensorflow_text_ops(trained, text_export):
    _, config = trained
    note = dataset.read_notes(config.dataset_dir, "test").text[0]
    result = run_saved_model_cli(text_export, f"text=[{note!r}, '']", True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Result for output key codes" in result.stdout
    assert "Result for output key num_codes" in result.stdout
    counts = re.search(r"output key num_codes:\s*\[(\d+) (\d+)\]", result.stdout)
    serving = tf.saved_model.load(text_export).signatures["serving_default"]
    expected = serving(text=tf.constant([note, ""]))["num_codes"].numpy().tolist()
    assert counts and [int(counts.group(1)), int(counts.group(2))] == expected
    assert expected[0] >= 1  # the note has codes


def test_plain_saved_model_cli_serves_token_ids(trained, ids_export):
    result = run_saved_model_cli(
        ids_export,
        "token_ids=[[7, 8, 9, 0], [5, 6, 7, 8]];lengths=[3, 4]",
        False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Result for output key probabilities" in result.stdout
    loaded = tf.saved_model.load(ids_export)
    assert os.path.exists(loaded.vocab_file.asset_path.numpy().decode())


def test_token_id_export_matches_text_export(trained, text_export, ids_export):
    _, config = trained
    texts = dataset.read_notes(config.dataset_dir, "dev").text.tolist()[:4]
    text_serving = tf.saved_model.load(text_export).signatures["serving_default"]
    expected = text_serving(text=tf.constant(texts))["probabilities"].numpy()
    # A client tokenizes with the vocabulary the export carries.
    loaded = tf.saved_model.load(ids_export)
    vocab = tokenization.Vocab(
        loaded.vocab_file.asset_path.numpy().decode(), bool(loaded.do_lower_case.numpy())
    )
    ids = vocab.tokenize(texts)
    padded = np.zeros((len(ids), max(map(len, ids))), np.int32)
    for row, note_ids in enumerate(ids):
        padded[row, : len(note_ids)] = note_ids
    lengths = np.array([len(note_ids) for note_ids in ids], np.int32)
    outputs = loaded.signatures["serving_default"](token_ids=padded, lengths=lengths)
    atol = tolerance(config.compute_dtype, float32=1e-6)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=atol)


def test_input_limits_give_defined_results(trained, text_export):
    _, config = trained
    serving = tf.saved_model.load(text_export).signatures["serving_default"]
    megabyte = ("Diagnosed with pneumonia. " * 40_000)[:1_000_000]
    batch = [b"", megabyte.encode(), b"\xff\xfe\x80 invalid \xc3 bytes pneumonia.", b"short"]
    outputs = serving(text=tf.constant(batch))
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (4, EASY.num_codes) and np.isfinite(probabilities).all()
    assert outputs["codes"].shape[0] == 4 and (outputs["num_codes"].numpy() >= 0).all()
    # An empty note attends to nothing: it gets what the codes' biases (priors) give.
    biases = coder.load_trained(config.model_dir).model.label_attention.code_parameters()[2]
    np.testing.assert_allclose(probabilities[0], tf.sigmoid(biases).numpy(), atol=1e-6)
    # A long note is read up to seq_len: what follows its first 100 sentences (about 500 tokens
    # against 2 x 126 read) changes nothing, and a note shorter than that differs.
    head = "Diagnosed with pneumonia. " * 100
    np.testing.assert_allclose(
        serving(text=tf.constant([head]))["probabilities"].numpy()[0],
        probabilities[1],
        atol=tolerance(config.compute_dtype, float32=1e-5),
    )
    short = serving(text=tf.constant(["Diagnosed with pneumonia. " * 3]))["probabilities"]
    assert np.abs(short.numpy()[0] - probabilities[1]).max() > 1e-3
    # Each note alone gives what it gives inside the mixed batch.
    atol = tolerance(config.compute_dtype, float32=1e-5)
    for row, text in enumerate(batch):
        alone = serving(text=tf.constant([text]))["probabilities"].numpy()[0]
        np.testing.assert_allclose(alone, probabilities[row], atol=atol)


def test_predict_cli_points_at_the_planted_evidence(trained, text_export, tmp_path):
    _, config = trained
    notes = dataset.read_notes(config.dataset_dir, "test")
    paths = []
    for row in range(10):
        path = tmp_path / f"note{row}.txt"
        path.write_text(notes.text[row])
        paths.append(str(path))
    phrases = synthetic.make_code_table(EASY).phrases
    hits = checked = 0
    for row, prediction in enumerate(predict_json(text_export, paths)):
        for code in prediction["codes"]:
            if code["code"] not in notes.codes[row]:
                continue
            checked += 1
            assert code["description"] == phrases[code["code"]]
            start, end = code["evidence_spans"][0]
            text = notes.text[row]
            assert text.encode()[start:end].decode() == code["evidence"][0]
            # The strongest evidence token lies inside a mention of the code's phrase.
            phrase = re.escape(phrases[code["code"]])
            mentions = [m.span() for m in re.finditer(phrase, text, flags=re.IGNORECASE)]
            hits += any(
                len(text[:a].encode()) <= start and end <= len(text[:b].encode())
                for a, b in mentions
            )
    assert checked >= 8 and hits >= 0.8 * checked


def test_only_finished_longbert_runs_export(tmp_path, trained):
    _, config = trained
    with pytest.raises(FileNotFoundError, match="config.json"):
        coder.load_trained(str(tmp_path))
    with open(os.path.join(config.model_dir, "config.json")) as config_file:
        (tmp_path / "config.json").write_text(config_file.read())
    with pytest.raises(FileNotFoundError, match="finish training before exporting"):
        coder.load_trained(str(tmp_path))


def test_exports_are_versions_of_a_model_base_folder_and_delete_nothing(trained, tmp_path):
    _, config = trained
    base = tmp_path / "exports" / "coder"
    first = export.export(config.model_dir, str(base), "token_ids")
    second = export.export(config.model_dir, str(base), "token_ids")
    assert (first, second) == (str(base / "1"), str(base / "2"))
    assert export.latest_version(str(base)) == second
    assert export.latest_version(first) == first
    marker = base / "1" / "variables" / "kept"
    marker.write_text("")
    assert export.export(config.model_dir, str(base / "2"), "token_ids") == second  # replaced
    assert marker.exists()  # and no other version touched
    assert sorted(os.listdir(base)) == ["1", "2"]


def test_export_refuses_folders_it_did_not_write(tmp_path):
    """Checked before the run is even read: nothing is loaded, written or deleted."""
    run = tmp_path / "runs" / "synthetic_seq2048"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"holds checkpoints, config.json: it is not a model"):
        export.export("no_run_needed", str(run))
    other = tmp_path / "exports" / "other" / "1"
    other.mkdir(parents=True)
    (other / "saved_model.pb").write_text("someone else's model")
    with pytest.raises(FileExistsError, match=r"other/1 is not empty and not an export"):
        export.export("no_run_needed", str(other))
    assert sorted(os.listdir(run)) == ["checkpoints", "config.json"]
    assert (other / "saved_model.pb").read_text() == "someone else's model"
    with pytest.raises(FileNotFoundError, match=r"holds no SavedModel"):
        export.latest_version(str(run))


def test_token_id_lengths_are_clamped_to_the_ids_given(trained, ids_export):
    _, config = trained
    serving = tf.saved_model.load(ids_export).signatures["serving_default"]
    vocab = coder.load_trained(config.model_dir).vocab
    text = dataset.read_notes(config.dataset_dir, "test").text[0]
    ids = np.array(vocab.tokenize([text])[0], np.int32)
    padded = np.stack([ids, ids])

    def probabilities(lengths):
        outputs = serving(token_ids=padded, lengths=np.array(lengths, np.int32))
        return outputs["probabilities"].numpy()

    np.testing.assert_array_equal(probabilities([-5, 10**6]), probabilities([0, len(ids)]))
    assert not np.allclose(probabilities([0, 0])[0], probabilities([len(ids), 0])[0])


def test_the_export_carries_its_labels_and_their_descriptions(trained, text_export, ids_export):
    _, config = trained
    labels = dataset.read_labels(config.dataset_dir)
    dataset_descriptions = descriptions.read_descriptions(
        os.path.join(config.dataset_dir, descriptions.DESCRIPTIONS_FILE)
    )
    for export_dir in (text_export, ids_export):
        loaded = tf.saved_model.load(export_dir)
        with open(loaded.labels_file.asset_path.numpy().decode()) as labels_file:
            assert labels_file.read().split("\n")[:-1] == labels
        assert export.code_descriptions(loaded) == (dataset_descriptions, "")  # made-up codes


def test_predict_refuses_a_token_id_export(ids_export):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.predict", f"--export_dir={ids_export}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, input="a note",
    )  # fmt: skip
    assert result.returncode != 0
    assert "takes token ids: predict and review need a text-input export" in result.stderr
