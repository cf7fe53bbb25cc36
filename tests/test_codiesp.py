"""data_prep.codiesp on the real CodiEsp data (../shared/data/codiesp) and on generated layouts."""

import json
import os
import re

import numpy as np
import pytest

from data_prep import codiesp
from longbert_tf.data import dataset, descriptions
from tests.entry_points import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODIESP_DIR = os.path.join(ROOT, "..", "shared", "data", "codiesp")
needs_codiesp = pytest.mark.skipif(
    not os.path.isdir(CODIESP_DIR), reason=f"CodiEsp data is not at {CODIESP_DIR}"
)


def write_release(root, splits):
    """A CodiEsp-layout folder: splits maps split -> {case_id: (text, [codes])}."""
    for split, cases in splits.items():
        os.makedirs(f"{root}/{split}/text_files_en")
        with open(f"{root}/{split}/{split}D.tsv", "w") as labels_file:
            for case_id, (text, codes) in cases.items():
                (open(f"{root}/{split}/text_files_en/{case_id}.txt", "w")).write(text)
                labels_file.writelines(f"{case_id}\t{code}\n" for code in codes)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    if not os.path.isdir(CODIESP_DIR):
        pytest.skip(f"CodiEsp data is not at {CODIESP_DIR}")
    out_dir = tmp_path_factory.mktemp("codiesp")
    return str(out_dir), codiesp.prepare(CODIESP_DIR, str(out_dir))


@needs_codiesp
def test_real_release_train_and_dev(real):
    out_dir, result = real
    dataset_dir = f"{out_dir}/codiesp_dx"
    counts = {split: result["splits"][split]["notes"] for split in dataset.SPLITS}
    assert counts["dev"] == 250 and counts["train"] + counts["test"] == 500
    assert 70 <= counts["test"] <= 130  # a fifth of train, held out by hash
    train = dataset.read_notes(dataset_dir, "train")
    test = dataset.read_notes(dataset_dir, "test")
    assert not set(train.note_id) & set(test.note_id)
    notes = {row.note_id: row for notes in (train, test) for row in notes.itertuples()}
    case = notes["S0004-06142005000700014-1"]
    assert {"N44.8", "Z20.818", "R60.9"} <= set(case.codes)
    assert case.text.startswith("We describe the case of a 37-year-old man")
    labels = dataset.read_labels(dataset_dir)
    assert all(code == code.upper() for code in labels)
    train_codes = {code for notes in (train, test) for codes in notes.codes for code in codes}
    assert set(labels) == train_codes  # the release's train/ codes, its held-out fifth's too
    assert result["preparation"]["outside_label_space"]["dev"].startswith("477 of 2,677 ")
    assert result["preparation"]["test"].startswith("20% of release train/")
    titles = descriptions.code_descriptions(dataset_dir, labels)
    assert titles[labels.index("N44.8")] == "Other noninflammatory disorders of the testis"
    assert sum(map(bool, titles)) > 0.9 * len(labels)  # the rest are not ICD-10-CM codes


