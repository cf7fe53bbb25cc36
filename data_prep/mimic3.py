"""MIMIC-III v1.4 discharge summaries with ICD-9 codes: `mimic3_full` and `mimic3_50`.

    python -m data_prep.mimic3 --mimic_dir=MIMIC_III --splits_dir=CAML_SPLITS --out_dir=data

Reads `NOTEEVENTS`, `DIAGNOSES_ICD` and `PROCEDURES_ICD` (`.csv` or `.csv.gz`)
and CAML's split files (`{train,dev,test}_full_hadm_ids.csv`: one HADM_ID a
line, no header). A document is one admission: its `Discharge summary` notes
(the report first, then addenda, each group by chart date and row id) joined
by blank lines; other categories are ignored. Codes are read as strings and
formatted as CAML does (diagnoses: a dot after the 4th character of E codes
and the 3rd of all others; procedures: after the 2nd; only when longer), once
per document; diagnoses and procedures share one label space. When the
folder has `D_ICD_DIAGNOSES` and `D_ICD_PROCEDURES`, their `LONG_TITLE`s become
the codes' descriptions (`descriptions.tsv`, for `--label_init=descriptions`).

`mimic3_full` labels every code of the prepared documents. `mimic3_50` keeps
every document (those without a top-50 code are negatives, as in the LongBERT
paper) with labels restricted to the 50 codes that occur in the most documents
of all splits (ties broken by code, and reported) or to `--top_codes_file`;
`--drop_notes_without_top_codes` drops such documents (CAML's own top-50
splits are fixed lists of admission ids, which neither choice reproduces).
"""

import os
import re

import pandas as pd
from absl import app, flags, logging

from data_prep import tables
from longbert_tf.data import dataset, dataset_summary

DIAGNOSIS_PATTERN = re.compile(r"(?:\d{3,5}|V\d{2,4}|E\d{3,4})")
PROCEDURE_PATTERN = re.compile(r"\d{2,4}")
NOTE_COLUMNS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CATEGORY", "DESCRIPTION", "TEXT"]
CODE_COLUMNS = ["HADM_ID", "ICD9_CODE"]
TITLE_COLUMNS = ["ICD9_CODE", "LONG_TITLE"]
TITLE_TABLES = {"D_ICD_DIAGNOSES": True, "D_ICD_PROCEDURES": False}  # table -> is diagnosis
NUM_TOP_CODES = 50


def format_icd9(code: str, is_diagnosis: bool) -> str:
    """CAML's dot rule on an undotted ICD-9 code.

    Diagnoses: `0389` -> `038.9`, `E8497` -> `E849.7`, `042` -> `042`;
    procedures: `3893` -> `38.93`.
    """
    if not is_diagnosis:
        split_at = 2
    elif code.startswith("E"):
        split_at = 4
    else:
        split_at = 3
    return f"{code[:split_at]}.{code[split_at:]}" if len(code) > split_at else code


def read_discharge_summaries(mimic_dir: str, skipped: tables.SkipCounter) -> pd.DataFrame:
    """One row per admission: `hadm_id`, `subject_id`, `text` (its discharge summaries joined)."""
    path = tables.find_table(mimic_dir, "NOTEEVENTS")
    kept = []
    for chunk in tables.read_chunks(path, NOTE_COLUMNS):
        chunk = chunk[chunk.CATEGORY.str.strip() == "Discharge summary"]
        no_admission = ~chunk.HADM_ID.fillna("").str.fullmatch(r"\d+")
        skipped["NOTEEVENTS: discharge summary without a valid HADM_ID"] += int(no_admission.sum())
        kept.append(chunk[~no_admission])
    notes = pd.concat(kept, ignore_index=True)
    notes["is_addendum"] = notes.DESCRIPTION.fillna("").str.strip().str.lower() != "report"
    notes["row_number"] = pd.to_numeric(notes.ROW_ID, errors="coerce")
    notes = notes.sort_values(["HADM_ID", "is_addendum", "CHARTDATE", "row_number"])
    notes["TEXT"] = notes.TEXT.fillna("")
    documents = notes.groupby("HADM_ID", sort=True).agg(
        subject_id=("SUBJECT_ID", "first"), text=("TEXT", "\n\n".join)
    )
    return documents.rename_axis("hadm_id").reset_index()


