"""data_prep.mimic3 on raw files generated in MIMIC-III's schema."""

import gzip
import json
import os

import pytest

from data_prep import mimic3
from longbert_tf.data import dataset, descriptions
from tests import mimic_files
from tests.entry_points import run_main
from tests.mimic_files import code_row, note_row

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 60 frequent codes: code i is in the first COUNTS[i] bulk admissions; codes 47..51 tie for ranks
# 48 to 52, so 47, 48 and 49 make the top 50 by code order and 50, 51 are left out.
BULK_CODES = [f"{250 + i // 10}{i % 10}" for i in range(60)]  # 2500 ... 2559
COUNTS = [80 - i for i in range(47)] + [20] * 5 + [5] * 8
BULK_ADMISSIONS = [str(200000 + i) for i in range(80)]


def write_mimic3(mimic_dir, splits_dir, gz=True):
    suffix = ".csv.gz" if gz else ".csv"
    notes = [
        # Admission 100001: addendum listed first and dated earlier, then the report.
        note_row(
            1, 11, 100001, "Discharge summary", "Addendum", "ADDENDUM: seen again.", "2150-01-01"
        ),
        note_row(2, 11, 100001, "Nursing/other", "Report", "Nursing note, ignored."),
        note_row(
            3,
            11,
            100001,
            "Discharge summary",
            "Report",
            'Admission Date: [**2150-1-1**]\nDx: "sepsis", ok',
            "2150-01-03",
        ),
        note_row(4, 11, 100001, "Radiology", "CHEST (PA & LAT)", "Radiology, ignored."),
        note_row(5, 12, 100002, "Discharge summary", "Report", "Second patient summary."),
        note_row(6, 13, 100003, "Nursing", "Report", "Only nursing notes for this admission."),
        note_row(7, 14, None, "Discharge summary", "Report", "No admission id."),
        note_row(8, 15, 100005, "Discharge summary", "Report", ""),
    ]
    notes += [
        note_row(100 + i, 500 + i, int(hadm_id), "Discharge summary", "Report", f"Bulk note {i}.")
        for i, hadm_id in enumerate(BULK_ADMISSIONS)
    ]
    diagnoses = [
        code_row(1, 11, 100001, 1, "0389"),  # leading zero -> 038.9
        code_row(2, 11, 100001, 2, "E8497"),  # E code -> E849.7
        code_row(3, 11, 100001, 3, "V4581"),  # V code -> V45.81
        code_row(4, 11, 100001, 4, "042"),  # 3 characters, leading zero -> 042
        code_row(5, 11, 100001, 5, "0389"),  # duplicate row
        code_row(6, 11, 100001, 6, None),  # blank code
        code_row(7, 12, 100002, 1, "4019"),
        code_row(8, 12, 100002, 2, "E9320"),
        code_row(9, 12, 100002, 3, "BAD!"),  # malformed
        code_row(10, 15, 100005, 1, "V290"),
    ]
    procedures = [
        code_row(1, 11, 100001, 1, "0066"),  # leading zero -> 00.66
        code_row(2, 11, 100001, 2, "3893"),  # -> 38.93
        code_row(3, 12, 100002, 1, "966"),  # -> 96.6
        code_row(4, 12, 100002, 2, "966"),  # duplicate
    ]
    row_id = 100
    for code, count in zip(BULK_CODES, COUNTS):
        for hadm_id in BULK_ADMISSIONS[:count]:
            row_id += 1
            diagnoses.append(code_row(row_id, 1, int(hadm_id), 1, code))
    diagnoses.append(code_row(row_id + 1, 1, int(BULK_ADMISSIONS[-1]), 2, "7999"))
    mimic_files.write_table(f"{mimic_dir}/NOTEEVENTS{suffix}", mimic_files.NOTEEVENTS, notes)
    mimic_files.write_table(
        f"{mimic_dir}/DIAGNOSES_ICD{suffix}", mimic_files.DIAGNOSES_ICD, diagnoses
    )
    mimic_files.write_table(
        f"{mimic_dir}/PROCEDURES_ICD{suffix}", mimic_files.PROCEDURES_ICD, procedures
    )
    diagnosis_titles = [
        [1, "0389", "Septicemia NOS", "Unspecified septicemia"],
        [2, "4019", "Hypertension NOS", "Unspecified essential hypertension"],
    ]
    procedure_titles = [
        [1, "0066", "PTCA", "Percutaneous transluminal coronary angioplasty [PTCA]"],
        [
            2,
            "966",
            "Entral infus nutrit sub",
            "Enteral infusion of concentrated nutritional substances",
        ],
    ]
    mimic_files.write_table(
        f"{mimic_dir}/D_ICD_DIAGNOSES{suffix}", mimic_files.D_ICD_DIAGNOSES, diagnosis_titles
    )
    mimic_files.write_table(
        f"{mimic_dir}/D_ICD_PROCEDURES{suffix}", mimic_files.D_ICD_PROCEDURES, procedure_titles
    )
    os.makedirs(splits_dir, exist_ok=True)
    split_ids = {
        "train": ["100001", "100002", *BULK_ADMISSIONS[:60]],
        "dev": ["100003", "100005", *BULK_ADMISSIONS[60:70]],
        "test": BULK_ADMISSIONS[70:],
    }
    for split, ids in split_ids.items():
        with open(f"{splits_dir}/{split}_full_hadm_ids.csv", "w") as split_file:
            split_file.writelines(f"{hadm_id}\n" for hadm_id in ids)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic3")
    write_mimic3(str(root / "raw"), str(root / "splits"))
    results = mimic3.prepare(str(root / "raw"), str(root / "splits"), str(root / "out"))
    return root, results


