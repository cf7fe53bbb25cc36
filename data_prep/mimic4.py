"""MIMIC-IV discharge notes with ICD-10 diagnosis codes: `mimic4_dx`.

    python -m data_prep.mimic4 --mimic_dir=MIMIC_IV --out_dir=data

Reads `hosp/diagnoses_icd` and `note/discharge` (`.csv.gz` or `.csv`) under
`--mimic_dir`. Only ICD-10 rows (`icd_version` 10) count; codes are formatted
as ICD-10-CM with a dot after the 3rd character when longer (`I10` stays
`I10`, `E1122` becomes `E11.22`), once per document. A document is one
admission (`note_id` = hadm_id) with a discharge note and at least one ICD-10
code; several discharge notes of one admission are joined in `note_seq`
order.

Splits are by patient, deterministic in `--seed` (about 75/10/15; no patient
in two splits), or given by `--split_file`: a CSV with columns `hadm_id` (or
`_id`, as in Edin et al.'s split) and `split` (`train`, `dev` or `val`,
`test`). The label space is every code of the training split, or
`--code_list_file` (one code a line, e.g. every ICD-10-CM code: the paper's
72,748-code experiment gives each its own attention and classifier vectors);
training codes outside that list are dropped and counted. Dev and test codes
outside the space stay gold codes (every metric counts them as missed); the
summary counts those pairs. Each code's description is
its `long_title` in `hosp/d_icd_diagnoses` (when present), else its ICD-10-CM
title from `simple-icd-10-cm`.
"""

import hashlib
import os
import re

import pandas as pd
from absl import app, flags, logging

from data_prep import tables
from longbert_tf.data import dataset, dataset_summary, descriptions

ICD10_PATTERN = re.compile(r"[A-Z][0-9][0-9A-Z]{1,5}")
DIAGNOSIS_COLUMNS = ["subject_id", "hadm_id", "icd_code", "icd_version"]
TITLE_COLUMNS = ["icd_code", "icd_version", "long_title"]
DISCHARGE_COLUMNS = ["subject_id", "hadm_id", "note_seq", "text"]
SPLIT_NAMES = {"train": "train", "dev": "dev", "val": "dev", "test": "test"}
SPLIT_FRACTIONS = (("train", 0.75), ("dev", 0.85), ("test", 1.0))  # cumulative


def format_icd10(code: str) -> str:
    """`E1122` or `e11.22` -> `E11.22`; codes of three characters stay as they are."""
    code = code.strip().upper().replace(".", "")
    return f"{code[:3]}.{code[3:]}" if len(code) > 3 else code


def read_titles(mimic_dir: str, labels: list) -> dict:
    """`{code: title}` of `labels`: `hosp/d_icd_diagnoses` ICD-10 long titles, else ICD-10-CM's."""
    titles = descriptions.icd10cm_titles(labels)
    try:
        path = tables.find_table(os.path.join(mimic_dir, "hosp"), "d_icd_diagnoses")
    except FileNotFoundError:
        return titles
    wanted = set(labels)
    for chunk in tables.read_chunks(path, TITLE_COLUMNS):
        chunk = chunk[chunk.icd_version.str.strip() == "10"].dropna()
        for code, title in zip(chunk.icd_code.map(format_icd10), chunk.long_title):
            if code in wanted:
                titles[code] = title
    return titles


def read_icd10_codes(mimic_dir: str, skipped: tables.SkipCounter) -> pd.Series:
    """Sorted ICD-10 codes per hadm_id (a Series indexed by hadm_id)."""
    path = tables.find_table(os.path.join(mimic_dir, "hosp"), "diagnoses_icd")
    kept = []
    for chunk in tables.read_chunks(path, DIAGNOSIS_COLUMNS):
        version = chunk.icd_version.fillna("").str.strip()
        skipped["diagnoses_icd: ICD-9 rows (not used)"] += int((version == "9").sum())
        skipped["diagnoses_icd: icd_version neither 9 nor 10"] += int(
            (~version.isin(["9", "10"])).sum()
        )
        chunk = chunk[version == "10"]
        codes = chunk.icd_code.fillna("").str.strip().str.upper().str.replace(".", "", regex=False)
        blank = codes == ""
        malformed = ~blank & ~codes.str.fullmatch(ICD10_PATTERN.pattern)
        bad_admission = ~chunk.hadm_id.fillna("").str.fullmatch(r"\d+")
        skipped["diagnoses_icd: blank ICD-10 icd_code"] += int(blank.sum())
        skipped["diagnoses_icd: malformed ICD-10 icd_code"] += int(malformed.sum())
        skipped["diagnoses_icd: invalid hadm_id"] += int(
            (bad_admission & ~blank & ~malformed).sum()
        )
        good = ~(blank | malformed | bad_admission)
        kept.append(
            pd.DataFrame(dict(hadm_id=chunk.hadm_id[good], code=codes[good].map(format_icd10)))
        )
    rows = pd.concat(kept, ignore_index=True)
    duplicates = rows.duplicated()
    skipped["diagnoses_icd: duplicate code of an admission"] += int(duplicates.sum())
    return rows[~duplicates].groupby("hadm_id").code.agg(sorted)


