"""data_prep.mimic4 on raw files generated in MIMIC-IV's schema."""

import pytest

from data_prep import mimic4
from longbert_tf.data import dataset, descriptions
from tests import mimic_files

NUM_PATIENTS = 400


def write_mimic4(mimic_dir):
    diagnoses = [
        [1, 1001, 1, "I10", 10],  # three characters: no dot
        [1, 1001, 2, "E1122", 10],
        [1, 1001, 3, "Z87891", 10],
        [1, 1001, 4, "E1122", 10],  # duplicate
        [1, 1001, 5, "4019", 9],  # ICD-9 row of the same admission
        [1, 1001, 6, None, 10],  # blank
        [2, 1002, 1, "25000", 9],  # only ICD-9: no document
        [3, 1003, 1, "J189", 10],  # no discharge note
        [4, 1004, 1, "not a code", 10],  # malformed only
        [5, 1005, 1, "0389", 9],
        [5, 1005, 2, "A419", 10],
    ]
    discharge = [
        ["1-DS-2", 1, 1001, "DS", 2, "2180-01-02 00:00:00", None, "Addendum: stable."],
        ["1-DS-1", 1, 1001, "DS", 1, "2180-01-01 00:00:00", None, 'Discharge, "quoted"\nline two'],
        ["2-DS-1", 2, 1002, "DS", 1, None, None, "ICD-9 only admission."],
        ["4-DS-1", 4, 1004, "DS", 1, None, None, "Malformed codes only."],
        ["5-DS-1", 5, 1005, "DS", 1, None, None, "Sepsis."],
    ]
    for patient in range(100, 100 + NUM_PATIENTS):
        for admission in range(1 + patient % 3):
            hadm_id = 100000 + patient * 10 + admission
            diagnoses.append([patient, hadm_id, 1, f"R{patient % 50:02d}", 10])
            discharge.append(
                [
                    f"{patient}-DS-{admission}",
                    patient,
                    hadm_id,
                    "DS",
                    1,
                    None,
                    None,
                    f"Note {hadm_id}.",
                ]
            )
    mimic_files.write_table(
        f"{mimic_dir}/hosp/diagnoses_icd.csv.gz", mimic_files.MIMIC4_DIAGNOSES, diagnoses, False
    )
    mimic_files.write_table(
        f"{mimic_dir}/note/discharge.csv.gz", mimic_files.MIMIC4_DISCHARGE, discharge, False
    )
    titles = [
        ["4019", 9, "Unspecified essential hypertension"],  # ICD-9: not a label
        ["I10", 10, "Essential (primary) hypertension, from the dictionary"],
        ["E1122", 10, "Type 2 diabetes mellitus with diabetic chronic kidney disease"],
    ]
    mimic_files.write_table(
        f"{mimic_dir}/hosp/d_icd_diagnoses.csv.gz",
        mimic_files.MIMIC4_D_ICD_DIAGNOSES,
        titles,
        False,
    )


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    mimic_dir = str(tmp_path_factory.mktemp("mimic4"))
    write_mimic4(mimic_dir)
    return mimic_dir


def all_notes(dataset_dir):
    return {
        split: dataset.read_notes(dataset_dir, split).set_index("note_id")
        for split in dataset.SPLITS
    }


def test_documents_codes_and_skips_are_exact(raw_dir, tmp_path):
    result = mimic4.prepare(raw_dir, str(tmp_path))
    notes = all_notes(str(tmp_path / "mimic4_dx"))
    merged = {note_id: row for split in notes.values() for note_id, row in split.iterrows()}
    assert merged["1001"].text == 'Discharge, "quoted"\nline two\n\nAddendum: stable.'
    assert merged["1001"].codes == ["E11.22", "I10", "Z87.891"]
    assert merged["1005"].codes == ["A41.9"]
    assert "1002" not in merged and "1003" not in merged and "1004" not in merged
    skipped = result["preparation"]["skipped"]
    assert skipped["diagnoses_icd: ICD-9 rows (not used)"] == 3
    assert skipped["diagnoses_icd: blank ICD-10 icd_code"] == 1
    assert skipped["diagnoses_icd: malformed ICD-10 icd_code"] == 1
    assert skipped["diagnoses_icd: duplicate code of an admission"] == 1
    assert skipped["admissions with ICD-10 codes but no discharge note"] == 1
    assert skipped["discharge: note of an admission without ICD-10 codes"] == 2
    assert len(merged) == 2 + sum(1 + p % 3 for p in range(100, 100 + NUM_PATIENTS))