def read_codes(mimic_dir: str, table: str, skipped: tables.SkipCounter) -> pd.DataFrame:
    """Unique `(hadm_id, code)` rows of DIAGNOSES_ICD or PROCEDURES_ICD, codes formatted."""
    is_diagnosis = table == "DIAGNOSES_ICD"
    pattern = DIAGNOSIS_PATTERN if is_diagnosis else PROCEDURE_PATTERN
    path = tables.find_table(mimic_dir, table)
    kept = []
    for chunk in tables.read_chunks(path, CODE_COLUMNS):
        codes = chunk.ICD9_CODE.fillna("").str.strip().str.replace(".", "", regex=False)
        blank = codes == ""
        malformed = ~blank & ~codes.str.fullmatch(pattern.pattern)
        bad_admission = ~chunk.HADM_ID.fillna("").str.fullmatch(r"\d+")
        skipped[f"{table}: blank ICD9_CODE"] += int(blank.sum())
        skipped[f"{table}: malformed ICD9_CODE"] += int(malformed.sum())
        skipped[f"{table}: invalid HADM_ID"] += int((bad_admission & ~blank & ~malformed).sum())
        good = ~(blank | malformed | bad_admission)
        kept.append(
            pd.DataFrame(
                dict(
                    hadm_id=chunk.HADM_ID[good],
                    code=[format_icd9(code, is_diagnosis) for code in codes[good]],
                )
            )
        )
    rows = pd.concat(kept, ignore_index=True)
    duplicates = rows.duplicated()
    skipped[f"{table}: duplicate code of an admission"] += int(duplicates.sum())
    return rows[~duplicates]


def read_titles(mimic_dir: str) -> dict | None:
    """`{formatted code: LONG_TITLE}` of both dictionary tables, or None when either is absent.

    Formatted diagnoses and procedures never coincide (the dot sits after
    different characters), so one dictionary holds both.
    """
    titles = {}
    for table, is_diagnosis in TITLE_TABLES.items():
        try:
            path = tables.find_table(mimic_dir, table)
        except FileNotFoundError:
            return None
        for chunk in tables.read_chunks(path, TITLE_COLUMNS):
            chunk = chunk.dropna()
            for code, title in zip(chunk.ICD9_CODE.str.strip(), chunk.LONG_TITLE):
                titles[format_icd9(code, is_diagnosis)] = title
    return titles


def build_documents(mimic_dir: str, splits_dir: str, skipped: tables.SkipCounter) -> dict:
    """`{split: notes DataFrame}` for CAML's full splits, codes of both tables per admission."""
    documents = read_discharge_summaries(mimic_dir, skipped).set_index("hadm_id")
    codes = pd.concat(
        [read_codes(mimic_dir, table, skipped) for table in ("DIAGNOSES_ICD", "PROCEDURES_ICD")]
    ).drop_duplicates()
    codes_by_admission = codes.groupby("hadm_id").code.agg(sorted)
    splits = {}
    seen = {}
    for split in dataset.SPLITS:
        path = os.path.join(splits_dir, f"{split}_full_hadm_ids.csv")
        hadm_ids = tables.read_id_list(path)
        for hadm_id in hadm_ids:
            if hadm_id in seen:
                raise ValueError(f"{path}: HADM_ID {hadm_id} is also listed in {seen[hadm_id]}")
            seen[hadm_id] = path
        present = [hadm_id for hadm_id in hadm_ids if hadm_id in documents.index]
        skipped[f"{split}: HADM_ID without a discharge summary"] += len(hadm_ids) - len(present)
        rows = documents.loc[present]
        splits[split] = pd.DataFrame(
            dict(
                note_id=present,
                subject_id=rows.subject_id.tolist(),
                text=rows.text.tolist(),
                codes=[codes_by_admission.get(hadm_id, []) for hadm_id in present],
            )
        )
    return splits


def top_codes(splits: dict, num_codes: int) -> tuple:
    """The `num_codes` codes in the most documents (ties by code) and the codes tied at the cut."""
    counts = pd.concat([notes.codes for notes in splits.values()]).explode().dropna().value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    chosen = [code for code, _ in ranked[:num_codes]]
    cut_count = ranked[num_codes - 1][1] if len(ranked) >= num_codes else 0
    tied_out = [code for code, count in ranked[num_codes:] if count == cut_count]
    return chosen, tied_out