def test_icd9_dot_rule():
    assert mimic3.format_icd9("0389", True) == "038.9"
    assert mimic3.format_icd9("E8497", True) == "E849.7"
    assert mimic3.format_icd9("E849", True) == "E849"
    assert mimic3.format_icd9("V4581", True) == "V45.81"
    assert mimic3.format_icd9("042", True) == "042"
    assert mimic3.format_icd9("0066", False) == "00.66"
    assert mimic3.format_icd9("966", False) == "96.6"


def test_full_documents_and_codes_are_exact(prepared):
    root, _ = prepared
    train = dataset.read_notes(str(root / "out/mimic3_full"), "train").set_index("note_id")
    first = train.loc["100001"]
    assert first.subject_id == "11"
    assert first.text == 'Admission Date: [**2150-1-1**]\nDx: "sepsis", ok\n\nADDENDUM: seen again.'
    assert first.codes == ["00.66", "038.9", "042", "38.93", "E849.7", "V45.81"]
    second = train.loc["100002"]
    assert second.text == "Second patient summary."
    assert second.codes == ["401.9", "96.6", "E932.0"]
    dev = dataset.read_notes(str(root / "out/mimic3_full"), "dev")
    assert dev.note_id.tolist()[:1] == ["100005"]  # 100003 has no discharge summary
    assert dev.iloc[0].text == "" and dev.iloc[0].codes == ["V29.0"]
    labels = dataset.read_labels(str(root / "out/mimic3_full"))
    assert {"038.9", "00.66", "V45.81", "E849.7", "799.9"} <= set(labels)
    assert "7999" not in labels and len(labels) == 10 + 60 + 1


def test_dictionary_titles_become_descriptions(prepared, tmp_path):
    root, results = prepared
    full_dir = str(root / "out" / "mimic3_full")
    labels = dataset.read_labels(full_dir)
    texts = dict(zip(labels, descriptions.code_descriptions(full_dir, labels)))
    assert texts["038.9"] == "Unspecified septicemia"
    assert texts["00.66"] == "Percutaneous transluminal coronary angioplasty [PTCA]"
    assert texts["96.6"] == "Enteral infusion of concentrated nutritional substances"
    assert texts["042"] == ""  # not in the generated dictionary
    assert results[full_dir]["preparation"]["descriptions"].startswith("LONG_TITLE of 4 of ")
    top_dir = str(root / "out" / "mimic3_50")  # the generated dictionary has none of its codes
    top_labels = dataset.read_labels(top_dir)
    with pytest.raises(ValueError, match="describes none of the 50 codes"):
        descriptions.code_descriptions(top_dir, top_labels)


def test_skips_are_counted_and_reported(prepared):
    _, results = prepared
    full = next(value for key, value in results.items() if key.endswith("mimic3_full"))
    skipped = full["preparation"]["skipped"]
    assert skipped["NOTEEVENTS: discharge summary without a valid HADM_ID"] == 1
    assert skipped["dev: HADM_ID without a discharge summary"] == 1
    assert skipped["DIAGNOSES_ICD: blank ICD9_CODE"] == 1
    assert skipped["DIAGNOSES_ICD: malformed ICD9_CODE"] == 1
    assert skipped["DIAGNOSES_ICD: duplicate code of an admission"] == 1
    assert skipped["PROCEDURES_ICD: duplicate code of an admission"] == 1
    assert full["splits"]["train"]["notes"] == 62 and full["splits"]["test"]["notes"] == 10
    assert "8,921" in full["preparation"]["label_count_note"]


