"""`benchmarks/codiesp_best.py --final` on a small CodiEsp-layout release: a selection run
on the English translation fused with term matching on the Spanish notes, cross-validated
on dev; a final model trained on train and dev that carries its fusion and threshold,
scored on test; and an export of both texts and `experiments.predict` that give the codes
and metrics it printed."""

import json
import os

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from data_prep import codiesp
from longbert_tf import run_folder
from longbert_tf.data import dataset
from longbert_tf.evaluation import codiesp_scoring
from longbert_tf.framework import tf
from longbert_tf.review import server
from longbert_tf.serving import export
from longbert_tf.serving.suggestions import Suggester
from tests.conftest import predict_json
from tests.entry_points import InProcessStages, load, run_main
from tests.test_codiesp import write_release

pytestmark = pytest.mark.slow  # trains, fits and exports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Codes and the ways the generated Spanish notes word them: accents dropped, plurals, capitals.
PHRASES = {
    "I10": ("hipertensión esencial", "Hipertension esencial"),
    "E11.9": ("diabetes mellitus tipo 2", "diabetes tipo 2"),
    "J18.9": ("neumonía", "neumonías"),
    "N39.0": ("infección del tracto urinario", "infecciones del tracto urinario"),
    "D64.9": ("anemia", "ANEMIA"),
    "R50.9": ("fiebre", "fiebres"),
    "I48.91": ("fibrilación auricular", "fibrilacion auricular"),
    "R11.10": ("vómitos", "vómito"),
}
FILLER = [
    "El paciente ingresó para observación.",
    "Se solicitaron análisis de laboratorio.",
    "Fue dada de alta a los cinco días.",
    "La exploración física mostró un abdomen blando.",
]


def generated_cases(rng, count: int, prefix: str) -> dict:
    """`{case_id: (text, codes, mentions)}`: each code is mentioned (`(code, start, end)`, in
    characters) in 85% of its notes, and other codes appear negated ("Sin fiebre") in a
    quarter of the notes."""
    codes = sorted(PHRASES)
    cases = {}
    for case in range(count):
        chosen = list(rng.choice(codes, rng.integers(1, 4), replace=False))
        sentences = [(filler, None, False) for filler in rng.choice(FILLER, 2)]
        sentences += [("Presentaba ", code, True) for code in chosen if rng.uniform() < 0.85]
        others = sorted(set(codes) - set(chosen))
        sentences += [("Sin ", code, False) for code in others if rng.uniform() < 0.25]
        text, mentions = "", []
        for position in rng.permutation(len(sentences)):
            words, code, coded = sentences[position]
            text += "\n" * bool(text) + words
            if code:
                phrase = PHRASES[code][rng.integers(2)]
                if coded:
                    mentions.append((code, len(text), len(text) + len(phrase)))
                text += phrase + "."
        cases[f"{prefix}{case}"] = (text, chosen, mentions)
    return cases


def translated(text: str) -> str:
    """The release's "English translation" of a generated note: the same words, moved."""
    return TRANSLATION_HEADER + text


TRANSLATION_HEADER = "Machine translation.\n"