def read_discharge_notes(mimic_dir: str, wanted: set, skipped: tables.SkipCounter) -> pd.DataFrame:
    """Discharge notes of the `wanted` admissions: `hadm_id`, `subject_id`, `text` (joined)."""
    path = tables.find_table(os.path.join(mimic_dir, "note"), "discharge")
    kept = []
    for chunk in tables.read_chunks(path, DISCHARGE_COLUMNS):
        bad_admission = ~chunk.hadm_id.fillna("").str.fullmatch(r"\d+")
        skipped["discharge: note without a valid hadm_id"] += int(bad_admission.sum())
        chunk = chunk[~bad_admission]
        is_wanted = chunk.hadm_id.isin(wanted)
        skipped["discharge: note of an admission without ICD-10 codes"] += int((~is_wanted).sum())
        kept.append(chunk[is_wanted])
    notes = pd.concat(kept, ignore_index=True)
    notes["sequence"] = pd.to_numeric(notes.note_seq, errors="coerce")
    notes["text"] = notes.text.fillna("")
    notes = notes.sort_values(["hadm_id", "sequence"])
    documents = notes.groupby("hadm_id", sort=True).agg(
        subject_id=("subject_id", "first"), text=("text", "\n\n".join)
    )
    return documents.reset_index()


def patient_split(subject_id: str, seed: int) -> str:
    """`train`, `dev` or `test` for a patient, from a hash of the seed and the subject id."""
    digest = hashlib.sha256(f"{seed}:{subject_id}".encode()).hexdigest()
    position = int(digest[:12], 16) / 16**12
    return next(split for split, upper in SPLIT_FRACTIONS if position < upper)


def read_split_file(path: str) -> dict:
    """hadm_id -> split from a CSV with `hadm_id` (or `_id`) and `split` columns."""
    frame = pd.read_csv(path, dtype=str)
    id_column = "hadm_id" if "hadm_id" in frame.columns else "_id"
    missing = [column for column in (id_column, "split") if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: columns {missing} are missing; the header has {list(frame.columns)}"
        )
    for column in (id_column, "split"):
        blank = frame.index[frame[column].isna() | (frame[column].str.strip() == "")]
        if len(blank):
            lines = (blank[:5] + 2).tolist()  # the header is line 1
            raise ValueError(f"{path}: lines {lines} have no {column}")
    frame["split"] = frame.split.str.strip()
    unknown = sorted(set(frame.split) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"{path}: unknown split names {unknown}; use {sorted(SPLIT_NAMES)}")
    return dict(zip(frame[id_column].str.strip(), frame.split.map(SPLIT_NAMES)))


def prepare(
    mimic_dir: str,
    out_dir: str,
    split_file: str = None,
    code_list_file: str = None,
    seed: int = 0,
) -> dict:
    """Writes `out_dir/mimic4_dx` and returns its summary."""
    tables.check_outside(out_dir, mimic_dir)
    skipped = tables.SkipCounter()
    codes = read_icd10_codes(mimic_dir, skipped)
    documents = read_discharge_notes(mimic_dir, set(codes.index), skipped)
    skipped["admissions with ICD-10 codes but no discharge note"] += len(codes) - len(documents)
    documents["codes"] = documents.hadm_id.map(codes)
    preparation = {}
    if split_file:
        assigned = read_split_file(split_file)
        documents["split"] = documents.hadm_id.map(assigned)
        skipped["documents absent from the split file"] += int(documents.split.isna().sum())
        documents = documents[documents.split.notna()]
        preparation["split"] = f"from {split_file}"
    else:
        documents["split"] = [patient_split(subject, seed) for subject in documents.subject_id]
        preparation["split"] = f"by patient, seed {seed}"
    splits = {
        split: documents[documents.split == split]
        .rename(columns={"hadm_id": "note_id"})[list(dataset.NOTE_COLUMNS)]
        .reset_index(drop=True)
        for split in dataset.SPLITS
    }
    train = splits["train"]
    if code_list_file:
        labels = sorted({format_icd10(code) for code in tables.read_code_list(code_list_file)})
        allowed = set(labels)
        skipped["training codes outside the code list"] += sum(
            code not in allowed for note_codes in train.codes for code in note_codes
        )
        train["codes"] = [[c for c in note_codes if c in allowed] for note_codes in train.codes]
        preparation["label_space"] = f"{code_list_file} ({len(labels):,} codes)"
    else:
        labels = sorted({code for note_codes in train.codes for code in note_codes})
        preparation["label_space"] = f"the {len(labels):,} codes of the training split"
    preparation["outside_label_space"] = tables.outside_label_space(splits, labels)
    preparation["skipped"] = skipped.report()
    titles = read_titles(mimic_dir, labels)
    preparation["descriptions"] = f"titles of {len(titles):,} of {len(labels):,} codes"
    dataset_dir = dataset.write_dataset(os.path.join(out_dir, "mimic4_dx"), splits, labels, titles)
    return dataset_summary.summarize(dataset_dir, preparation)


def main(argv):
    del argv
    dataset_dir = os.path.join(flags.FLAGS.out_dir, "mimic4_dx")
    result = prepare(
        flags.FLAGS.mimic_dir,
        flags.FLAGS.out_dir,
        flags.FLAGS.split_file,
        flags.FLAGS.code_list_file,
        flags.FLAGS.seed,
    )
    print(dataset_summary.format_summary(dataset_dir, result))
    logging.info("Summary saved as %s/summary.json", dataset_dir)


if __name__ == "__main__":
    flags.DEFINE_string(
        "mimic_dir", None, "MIMIC-IV folder with hosp/ and note/ (read only).", required=True
    )
    flags.DEFINE_string("out_dir", "data", "Folder that receives mimic4_dx/.")
    flags.DEFINE_string(
        "split_file", None, "CSV with hadm_id (or _id) and split columns; default: by patient."
    )
    flags.DEFINE_string(
        "code_list_file", None, "Label space, one ICD-10-CM code a line; default: observed codes."
    )
    flags.DEFINE_integer("seed", 0, "Seed of the patient-level split.")
    app.run(main)
