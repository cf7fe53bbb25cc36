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

from experiments.predict import evidence_passage
from longbert_tf.data import dataset, descriptions, synthetic, tokenization
from longbert_tf.framework import tf
from longbert_tf.serving import coder, export, suggestions
from longbert_tf.training import loop
from longbert_tf.training.experiment import build_experiment
from tests.conftest import predict_json
from tests.dtypes import bfloat16_logit_bound
from tests.entry_points import run_main
from tests.trained_run import ENCODER_LAYERS, TRAINED_SYNTHETIC

pytestmark = pytest.mark.slow  # trains and exports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(exports, compute_dtype):
    """The suite's trained run, its products in the suite's compute dtype (each in turn)."""
    return exports.run_config(compute_dtype)


@pytest.fixture(scope="module")
def text_export(exports, compute_dtype):
    return exports.text(compute_dtype)


@pytest.fixture(scope="module")
def ids_export(exports, compute_dtype):
    return exports.token_ids(compute_dtype)


def padded_ids(ids: list) -> tuple:
    """`(token_ids [notes, longest], lengths [notes])` of a token-id export's inputs."""
    token_ids = np.zeros((len(ids), max(1, *map(len, ids))), np.int32)
    for row, note_ids in enumerate(ids):
        token_ids[row, : len(note_ids)] = note_ids
    return token_ids, np.array([len(note_ids) for note_ids in ids], np.int32)