def write_spanish_release(root: str, splits: dict) -> None:
    """A CodiEsp-layout release of `generated_cases`: the Spanish texts and their
    `translated` English, the D files and the X files' diagnosis lines."""
    write_release(
        root,
        {
            split: {c: (translated(text), codes) for c, (text, codes, _) in cases.items()}
            for split, cases in splits.items()
        },
    )
    for split, cases in splits.items():
        os.makedirs(f"{root}/{split}/text_files")
        lines = []
        for case_id, (text, _, mentions) in cases.items():
            with open(f"{root}/{split}/text_files/{case_id}.txt", "w", encoding="utf-8") as file:
                file.write(text)
            lines += [
                f"{case_id}\tDIAGNOSTICO\t{code.lower()}\t{text[start:end]}\t{start} {end}\n"
                for code, start, end in mentions
            ]
        with open(f"{root}/{split}/{split}X.tsv", "w", encoding="utf-8") as evidence_file:
            evidence_file.writelines(lines)


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    rng = np.random.default_rng(0)
    splits = {
        split: generated_cases(rng, count, split)
        for split, count in (("train", 60), ("dev", 40), ("test", 30))
    }
    write_spanish_release(str(root / "release"), splits)
    command = load("benchmarks.codiesp_best")
    with pytest.MonkeyPatch.context() as patch:  # its stages run in this process too
        patch.setattr(command, "subprocess", InProcessStages("benchmarks.codiesp_best"))
        result = run_main(
            "benchmarks.codiesp_best",
            f"--codiesp_dir={root / 'release'}",
            f"--work_dir={root / 'work'}",
            f"--export_dir={root / 'export'}",
            "--final",
            "--language=es",
            "--folds=2",  # each fold's dictionary is mined and traced anew
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
        str(root / "work" / run)
        for run in ("run_train_es_translation", "run_train_es_translation_final")
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
    return root, selection_dir, model_dir, results, export_dir, result.stdout


def test_fusion_beats_the_model_alone_on_dev_by_cross_validation(fused):
    _, selection_dir, *_ = fused
    with open(os.path.join(selection_dir, "metrics.json")) as metrics_file:
        alone = json.load(metrics_file)["dev"]
    with open(os.path.join(selection_dir, "fusion", "fusion.json")) as fusion_file:
        results = json.load(fusion_file)
    assert results["folds"] == 2
    assert results["dev"]["micro_f1"] > alone["micro_f1"] + 0.1
    assert results["dev"]["map"] > alone["map"]
    assert 0 < results["threshold"] < 1
    # The English code book does not match Spanish notes: the annotators' mentions do.
    assert results["dictionary"]["dev"]["micro_f1"] > 0.7
    assert results["dictionary"]["dev"]["micro_f1"] > alone["micro_f1"] + 0.1


def test_the_run_files_score_by_the_official_rules_as_the_metrics(fused):
    root, selection_dir, model_dir, _, _, printed = fused
    valid_codes = {code.lower() for code in codiesp.icd10cm_space()}
    for run_dir, split in ((selection_dir, "dev"), (model_dir, "test")):
        with open(os.path.join(run_dir, "fusion", "fusion.json")) as fusion_file:
            metrics = json.load(fusion_file)[split]
        run = codiesp_scoring.read_run(
            os.path.join(run_dir, "fusion", "codiesp", f"{split}D_run.tsv")
        )
        gold = codiesp_scoring.read_gold(os.path.join(root, "release", split, f"{split}D.tsv"))
        assert sorted(run) == sorted(gold)  # every case, ranked over the whole label space
        assert {len(codes) for codes in run.values()} == {8}
        assert codiesp_scoring.mean_average_precision(gold, run, valid_codes) == pytest.approx(
            metrics["map"], abs=1e-5
        )
        (line,) = [line for line in printed.splitlines() if line.startswith(f"{split} (official")]
        assert f"micro F1 {metrics['micro_f1']:.4f}" in line
        assert f"P {metrics['micro_precision']:.3f}, R {metrics['micro_recall']:.3f}" in line


def test_the_final_model_trains_on_dev_with_the_selections_fusion(fused):
    root, selection_dir, model_dir, results, *_ = fused
    selection = json.loads(open(os.path.join(selection_dir, "fusion", "fusion.json")).read())
    final_data = os.path.join(root, "work", "data_train_en_final", "codiesp_dx")
    assert run_folder.saved_config(model_dir).dataset_dir == final_data  # the translation
    assert selection["match_data_dir"] == os.path.join(root, "work", "data_train_es", "codiesp_dx")
    assert results["match_data_dir"] == final_data.replace("_en_", "_es_")
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
    root, _, model_dir, results, export_dir, _ = fused
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    notes = dataset.read_notes(os.path.join(root, "work", "data_train_es", "codiesp_dx"), "test")
    labels = dataset.read_labels(model_dir)
    outputs = serve(
        text=tf.constant(list(notes.text)),
        translation=tf.constant([translated(text) for text in notes.text]),
    )
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
    _, _, model_dir, *_ = fused
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


def test_predict_and_the_review_page_show_the_spanish_evidence(fused, tmp_path):
    """The Spanish notes' codes, as predict and the review page's API give them, with the
    matched evidence on the Spanish words as the note writes them, and the attention's in
    the translation the model read."""
    root, _, _, _, export_dir, _ = fused
    notes = dataset.read_notes(os.path.join(root, "work", "data_train_es", "codiesp_dx"), "test")
    english = [translated(text) for text in notes.text[:8]]
    (tmp_path / "en").mkdir()
    paths = []
    for row in range(8):
        (tmp_path / f"note{row}.txt").write_text(notes.text[row], encoding="utf-8")
        (tmp_path / "en" / f"note{row}.txt").write_text(english[row], encoding="utf-8")
        paths.append(str(tmp_path / f"note{row}.txt"))
    suggester = Suggester(export_dir)
    assert suggester.reads_translation
    with pytest.raises(ValueError, match="reads each note's translation too"):
        suggester.suggest(list(notes.text[:8]))
    reviewer = server.Reviewer(
        suggester,
        str(tmp_path / "reviews.jsonl"),
        str(tmp_path),
        translations_dir=str(tmp_path / "en"),
    )
    assert reviewer.note("note0.txt") == dict(
        id="note0.txt", text=notes.text[0], translation=english[0]
    )
    reviewed = reviewer.code(list(notes.text[:8]), english)
    predicted = predict_json(export_dir, paths, f"--translation_dir={tmp_path / 'en'}")
    checked = attended = 0
    for row, prediction in enumerate(predicted):
        page = server.note_for_api(reviewed[row])
        assert [code["code"] for code in page["codes"]] == [
            code["code"] for code in prediction["codes"]
        ]
        for code, shown in zip(prediction["codes"], page["codes"]):
            attention = [item for item in shown["evidence"] if item["source"] == "attention"]
            assert code["evidence_in"] == "translation" and len(attention) == len(code["evidence"])
            for item, words in zip(attention, code["evidence"]):
                assert item["within"] == "translation"
                assert english[row][item["start"] : item["end"]] == words
                attended += 1
            if not code["matched_term"]:
                continue
            checked += 1
            start, end = code["matched_span"]  # bytes of the UTF-8 text
            assert notes.text[row].encode()[start:end].decode() == code["matched_term"]
            assert f"[[{code['matched_term']}" in code["passage"]
            # The page's offsets are code points.
            term = [item for item in shown["evidence"] if item["source"] == "term"]
            assert notes.text[row][term[0]["start"] : term[0]["end"]] == code["matched_term"]
            if code["code"] in notes.codes[row]:
                assert code["matched_term"] in PHRASES[code["code"]]  # as the note writes it
    assert checked >= 8 and attended >= 8


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
