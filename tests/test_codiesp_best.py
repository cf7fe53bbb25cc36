"""`benchmarks/codiesp_best.py --final` on a small CodiEsp-layout release: a selection run
fused with term matching, cross-validated on dev; a final model trained on train and dev
that carries its fusion and threshold, scored on test; and an export and
`experiments.predict` that give the codes and metrics it printed."""

import json
import os

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from longbert_tf import run_folder
from longbert_tf.data import dataset
from longbert_tf.framework import tf
from longbert_tf.serving import export
from tests.conftest import predict_json
from tests.entry_points import InProcessStages, load, run_main
from tests.test_codiesp import write_release

pytestmark = pytest.mark.slow  # trains, fits and exports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Codes and how the generated notes word them (each phrase holds a code-book term's words).
PHRASES = {
    "I10": "essential hypertension",
    "E11.9": "diabetes mellitus type 2",
    "J18.9": "pneumonia",
    "N39.0": "urinary tract infection",
    "D64.9": "anemia",
    "R50.9": "fever",
    "I48.91": "atrial fibrillation",
    "R11.10": "vomiting",
}
FILLER = [
    "The patient was admitted for observation.",
    "Laboratory tests were requested on arrival.",
    "She was discharged after five days.",
    "Physical examination showed a soft abdomen.",
]


def generated_cases(rng, count: int, prefix: str) -> dict:
    """`{case_id: (text, codes)}`: each code is mentioned in 85% of its notes, and other codes
    appear negated ("no fever") in a quarter of the notes."""
    codes = sorted(PHRASES)
    cases = {}
    for case in range(count):
        chosen = list(rng.choice(codes, rng.integers(1, 4), replace=False))
        sentences = list(rng.choice(FILLER, 2))
        for code in chosen:
            if rng.uniform() < 0.85:
                sentences.append(f"She presented with {PHRASES[code]}.")
        for code in set(codes) - set(chosen):
            if rng.uniform() < 0.25:
                sentences.append(f"There was no {PHRASES[code]}.")
        order = rng.permutation(len(sentences))
        cases[f"{prefix}{case}"] = ("\n".join(sentences[i] for i in order), chosen)
    return cases


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    rng = np.random.default_rng(0)
    splits = {
        split: generated_cases(rng, count, split)
        for split, count in (("train", 60), ("dev", 40), ("test", 30))
    }
    write_release(str(root / "release"), splits)
    command = load("benchmarks.codiesp_best")
    with pytest.MonkeyPatch.context() as patch:  # its stages run in this process too
        patch.setattr(command, "subprocess", InProcessStages("benchmarks.codiesp_best"))
        result = run_main(
            "benchmarks.codiesp_best",
            f"--codiesp_dir={root / 'release'}",
            f"--work_dir={root / 'work'}",
            f"--export_dir={root / 'export'}",
            "--final",
            "--run_flag=--encoder=random:L-1_H-16_A-2",
            "--run_flag=--seq_len=128",
            "--run_flag=--segment_length=128",
            "--run_flag=--train_steps=10",
            "--run_flag=--eval_every=10",
            "--run_flag=--warmup_steps=2",
            "--run_flag=--compute_dtype=float32",
        )
    assert result.returncode == 0, result.stderr[-3000:]
    selection_dir, model_dir = (
        str(root / "work" / run) for run in ("run_train", "run_train_final")
    )
    with open(os.path.join(selection_dir, "fusion", "fusion.json")) as fusion_file:
        selection = json.load(fusion_file)
    with open(os.path.join(model_dir, "fusion", "fusion.json")) as fusion_file:
        results = json.load(fusion_file)
    for split, printed in (("dev", selection), ("test", results)):
        for name, key in (("micro F1", "micro_f1"), ("MAP", "map")):
            assert f"{split} {name}: {printed[split][key]:.4f}" in result.stdout
    assert "experiments.fuse: " in result.stdout  # the parts' minutes
    export_dir = export.latest_version(str(root / "export"))
    return root, selection_dir, model_dir, results, export_dir


def test_fusion_beats_the_model_alone_on_dev_by_cross_validation(fused):
    _, selection_dir, _, _, _ = fused
    with open(os.path.join(selection_dir, "metrics.json")) as metrics_file:
        alone = json.load(metrics_file)["dev"]
    with open(os.path.join(selection_dir, "fusion", "fusion.json")) as fusion_file:
        results = json.load(fusion_file)
    assert results["folds"] == 5
    assert results["dev"]["micro_f1"] > alone["micro_f1"] + 0.1
    assert results["dev"]["map"] > alone["map"]
    assert 0 < results["threshold"] < 1