def test_top_50_keeps_every_note_and_reports_ties(prepared):
    root, results = prepared
    top = next(value for key, value in results.items() if key.endswith("mimic3_50"))
    labels = dataset.read_labels(str(root / "out/mimic3_50"))
    expected = sorted(mimic3.format_icd9(code, True) for code in BULK_CODES[:50])
    assert labels == expected
    assert top["preparation"]["tied_at_cut_but_left_out"] == ["255.0", "255.1"]
    train = dataset.read_notes(str(root / "out/mimic3_50"), "train").set_index("note_id")
    assert len(train) == 62 and train.loc["100001"].codes == []
    assert train.loc[BULK_ADMISSIONS[0]].codes == expected


def test_caml_behaviour_drops_notes_without_top_codes(prepared, tmp_path):
    root, _ = prepared
    top_file = tmp_path / "TOP_50_CODES.csv"
    top_file.write_text("\n".join(["401.9", "038.9"]) + "\n")
    mimic3.prepare(
        str(root / "raw"), str(root / "splits"), str(tmp_path / "out"), str(top_file), True
    )
    train = dataset.read_notes(str(tmp_path / "out/mimic3_50"), "train")
    assert train.note_id.tolist() == ["100001", "100002"]
    assert train.codes.tolist() == [["038.9"], ["401.9"]]
    assert dataset.read_labels(str(tmp_path / "out/mimic3_50")) == ["038.9", "401.9"]


def test_plain_csv_gives_the_same_dataset(prepared, tmp_path):
    root, _ = prepared
    write_mimic3(str(tmp_path / "raw"), str(tmp_path / "splits"), gz=False)
    mimic3.prepare(str(tmp_path / "raw"), str(tmp_path / "splits"), str(tmp_path / "out"))
    for split in dataset.SPLITS:
        a = dataset.read_notes(str(root / "out/mimic3_full"), split)
        b = dataset.read_notes(str(tmp_path / "out/mimic3_full"), split)
        assert a.equals(b)


def test_rerunning_is_idempotent(prepared, tmp_path):
    root, _ = prepared
    path = root / "out/mimic3_full/train.jsonl.gz"
    before = gzip.decompress(path.read_bytes())
    mimic3.prepare(str(root / "raw"), str(root / "splits"), str(root / "out"))
    assert gzip.decompress(path.read_bytes()) == before
    assert sorted(os.listdir(root / "out")) == ["mimic3_50", "mimic3_full"]


def test_missing_file_column_and_empty_split_are_clear_errors(tmp_path):
    write_mimic3(str(tmp_path / "raw"), str(tmp_path / "splits"))
    os.remove(tmp_path / "raw/PROCEDURES_ICD.csv.gz")
    with pytest.raises(
        FileNotFoundError, match="neither PROCEDURES_ICD.csv.gz nor PROCEDURES_ICD.csv"
    ):
        mimic3.prepare(str(tmp_path / "raw"), str(tmp_path / "splits"), str(tmp_path / "out"))

    write_mimic3(str(tmp_path / "raw"), str(tmp_path / "splits"))
    renamed = [name if name != "ICD9_CODE" else "ICD9" for name in mimic_files.DIAGNOSES_ICD]
    mimic_files.write_table(str(tmp_path / "raw/DIAGNOSES_ICD.csv.gz"), renamed, [])
    with pytest.raises(
        ValueError, match=r"DIAGNOSES_ICD.csv.gz: columns \['ICD9_CODE'\] are missing"
    ):
        mimic3.prepare(str(tmp_path / "raw"), str(tmp_path / "splits"), str(tmp_path / "out"))

    write_mimic3(str(tmp_path / "raw"), str(tmp_path / "splits"))
    (tmp_path / "splits/dev_full_hadm_ids.csv").write_text("\n")
    with pytest.raises(ValueError, match="dev_full_hadm_ids.csv lists no ids"):
        mimic3.prepare(str(tmp_path / "raw"), str(tmp_path / "splits"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_output_inside_the_mimic_folder_is_refused(tmp_path):
    write_mimic3(str(tmp_path / "raw"), str(tmp_path / "splits"))
    with pytest.raises(ValueError, match="is inside .*; raw files are never written"):
        mimic3.prepare(str(tmp_path / "raw"), str(tmp_path / "splits"), str(tmp_path / "raw/out"))


@pytest.mark.slow
def test_command_line_prints_the_summary(tmp_path):
    write_mimic3(str(tmp_path / "raw"), str(tmp_path / "splits"))
    result = run_main(
        "data_prep.mimic3",
        f"--mimic_dir={tmp_path}/raw",
        f"--splits_dir={tmp_path}/splits",
        f"--out_dir={tmp_path}/out",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mimic3_full: 71 codes" in result.stdout and "mimic3_50: 50 codes" in result.stdout
    saved = json.loads((tmp_path / "out/mimic3_full/summary.json").read_text())
    assert saved["labels"] == 71