def test_descriptions_come_from_the_dictionary_then_icd10cm(raw_dir, tmp_path):
    code_list = tmp_path / "codes.txt"
    code_list.write_text("I10\nZ87.891\nR00\n")
    mimic4.prepare(raw_dir, str(tmp_path), code_list_file=str(code_list))
    dataset_dir = str(tmp_path / "mimic4_dx")
    labels = dataset.read_labels(dataset_dir)
    texts = dict(zip(labels, descriptions.code_descriptions(dataset_dir, labels)))
    assert texts["I10"] == "Essential (primary) hypertension, from the dictionary"
    assert texts["Z87.891"] == "Personal history of nicotine dependence"  # simple-icd-10-cm
    assert texts["R00"] == "Abnormalities of heart beat"


def test_patient_split_is_deterministic_and_about_75_10_15(raw_dir, tmp_path):
    mimic4.prepare(raw_dir, str(tmp_path / "a"), seed=0)
    mimic4.prepare(raw_dir, str(tmp_path / "b"), seed=0)
    first, again = (
        all_notes(str(tmp_path / "a/mimic4_dx")),
        all_notes(str(tmp_path / "b/mimic4_dx")),
    )
    patients = {split: set(notes.subject_id) for split, notes in first.items()}
    assert not (patients["train"] & patients["dev"] or patients["train"] & patients["test"])
    assert not patients["dev"] & patients["test"]
    shares = [len(patients[split]) / (NUM_PATIENTS + 2) for split in dataset.SPLITS]
    assert shares == pytest.approx([0.75, 0.10, 0.15], abs=0.05)
    for split in dataset.SPLITS:
        assert first[split].index.tolist() == again[split].index.tolist()
    mimic4.prepare(raw_dir, str(tmp_path / "c"), seed=1)
    assert (
        all_notes(str(tmp_path / "c/mimic4_dx"))["dev"].index.tolist()
        != first["dev"].index.tolist()
    )


def test_split_file_and_code_list(raw_dir, tmp_path):
    split_file = tmp_path / "split.csv"
    split_file.write_text("_id,split\n1001,train\n1005,val\n101000,test\n")
    code_list = tmp_path / "codes.txt"
    code_list.write_text("I10\nE11.22\nA41.9\nZ99.9\n")
    result = mimic4.prepare(raw_dir, str(tmp_path / "out"), str(split_file), str(code_list))
    notes = all_notes(str(tmp_path / "out/mimic4_dx"))
    assert notes["train"].index.tolist() == ["1001"] and notes["dev"].index.tolist() == ["1005"]
    assert notes["test"].index.tolist() == ["101000"]
    assert notes["train"].loc["1001"].codes == ["E11.22", "I10"]
    assert notes["test"].loc["101000"].codes == ["R00"]  # outside the list: a gold code missed
    assert dataset.read_labels(str(tmp_path / "out/mimic4_dx")) == [
        "A41.9",
        "E11.22",
        "I10",
        "Z99.9",
    ]
    bulk = sum(1 + p % 3 for p in range(100, 100 + NUM_PATIENTS))  # one R code each
    skipped = result["preparation"]["skipped"]
    assert skipped["training codes outside the code list"] == 1  # Z87.891
    assert result["preparation"]["outside_label_space"]["test"] == "1 of 1 (note, code) pairs"
    assert skipped["documents absent from the split file"] == 2 + bulk - 3


@pytest.mark.parametrize(
    "rows, message",
    [
        ("1001,train\n1005,\n101000,holdout\n", r"split.csv: lines \[3\] have no split"),
        ("1001,train\n  ,test\n", r"split.csv: lines \[3\] have no hadm_id"),
    ],
)
def test_blank_split_file_cells_name_their_lines(raw_dir, tmp_path, rows, message):
    split_file = tmp_path / "split.csv"
    split_file.write_text("hadm_id,split\n" + rows)
    with pytest.raises(ValueError, match=message):
        mimic4.prepare(raw_dir, str(tmp_path / "out"), str(split_file))


def test_bad_split_file_and_missing_table_are_clear_errors(raw_dir, tmp_path):
    split_file = tmp_path / "split.csv"
    split_file.write_text("hadm_id,split\n1001,holdout\n")
    with pytest.raises(ValueError, match=r"unknown split names \['holdout'\]"):
        mimic4.prepare(raw_dir, str(tmp_path / "out"), str(split_file))
    with pytest.raises(
        FileNotFoundError, match="neither diagnoses_icd.csv.gz nor diagnoses_icd.csv"
    ):
        mimic4.prepare(str(tmp_path / "empty"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="is inside .*; raw files are never written"):
        mimic4.prepare(raw_dir, f"{raw_dir}/prepared")