def restrict(splits: dict, labels: list, drop_empty: bool) -> dict:
    """Keeps only `labels` in each note's codes; drops notes left without codes if asked."""
    keep = set(labels)
    restricted = {}
    for split, notes in splits.items():
        notes = notes.assign(codes=[[c for c in codes if c in keep] for codes in notes.codes])
        if drop_empty:
            notes = notes[notes.codes.map(len) > 0].reset_index(drop=True)
        restricted[split] = notes
    return restricted


def prepare(
    mimic_dir: str,
    splits_dir: str,
    out_dir: str,
    top_codes_file: str = None,
    drop_notes_without_top_codes: bool = False,
) -> dict:
    """Writes `out_dir/mimic3_full` and `out_dir/mimic3_50`; returns their summaries."""
    tables.check_outside(out_dir, mimic_dir)
    skipped = tables.SkipCounter()
    splits = build_documents(mimic_dir, splits_dir, skipped)
    full_labels = sorted(
        {code for notes in splits.values() for codes in notes.codes for code in codes}
    )
    titles = read_titles(mimic_dir)
    described = "no D_ICD_DIAGNOSES / D_ICD_PROCEDURES tables: none"
    if titles is not None:
        known = sum(code in titles for code in full_labels)
        described = f"LONG_TITLE of {known:,} of {len(full_labels):,} codes"
    full_dir = dataset.write_dataset(
        os.path.join(out_dir, "mimic3_full"), splits, full_labels, titles
    )
    results = {
        full_dir: dataset_summary.summarize(
            full_dir,
            dict(
                skipped=skipped.report(),
                descriptions=described,
                label_count_note=(
                    f"{len(full_labels):,} codes, read as strings. The literature's 8,921 "
                    "(CAML) / 8,922 come from reading ICD9_CODE with type inference, which turns "
                    "codes such as 0389 into 389 and merges or renames them"
                ),
            ),
        )
    }
    if top_codes_file:
        labels = tables.read_code_list(top_codes_file)
        unseen = sorted(set(labels) - set(full_labels))
        preparation = dict(top_codes=f"from {top_codes_file}", codes_not_in_documents=unseen)
    else:
        labels, tied_out = top_codes(splits, NUM_TOP_CODES)
        preparation = dict(
            top_codes="most frequent in all splits", tied_at_cut_but_left_out=tied_out
        )
    preparation["notes_without_top_codes"] = "dropped" if drop_notes_without_top_codes else "kept"
    top_splits = restrict(splits, labels, drop_notes_without_top_codes)
    top_dir = dataset.write_dataset(
        os.path.join(out_dir, "mimic3_50"), top_splits, sorted(labels), titles
    )
    results[top_dir] = dataset_summary.summarize(top_dir, preparation)
    return results


def main(argv):
    del argv
    results = prepare(
        flags.FLAGS.mimic_dir,
        flags.FLAGS.splits_dir,
        flags.FLAGS.out_dir,
        flags.FLAGS.top_codes_file,
        flags.FLAGS.drop_notes_without_top_codes,
    )
    for dataset_dir, result in results.items():
        print(dataset_summary.format_summary(dataset_dir, result))
    logging.info("Summaries saved as summary.json in each dataset folder")


if __name__ == "__main__":
    flags.DEFINE_string("mimic_dir", None, "MIMIC-III v1.4 folder (read only).", required=True)
    flags.DEFINE_string(
        "splits_dir", None, "Folder with CAML's {train,dev,test}_full_hadm_ids.csv.", required=True
    )
    flags.DEFINE_string("out_dir", "data", "Folder that receives mimic3_full/ and mimic3_50/.")
    flags.DEFINE_string(
        "top_codes_file", None, "Top-50 codes, one a line (e.g. CAML's TOP_50_CODES.csv)."
    )
    flags.DEFINE_bool(
        "drop_notes_without_top_codes", False, "Drop mimic3_50 notes without a top-50 code."
    )
    app.run(main)
