"""Fusion of the model's logits with match features, against NumPy and scikit-learn."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from longbert_tf import run_folder
from longbert_tf.data import dataset
from longbert_tf.framework import tf
from longbert_tf.lexical import fitting, fusion
from longbert_tf.lexical.term_matcher import MATCH_FEATURES
from longbert_tf.serving import coder


def numpy_inputs(logits, matches, train_notes):
    logit = np.clip(logits, -12, 12)
    notes = np.broadcast_to(train_notes.astype(np.float32), logit.shape)
    trained = (notes > 0).astype(np.float32)
    title, words = (matches[..., MATCH_FEATURES.index(name)] for name in ("title", "title_words"))
    # A term of the code found, affirmed or negated.
    found = np.zeros(logit.shape, bool)
    for name in ("title", "variant_precision", "evidence_precision"):
        for kind in (name, name.split("_")[0] + "_negated"):
            found |= matches[..., MATCH_FEATURES.index(kind)] > 0
    inputs = np.concatenate(
        [
            np.stack([logit, trained, np.log1p(notes)], -1),
            matches,
            np.stack([logit * title, trained * title, trained * words], -1),
        ],
        axis=-1,
    )
    return inputs, (logit > fusion.CANDIDATE_LOGIT) | found


def random_case(seed=0, batch=3, num_labels=40):
    rng = np.random.default_rng(seed)
    logits = rng.normal(-5, 6, [batch, num_labels]).astype(np.float32)
    matches = rng.uniform(0, 3, [batch, num_labels, len(MATCH_FEATURES)]).astype(np.float32)
    matches *= rng.uniform(size=matches.shape) < 0.05
    train_notes = rng.integers(0, 4, num_labels)
    return logits, matches, train_notes


def test_inputs_and_candidates_equal_numpy():
    logits, matches, train_notes = random_case()
    inputs, candidate = fusion.fusion_inputs(logits, matches, train_notes)
    expected_inputs, expected_candidate = numpy_inputs(logits, matches, train_notes)
    assert inputs.shape[-1] == len(fusion.FUSION_INPUTS)
    np.testing.assert_allclose(inputs.numpy(), expected_inputs, rtol=1e-6)
    np.testing.assert_array_equal(candidate.numpy(), expected_candidate)
    assert 0 < expected_candidate.mean() < 1


def test_fit_gives_scikit_learns_decisions_in_the_inputs_units():
    logits, matches, train_notes = random_case(seed=1, batch=30, num_labels=60)
    inputs, candidate = numpy_inputs(logits, matches, train_notes)
    rows = inputs[candidate]
    rng = np.random.default_rng(2)
    labels = rng.uniform(size=len(rows)) < 1 / (1 + np.exp(-(rows[:, 0] + 2 * rows[:, 3])))
    fitted = fusion.fit(rows, labels, train_notes)
    mean, scale = rows.mean(0), rows.std(0)
    scale[scale == 0] = 1
    reference = LogisticRegression(max_iter=5000).fit((rows - mean) / scale, labels)
    np.testing.assert_allclose(
        rows @ fitted.weights + fitted.bias,
        reference.decision_function((rows - mean) / scale),
        rtol=1e-4,
        atol=1e-4,
    )
    fused = fusion.Fusion.logits(fitted, logits, matches).numpy()
    np.testing.assert_allclose(
        fused[candidate], rows @ fitted.weights + fitted.bias, rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(fused[~candidate], logits[~candidate] + fusion.NON_CANDIDATE_SHIFT)


def test_per_note_weights_replace_the_fitted_ones():
    logits, matches, train_notes = random_case(seed=3)
    fitted = fusion.Fusion(np.ones(len(fusion.FUSION_INPUTS), np.float32), 0.5, train_notes)
    weights = np.random.default_rng(4).normal(size=[3, len(fusion.FUSION_INPUTS)])
    biases = np.array([0.0, 1.0, -1.0])
    fused = fitted.logits(logits, matches, weights.astype(np.float32), biases.astype(np.float32))
    inputs, candidate = numpy_inputs(logits, matches, train_notes)
    expected = np.einsum("bcd,bd->bc", inputs, weights) + biases[:, None]
    np.testing.assert_allclose(fused.numpy()[candidate], expected[candidate], rtol=1e-4, atol=1e-4)


def test_fusion_round_trips_and_refuses_other_inputs(tmp_path):
    fitted = fusion.Fusion(
        np.arange(len(fusion.FUSION_INPUTS), dtype=np.float32),
        -1.5,
        np.array([0, 3, 1]),
        threshold=0.42,
    )
    fitted.save(str(tmp_path / "fusion.json"), note="kept")
    loaded = fusion.Fusion.load(str(tmp_path / "fusion.json"))
    np.testing.assert_array_equal(loaded.weights, fitted.weights)
    assert (loaded.bias, loaded.threshold, loaded.train_notes.tolist()) == (-1.5, 0.42, [0, 3, 1])
    (tmp_path / "old.json").write_text('{"inputs": ["logit"]}')
    with pytest.raises(ValueError, match="old.json.*experiments.fuse"):
        fusion.Fusion.load(str(tmp_path / "old.json"))


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="all of one class"):
        fusion.fit(np.ones([4, len(fusion.FUSION_INPUTS)]), np.zeros(4, bool), np.zeros(3))


def test_matched_notes_follow_the_runs_order_and_refuse_other_notes(tmp_path):
    def notes(ids, texts):
        return pd.DataFrame(
            dict(note_id=ids, subject_id=ids, text=texts, codes=[["A01"]] * len(ids))
        )

    run_dir, match_dir, other_dir = (str(tmp_path / name) for name in ("en", "es", "other"))
    english = notes(["n1", "n2", "n3"], ["fever", "cough", "pain"])
    dataset.write_dataset(run_dir, dict(train=english), ["A01"])
    spanish = notes(["n3", "n1", "n2"], ["dolor", "fiebre", "tos"])
    dataset.write_dataset(match_dir, dict(train=spanish), ["A01"])
    matched = fitting.matched_notes(match_dir, run_dir, "train")
    assert list(matched.note_id) == ["n1", "n2", "n3"]
    assert list(matched.text) == ["fiebre", "tos", "dolor"]
    dataset.write_dataset(
        other_dir, dict(train=notes(["n1", "n2", "n4"], ["a", "b", "c"])), ["A01"]
    )
    with pytest.raises(ValueError, match=r"other/train.jsonl.gz and .*en/train.jsonl.gz .*'n3'"):
        fitting.matched_notes(other_dir, run_dir, "train")


@pytest.mark.slow  # fits and exports the shared run's fusion
def test_a_fusion_matching_a_copy_of_the_notes_fits_alike_and_serves_both_texts(exports):
    # The run's own notes in another order: matched by note id, they fit the same fusion.
    both = tf.saved_model.load(exports.translation_text())
    one = tf.saved_model.load(exports.fused_text())
    fused_file = os.path.join(run_folder.FUSION_DIR, run_folder.FUSION_FILE)
    fitted, expected = (
        json.load(open(os.path.join(exports.root, run, fused_file)))
        for run in ("translation_run", "fused_run")
    )
    np.testing.assert_allclose(fitted["weights"], expected["weights"], rtol=1e-5, atol=1e-6)
    assert fitted["dev"]["micro_f1"] == pytest.approx(expected["dev"]["micro_f1"])
    assert fitted["match_data_dir"] == os.path.join(exports.root, "reordered")
    model_dir = os.path.join(exports.root, "translation_run")
    with pytest.raises(ValueError, match="serve it as a TranslationCoder"):
        coder.TextCoder(coder.load_trained(model_dir, "float32"))
    # Its export takes the note and the text the model reads: given the same, it serves what
    # the fusion of the run's own notes serves.
    texts = tf.constant(list(dataset.read_notes(exports.config.dataset_dir, "dev").text[:6]))
    served = both.signatures["serving_default"](text=texts, translation=texts)
    expected = one.signatures["serving_default"](text=texts)
    assert served.keys() == expected.keys()
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], rtol=1e-5)
    for name in ("codes", "match_start", "evidence_start", "evidence_end"):
        np.testing.assert_array_equal(served[name], expected[name], err_msg=name)