def test_the_final_model_trains_on_dev_with_the_selections_fusion(fused):
    root, selection_dir, model_dir, results, _ = fused
    selection = json.loads(open(os.path.join(selection_dir, "fusion", "fusion.json")).read())
    final_data = os.path.join(root, "work", "data_train_final", "codiesp_dx")
    train = dataset.read_notes(final_data, "train")
    assert len(train) == 100 and set(dataset.read_notes(final_data, "dev").note_id) < set(
        train.note_id
    )
    best_step = json.loads(open(os.path.join(selection_dir, "metrics.json")).read())["best_step"]
    assert run_folder.saved_config(model_dir).train_steps == best_step
    for carried in ("weights", "bias", "threshold"):
        assert results[carried] == selection[carried]
    assert results["selection_dev"] == selection["dev"]
    labels = dataset.read_labels(model_dir)
    counts = {code: sum(code in codes for codes in train.codes) for code in labels}
    assert results["train_notes"] == [counts[code] for code in labels]  # dev's notes count


def test_the_export_gives_the_test_metrics_codiesp_best_printed(fused):
    root, _, model_dir, results, export_dir = fused
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    notes = dataset.read_notes(os.path.join(root, "work", "data_train", "codiesp_dx"), "test")
    labels = dataset.read_labels(model_dir)
    outputs = serve(text=tf.constant(list(notes.text)))
    probabilities = outputs["probabilities"].numpy()
    truth = np.array([[code in codes for code in labels] for codes in notes.codes])
    threshold = json.loads(open(os.path.join(model_dir, "fusion", "fusion.json")).read())[
        "threshold"
    ]
    predicted = probabilities >= np.float32(threshold)
    for row, count in enumerate(outputs["num_codes"].numpy()):
        returned = {code.decode() for code in outputs["codes"][row, :count].numpy()}
        assert returned == {labels[i] for i in np.flatnonzero(predicted[row])}
    # Every test code is in the space (the release's train has them all), so scikit-learn's
    # micro F1 over the label space is the evaluation's.
    assert all(code in labels for codes in notes.codes for code in codes)
    expected = sk_metrics.f1_score(truth, predicted, average="micro")
    assert results["test"]["micro_f1"] == pytest.approx(expected, abs=1e-6)
    per_note = [sk_metrics.average_precision_score(t, p) for t, p in zip(truth, probabilities)]
    assert results["test"]["map"] == pytest.approx(np.mean(per_note), abs=1e-4)


def test_a_fusion_fitted_on_another_checkpoint_is_not_served(fused, tmp_path):
    _, _, model_dir, _, _ = fused
    fusion_path = os.path.join(model_dir, "fusion", "fusion.json")
    saved = open(fusion_path).read()
    try:
        fitted = json.loads(saved)
        fitted["checkpoint"] = fitted["checkpoint"].replace("ckpt-", "ckpt-9")
        open(fusion_path, "w").write(json.dumps(fitted))
        with pytest.raises(ValueError, match="fusion.json was fitted on ckpt-9.*experiments.fuse"):
            export.export(model_dir, str(tmp_path / "export"), "text")
        assert not os.path.exists(tmp_path / "export" / "1")
        export.export(model_dir, str(tmp_path / "export"), "text", with_fusion=False)
    finally:
        open(fusion_path, "w").write(saved)


def test_predict_shows_the_matched_term(fused, tmp_path):
    root, _, _, _, export_dir = fused
    notes = dataset.read_notes(os.path.join(root, "work", "data_train", "codiesp_dx"), "test")
    paths = []
    for row in range(8):
        (tmp_path / f"note{row}.txt").write_text(notes.text[row])
        paths.append(str(tmp_path / f"note{row}.txt"))
    checked = 0
    for row, prediction in enumerate(predict_json(export_dir, paths)):
        for code in prediction["codes"]:
            if not code["matched_term"]:
                continue
            checked += 1
            start, end = code["matched_span"]
            assert notes.text[row][start:end] == code["matched_term"]
            assert f"[[{code['matched_term']}" in code["passage"]
            if code["code"] in notes.codes[row]:
                assert PHRASES[code["code"]] in code["matched_term"].lower()
    assert checked >= 8


def test_the_final_model_needs_a_fusion_to_carry(tmp_path):
    result = run_main(
        "benchmarks.codiesp_best",
        f"--codiesp_dir={tmp_path / 'release'}",
        f"--work_dir={tmp_path / 'work'}",
        "--nofusion",
    )
    assert result.returncode != 0
    assert "--final carries the fused selection run's threshold" in result.stderr
    assert "pass --nofinal with --nofusion" in result.stderr
    assert not os.path.exists(tmp_path / "work")  # refused before any work