@needs_codiesp
@pytest.mark.slow
def test_experiment_trains_on_prepared_codiesp(real, tmp_path):
    out_dir, _ = real
    result = run_main(
        "experiments.run",
        "--dataset=codiesp_dx",
        f"--data_dir={out_dir}",
        f"--model_dir={tmp_path}/run",
        "--encoder=random:L-1_H-16_A-2",
        "--seq_len=256",
        "--segment_length=128",
        "--train_steps=4",
        "--eval_every=4",
        "--batch_size=4",
        "--warmup_steps=2",
        "--compute_dtype=float32",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| LongBERT | 256 |" in result.stdout
    results = json.loads((tmp_path / "run/metrics.json").read_text())
    dev = results["dev"]
    assert dev["unseen_code_pairs"] > 300  # dev pairs whose code has no training note
    # The held-out fifth's codes are in the space without a training note: their offset is fitted.
    assert "codes without a training note: logits moved by" in result.stderr
    assert np.isfinite(results["untrained_offset"])
    assert 0 <= dev["unseen_code_recall"] <= 1


def test_release_with_all_splits_keeps_them(tmp_path):
    write_release(
        tmp_path / "release",
        {
            "train": {"a": ("Chest pain.", ["i20.9", "r07.9"]), "b": ("Nothing coded.", [])},
            "dev": {"c": ("Fever.", ["r50.9", "r50.9"])},
            "test": {"d": ("Cough.", ["r05"])},
        },
    )
    result = codiesp.prepare(str(tmp_path / "release"), str(tmp_path / "out"), "train")
    dataset_dir = str(tmp_path / "out/codiesp_dx")
    train = dataset.read_notes(dataset_dir, "train")
    assert train.note_id.tolist() == ["a", "b"] and train.codes.tolist() == [["I20.9", "R07.9"], []]
    assert dataset.read_notes(dataset_dir, "dev").codes.tolist() == [["R50.9"]]
    assert dataset.read_notes(dataset_dir, "test").text.tolist() == ["Cough."]
    assert dataset.read_labels(dataset_dir) == ["I20.9", "R07.9"]  # train's codes alone
    assert result["preparation"]["skipped"] == {"dev: duplicate code of a case": 1}
    outside = result["preparation"]["outside_label_space"]
    assert outside == {"dev": "1 of 1 (note, code) pairs", "test": "1 of 1 (note, code) pairs"}


def test_dev_trains_joins_dev_to_train_and_to_the_label_space(tmp_path):
    write_release(
        tmp_path / "release",
        {
            "train": {"a": ("Chest pain.", ["i20.9"]), "b": ("Cough.", ["r05"])},
            "dev": {"c": ("Fever.", ["r50.9"])},
            "test": {"d": ("Fever and cough.", ["r50.9", "r05"])},
        },
    )
    result = codiesp.prepare(
        str(tmp_path / "release"), str(tmp_path / "out"), "train", dev_trains=True
    )
    dataset_dir = str(tmp_path / "out/codiesp_dx")
    assert dataset.read_notes(dataset_dir, "train").note_id.tolist() == ["a", "b", "c"]
    assert dataset.read_notes(dataset_dir, "dev").note_id.tolist() == ["c"]
    assert dataset.read_notes(dataset_dir, "test").note_id.tolist() == ["d"]
    assert dataset.read_labels(dataset_dir) == ["I20.9", "R05", "R50.9"]  # dev's code, not test's
    assert result["preparation"]["train"] == "release train/ and dev (dev trains: not held out)"
    assert result["preparation"]["label_space"] == "the 3 codes of release train/ and dev/"


@pytest.mark.parametrize("label_space", codiesp.LABEL_SPACES)
def test_the_label_space_is_the_same_with_and_without_test(tmp_path, label_space):
    cases = {f"c{i:03d}": (f"Note {i}.", [["r05", "i20.9", "zz9.9"][i % 3]]) for i in range(40)}
    splits = {"train": cases, "dev": {"d": ("Fever.", ["r50.9"])}}
    write_release(tmp_path / "without_test", splits)
    write_release(tmp_path / "with_test", {**splits, "test": {"t": ("Cough.", ["r07.9"])}})
    labels = []
    for name in ("without_test", "with_test"):
        codiesp.prepare(str(tmp_path / name), str(tmp_path / f"out_{name}"), label_space)
        labels.append((tmp_path / f"out_{name}/codiesp_dx/labels.txt").read_text())
    assert labels[0] == labels[1]
    assert ("R07.9" in labels[0].split()) == (label_space == "icd10cm")  # never from test/


def test_the_icd10cm_space_holds_what_codiesp_annotates(tmp_path):
    space = set(codiesp.icd10cm_space())
    assert {"R05", "R51", "N44.8", "S39.94X", "T81.4", "A00"} <= space  # categories too
    assert not {"S39.94XA", "A00-A09", "1"} & space  # no 7th characters, blocks or chapters
    write_release(tmp_path / "release", {"train": {"a": ("Pain.", ["zz9.9", "s39.94xa"])}})
    result = codiesp.prepare(str(tmp_path / "release"), str(tmp_path / "out"), "icd10cm")
    labels = dataset.read_labels(str(tmp_path / "out/codiesp_dx"))
    assert set(labels) == space | {"ZZ9.9", "S39.94XA"}
    assert result["preparation"]["label_space"].endswith("outside them: S39.94XA, ZZ9.9")
    titles = descriptions.code_descriptions(str(tmp_path / "out/codiesp_dx"), labels)
    assert titles[labels.index("S39.94X")] == descriptions.icd10cm_titles(["S39.94"])["S39.94"]


def test_train_only_release_holds_out_dev_and_test(tmp_path):
    cases = {f"case-{i:03d}": (f"Note {i}.", [f"a{i % 7:02d}.1"]) for i in range(200)}
    write_release(tmp_path / "release", {"train": cases})
    result = codiesp.prepare(str(tmp_path / "release"), str(tmp_path / "out"))
    sizes = [result["splits"][split]["notes"] for split in dataset.SPLITS]
    assert sum(sizes) == 200 and 20 <= sizes[1] <= 60 and 20 <= sizes[2] <= 60


def test_malformed_label_line_is_named(tmp_path):
    write_release(tmp_path / "release", {"train": {"a": ("x", ["r05"])}})
    with open(tmp_path / "release/train/trainD.tsv", "a") as labels_file:
        labels_file.write("only-one-field\n")
    with pytest.raises(ValueError, match=r"trainD.tsv, line 2: expected 'case-id<TAB>code'"):
        codiesp.prepare(str(tmp_path / "release"), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="not a CodiEsp release folder"):
        codiesp.prepare(str(tmp_path), str(tmp_path / "out"))


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    write_release(tmp_path / "release", {"train": {"a": ("x", ["r05"]), "b": ("y", ["r06"])}})
    (tmp_path / "release/train/text_files_en/b.txt").write_bytes(b"Fiebre de 39 \xbaC.")
    with pytest.raises(ValueError, match=r"text_files_en/b.txt: not UTF-8 at byte 13"):
        codiesp.prepare(str(tmp_path / "release"), str(tmp_path / "out"))
    (tmp_path / "release/train/text_files_en/b.txt").write_text("y")
    with open(tmp_path / "release/train/trainD.tsv", "ab") as labels_file:
        labels_file.write(b"c\tr07\xff\n")
    with pytest.raises(ValueError, match=r"trainD.tsv: not UTF-8 at byte 17"):
        codiesp.prepare(str(tmp_path / "release"), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out/codiesp_dx")  # nothing half-written


SPANISH = "\n  Varón de 37 años con teste derecho aumentado (20%) y fiebre.\n"
# Each line: case, type, code, the quoted words, offsets into SPANISH as written (before the
# three leading characters are stripped): an exact fragment, a fragment whose edges hold
# punctuation the quote leaves out, two fragments with an empty one between, a procedure.
EVIDENCE_LINES = [
    "a\tDIAGNOSTICO\tn44.8\tteste derecho aumentado\t24 47",
    "a\tDIAGNOSTICO\tr50.9\tfiebre\t56 63",
    "a\tDIAGNOSTICO\tn44.8\tteste  aumentado\t24 29;40 40;38 47",
    "a\tPROCEDIMIENTO\tbw03zzz\tRx\t0 2",
]


def write_spanish(root, evidence_lines) -> None:
    """A train-only release with SPANISH as case `a` (and its English), and its X file."""
    write_release(root, {"train": {"a": ("Male, 37.", ["n44.8", "r50.9"])}})
    os.makedirs(f"{root}/train/text_files")
    with open(f"{root}/train/text_files/a.txt", "w", encoding="utf-8") as text_file:
        text_file.write(SPANISH)
    with open(f"{root}/train/trainX.tsv", "w", encoding="utf-8") as evidence_file:
        evidence_file.writelines(f"{line}\n" for line in evidence_lines)


def test_spanish_notes_carry_the_annotators_evidence(tmp_path):
    write_spanish(tmp_path / "release", EVIDENCE_LINES)
    result = codiesp.prepare(str(tmp_path / "release"), str(tmp_path / "es"), language="es")
    notes = dataset.read_notes(f"{tmp_path}/es/codiesp_dx", "train")
    notes = notes if len(notes) else dataset.read_notes(f"{tmp_path}/es/codiesp_dx", "test")
    (note,) = [row for row in notes.itertuples() if row.note_id == "a"]
    assert note.text == SPANISH.strip()
    cut = [[note.text[start:end] for start, end in mention["spans"]] for mention in note.evidence]
    assert [mention["code"] for mention in note.evidence] == ["N44.8", "R50.9", "N44.8"]
    assert cut == [["teste derecho aumentado"], ["fiebre"], ["teste", "aumentado"]]
    assert result["preparation"]["skipped"] == {
        "evidence: fragment edges trimmed to the quoted words": 1
    }
    codiesp.prepare(str(tmp_path / "release"), str(tmp_path / "en"))  # the translation
    english = dataset.read_notes(f"{tmp_path}/en/codiesp_dx", "test")
    english = english if len(english) else dataset.read_notes(f"{tmp_path}/en/codiesp_dx", "train")
    assert "evidence" not in english.columns and english.text[0] == "Male, 37."


@pytest.mark.parametrize(
    "line, message",
    [
        ("a\tDIAGNOSTICO\tn44.8\tteste izquierdo\t24 47", "cut 'teste derecho aumentado', not"),
        ("a\tDIAGNOSTICO\ti10\tfiebre\t56 62", "code I10 is not among case a's codes"),
        ("b\tDIAGNOSTICO\tn44.8\tfiebre\t56 62", "case 'b' has no text file"),
        ("a\tDIAGNOSTICO\tr50.9\tfiebre\t56 99", "fall outside the text (60 characters)"),
        ("a\tDIAGNOSTICO\tr50.9\tfiebre\t56-62", "are not 'start end' fragments"),
        ("a\tDIAGNOSTICO\tr50.9\tfiebre", "expected case-id, type, code, words and offsets"),
    ],
)
def test_evidence_that_does_not_fit_its_note_is_named(tmp_path, line, message):
    write_spanish(tmp_path / "release", [*EVIDENCE_LINES, line])
    with pytest.raises(ValueError, match=rf"trainX.tsv, line 5: .*{re.escape(message)}"):
        codiesp.prepare(str(tmp_path / "release"), str(tmp_path / "out"), language="es")
    assert not os.path.exists(tmp_path / "out/codiesp_dx")


@needs_codiesp
@pytest.mark.slow
def test_real_spanish_release_holds_every_diagnosis_mention(tmp_path):
    """Checked against the X files read here: every diagnosis line is a mention, in order,
    cutting its quoted words (white space aside)."""
    result = run_main(
        "data_prep.codiesp",
        f"--codiesp_dir={CODIESP_DIR}",
        f"--out_dir={tmp_path}",
        "--language=es",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dataset_dir = f"{tmp_path}/codiesp_dx"
    notes = {
        row.note_id: row
        for split in dataset.SPLITS
        for row in dataset.read_notes(dataset_dir, split).itertuples()
    }
    for split in ("train", "dev"):
        with open(f"{CODIESP_DIR}/{split}/{split}X.tsv", encoding="utf-8") as evidence_file:
            lines = [line.rstrip("\n").split("\t") for line in evidence_file if line.strip()]
        diagnoses = [fields for fields in lines if fields[1] == "DIAGNOSTICO"]
        cases = {case_id for case_id, *_ in diagnoses}
        mentions = [m for case_id in cases for m in notes[case_id].evidence]
        assert len(mentions) == len(diagnoses)
        by_case = {}
        for case_id, _, code, words, _ in diagnoses:
            by_case.setdefault(case_id, []).append((code.upper(), words))
        for case_id, expected in by_case.items():
            note = notes[case_id]
            for (code, words), mention in zip(expected, note.evidence):
                cut = " ".join(note.text[start:end] for start, end in mention["spans"])
                assert mention["code"] == code, (case_id, code, mention)
                assert cut.split() == words.split(), (case_id, code, words, cut)
    assert notes["S0004-06142005000700014-1"].text.startswith("Describimos el caso de un varón")