def float32_reference(model_dir: str, texts: list) -> tuple:
    """`(logits, bounds)` `[notes, codes]`: the run's float32 logits of `texts` in memory, and
    how far a bfloat16 computation of them may lie from those (`bfloat16_logit_bound`)."""
    trained = coder.load_trained(model_dir, "float32", with_fusion=False)
    # Invalid UTF-8 replaced as the export replaces it.
    texts = tf.strings.unicode_transcode(
        tf.constant(texts), "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    token_ids, lengths = padded_ids(trained.vocab.tokenize(list(texts.numpy())))
    features, _ = coder.Coder(trained)._segment_batch(token_ids, lengths)
    tokens, mask = trained.model.encode(features, training=False)
    queries, classifiers, _ = trained.model.label_attention.code_parameters()
    bounds = bfloat16_logit_bound(
        tokens.numpy(), mask.numpy(), queries.numpy(), classifiers.numpy(), ENCODER_LAYERS
    )
    return trained.model.label_attention(tokens, mask).numpy(), bounds


def assert_same_computation(config, texts: list, first, second, float32: float) -> None:
    """Two computations of `texts`' probabilities by the model of `config`, in its dtype:
    within `float32` of each other, or in bfloat16 each within the whole path's bound."""
    if config.compute_dtype == "float32":
        np.testing.assert_allclose(first, second, atol=float32)
    else:
        assert_within_the_bfloat16_bound(config.model_dir, texts, first, second)


def assert_within_the_bfloat16_bound(model_dir: str, texts: list, *computed) -> tuple:
    """Each of the bfloat16 probabilities `computed` `[notes, codes]` of `texts` lies where the
    float32 logits, moved by at most their bound, put it; returns `(low, high)`, the
    probability intervals `[notes, codes]` that every bfloat16 computation falls in."""
    logits, bounds = float32_reference(model_dir, texts)
    low, high = tf.sigmoid(logits - bounds).numpy(), tf.sigmoid(logits + bounds).numpy()
    for probabilities in computed:
        assert ((low - 1e-6 <= probabilities) & (probabilities <= high + 1e-6)).all()
    return low, high


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
    """float32: the same probabilities. bfloat16: the graph and the eager model round
    differently through every layer, so each is checked against the float32 logits within the
    whole path's bound, and codes are the same wherever their margin exceeds it."""
    config = trained
    in_memory, outputs = in_memory_and_served(config, text_export)
    served = outputs["probabilities"].numpy()
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
    if config.compute_dtype == "float32":
        np.testing.assert_allclose(served, in_memory, atol=1e-5)
        decided = np.abs(in_memory - threshold) > 1e-5
    else:
        texts = dataset.read_notes(config.dataset_dir, "test").text.tolist()
        low, high = assert_within_the_bfloat16_bound(config.model_dir, texts, served, in_memory)
        decided = (low >= threshold) | (high < threshold)
        # Codes whose intervals do not overlap keep their order.
        for row_low, row_high, row in zip(low, high, served):
            above = row_low[:, None] > row_high[None, :]
            assert (row[:, None] >= row[None, :])[above].all()
    # A worst-case bound leaves fewer codes decided (measured: 0.71 of them, bfloat16 emulated
    # on an AVX-512 Xeon), still most.
    assert decided.mean() > (0.9 if config.compute_dtype == "float32" else 0.5)
    np.testing.assert_array_equal(selected[decided], (in_memory >= threshold)[decided])


def test_an_export_can_compute_in_another_dtype_than_the_run(exports, trained_run):
    """A server without bfloat16 gets a float32 export of a bfloat16 run, and the reverse: the
    same variables, products in the dtype asked for."""
    folders = {dtype: exports.text(dtype) for dtype in ("float32", "bfloat16")}
    for dtype, folder in folders.items():
        with open(os.path.join(folder, export.EXPORT_INFO)) as info:
            assert json.load(info)["compute_dtype"] == dtype
    texts = dataset.read_notes(trained_run.dataset_dir, "test").text.tolist()
    served = {
        dtype: tf.saved_model.load(folder).signatures["serving_default"](text=tf.constant(texts))
        for dtype, folder in folders.items()
    }
    served = {dtype: outputs["probabilities"].numpy() for dtype, outputs in served.items()}
    # bfloat16 products throughout the encoder, not float32's: close, and not equal.
    assert np.abs(served["float32"] - served["bfloat16"]).max() > 1e-6
    assert_within_the_bfloat16_bound(trained_run.model_dir, texts, served["bfloat16"])


def test_metrics_map_is_the_per_note_average_precision_of_the_served_probabilities(
    trained_run, exports
):
    """`map` in metrics.json, computed while counting test, against scikit-learn per note on the
    probabilities of the export in the run's own dtype (every synthetic gold code is in the
    label space)."""
    config = trained_run
    _, outputs = in_memory_and_served(config, exports.text(config.compute_dtype))
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
    assert streamed == pytest.approx(np.mean(per_note), abs=1e-4)


@pytest.fixture(scope="module")
def described_run(trained_run, tmp_path_factory):
    """A run with description-conditioned label attention, token normalisation and no
    [CLS]/[SEP], trained 20 steps from the trained run's config (float32)."""
    described = dataclasses.replace(
        trained_run,
        model_dir=str(tmp_path_factory.mktemp("described") / "run"),
        train_steps=20,
        eval_every=20,
        label_init="descriptions",
        normalize_tokens=True,
        attend_special_tokens=False,
    )
    loop.train_and_evaluate(described)
    return described


def test_a_described_model_exports(described_run, compute_dtype, tmp_path):
    """The served probabilities are the in-memory ones (bfloat16: both within the bound)."""
    described = dataclasses.replace(described_run, compute_dtype=compute_dtype)
    export_dir = export.export(
        described.model_dir, str(tmp_path / "export"), "text", compute_dtype=compute_dtype
    )
    in_memory, outputs = in_memory_and_served(described, export_dir)
    texts = dataset.read_notes(described.dataset_dir, "test").text.tolist()
    assert_same_computation(
        described, texts, outputs["probabilities"].numpy(), in_memory, float32=1e-5
    )


def run_saved_model_cli(export_dir, input_exprs, import_tf_text):
    arguments = [
        "run",
        "--dir",
        export_dir,
        "--tag_set",
        "serve",
        "--signature_def",
        "serving_default",
        "--input_exprs",
        input_exprs,
    ]
    prelude = "import tensorflow_text; " if import_tf_text else ""
    code = (
        f"import sys; {prelude}from tensorflow.python.tools import saved_model_cli; "
        f"sys.argv = ['saved_model_cli'] + {arguments!r}; sys.exit(saved_model_cli.main())"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_saved_model_cli_serves_raw_text_with_tensorflow_text_ops(trained, text_export):
    config = trained
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
    config = trained
    texts = dataset.read_notes(config.dataset_dir, "dev").text.tolist()[:4]
    text_serving = tf.saved_model.load(text_export).signatures["serving_default"]
    expected = text_serving(text=tf.constant(texts))["probabilities"].numpy()
    # A client tokenizes with the vocabulary the export carries.
    loaded = tf.saved_model.load(ids_export)
    vocab = tokenization.Vocab(
        loaded.vocab_file.asset_path.numpy().decode(), bool(loaded.do_lower_case.numpy())
    )
    padded, lengths = padded_ids(vocab.tokenize(texts))
    outputs = loaded.signatures["serving_default"](token_ids=padded, lengths=lengths)
    assert_same_computation(config, texts, outputs["probabilities"].numpy(), expected, float32=1e-6)


def test_input_limits_give_defined_results(trained, text_export):
    config = trained
    serving = tf.saved_model.load(text_export).signatures["serving_default"]
    megabyte = ("Diagnosed with pneumonia. " * 40_000)[:1_000_000]
    batch = [b"", megabyte.encode(), b"\xff\xfe\x80 invalid \xc3 bytes pneumonia.", b"short"]
    outputs = serving(text=tf.constant(batch))
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (4, TRAINED_SYNTHETIC.num_codes)
    assert np.isfinite(probabilities).all()
    assert outputs["codes"].shape[0] == 4 and (outputs["num_codes"].numpy() >= 0).all()
    # An empty note attends to nothing: it gets what the codes' biases (priors) give.
    biases = coder.load_trained(config.model_dir).model.label_attention.code_parameters()[2]
    np.testing.assert_allclose(probabilities[0], tf.sigmoid(biases).numpy(), atol=1e-6)
    # A long note is read up to seq_len: what follows its first 100 sentences (about 500 tokens
    # against 2 x 126 read) changes nothing, and a note shorter than that differs.
    head = "Diagnosed with pneumonia. " * 100
    served_head = serving(text=tf.constant([head]))["probabilities"].numpy()
    assert_same_computation(config, [head], served_head, probabilities[1:2], float32=1e-5)
    short = serving(text=tf.constant(["Diagnosed with pneumonia. " * 3]))["probabilities"]
    assert np.abs(short.numpy()[0] - probabilities[1]).max() > 1e-3
    # Each note alone gives what it gives inside the mixed batch.
    alone = [serving(text=tf.constant([text]))["probabilities"].numpy()[0] for text in batch]
    assert_same_computation(config, batch, np.stack(alone), probabilities, float32=1e-5)


def test_predict_cli_points_at_the_planted_evidence(trained, text_export, tmp_path):
    config = trained
    notes = dataset.read_notes(config.dataset_dir, "test")
    paths = []
    for row in range(10):
        path = tmp_path / f"note{row}.txt"
        path.write_text(notes.text[row])
        paths.append(str(path))
    phrases = synthetic.make_code_table(TRAINED_SYNTHETIC).phrases
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


def test_suggestions_leave_the_loaded_exports_threshold_alone(exports, trained_run):
    """A `Suggester` asks `codes_from` for the codes down to its near misses: the export it
    loaded keeps the stored threshold, and its serving_default still returns exactly the codes
    reaching it."""
    export_dir = exports.text("float32")
    stored = tf.saved_model.load(export_dir)  # read apart from the suggester's
    threshold = stored.threshold.numpy()
    labels = [code.decode() for code in stored.labels.numpy()]
    texts = dataset.read_notes(trained_run.dataset_dir, "test").text.tolist()
    probabilities = stored.signatures["serving_default"](text=tf.constant(texts))["probabilities"]
    suggester = suggestions.Suggester(export_dir)
    found = suggester.suggest(texts)
    loaded = suggester._loaded  # what a caller of the suggester would read or save again
    assert loaded.threshold.numpy() == threshold
    served = loaded.signatures["serving_default"](text=tf.constant(texts))
    near_misses_seen = 0
    for row, (probability, note) in enumerate(zip(probabilities.numpy(), found)):
        order = np.argsort(-probability, kind="stable")
        above = [labels[i] for i in order if probability[i] >= threshold]
        codes = served["codes"][row, : served["num_codes"][row]].numpy()
        assert [code.decode() for code in codes] == above
        assert [suggestion.code for suggestion in note.codes] == above
        below = [
            labels[i]
            for i in order
            if threshold * suggestions.NEAR_MISS_FRACTION <= probability[i] < threshold
        ][: suggestions.MAX_NEAR_MISSES]
        assert [suggestion.code for suggestion in note.near_misses] == below
        near_misses_seen += len(below)
    assert near_misses_seen > 0


def test_suggestions_ask_to_export_again_an_export_without_codes_from(exports, tmp_path):
    # As exports were made before text exports had codes_from: serving_default only.
    loaded = tf.saved_model.load(exports.text("float32"))
    old = str(tmp_path / "old" / "1")
    tf.saved_model.save(
        loaded, old, signatures={"serving_default": loaded.signatures["serving_default"]}
    )
    assert list(tf.saved_model.load(old).signatures) == ["serving_default"]
    with pytest.raises(ValueError, match=r"old/1 was exported by an older .* export the run again"):
        suggestions.Suggester(str(tmp_path / "old"))


def test_only_finished_longbert_runs_export(tmp_path, trained_run):
    config = trained_run
    with pytest.raises(FileNotFoundError, match="config.json"):
        coder.load_trained(str(tmp_path))
    with open(os.path.join(config.model_dir, "config.json")) as config_file:
        (tmp_path / "config.json").write_text(config_file.read())
    with pytest.raises(FileNotFoundError, match="finish training before exporting"):
        coder.load_trained(str(tmp_path))


def test_exports_are_versions_of_a_model_base_folder_and_delete_nothing(trained_run, tmp_path):
    config = trained_run
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
    config = trained
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
    config = trained
    labels = dataset.read_labels(config.dataset_dir)
    dataset_descriptions = descriptions.read_descriptions(
        os.path.join(config.dataset_dir, descriptions.DESCRIPTIONS_FILE)
    )
    for export_dir in (text_export, ids_export):
        loaded = tf.saved_model.load(export_dir)
        with open(loaded.labels_file.asset_path.numpy().decode()) as labels_file:
            assert labels_file.read().split("\n")[:-1] == labels
        assert export.code_descriptions(loaded) == (dataset_descriptions, "")  # made-up codes


def test_predict_refuses_a_token_id_export(ids_export, tmp_path):
    (tmp_path / "note.txt").write_text("a note")
    result = run_main(
        "experiments.predict", f"--export_dir={ids_export}", str(tmp_path / "note.txt")
    )
    assert result.returncode != 0
    assert "takes token ids: predict and review need a text-input export" in result.stderr


def test_the_passage_marks_a_matched_term_over_the_tokens_inside_it():
    text = b"Presentaba diabetes tipo 2. Sin fiebre."
    # The matched term, then attention tokens inside it and after it, strongest first.
    spans = [(0, 26), (0, 10), (25, 26), (32, 38)]
    assert evidence_passage(text, spans) == "[[Presentaba diabetes tipo 2]]. Sin [[fiebre]]."
