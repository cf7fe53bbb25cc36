"""Raw MIMIC-III and MIMIC-IV files in their published schema, written for tests.

Strings are double-quoted and numbers bare, as in the PhysioNet CSVs; empty
fields are empty. Files end in `.csv.gz` (gzip) unless asked otherwise.
"""

import gzip
import os

NOTEEVENTS = [
    "ROW_ID",
    "SUBJECT_ID",
    "HADM_ID",
    "CHARTDATE",
    "CHARTTIME",
    "STORETIME",
    "CATEGORY",
    "DESCRIPTION",
    "CGID",
    "ISERROR",
    "TEXT",
]
DIAGNOSES_ICD = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]
D_ICD_DIAGNOSES = ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"]
D_ICD_PROCEDURES = ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"]
PROCEDURES_ICD = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]
MIMIC4_DIAGNOSES = ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]
MIMIC4_D_ICD_DIAGNOSES = ["icd_code", "icd_version", "long_title"]
MIMIC4_DISCHARGE = [
    "note_id",
    "subject_id",
    "hadm_id",
    "note_type",
    "note_seq",
    "charttime",
    "storetime",
    "text",
]


def _field(value, quote_strings: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if quote_strings or any(c in value for c in ',"\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def write_table(path: str, header: list, rows: list, quote_strings: bool = True) -> str:
    """Writes `rows` (lists; None = empty field) under `header`, gzip-compressed if `.gz`.

    With `quote_strings` every string is quoted (MIMIC-III); without, only
    those that need it (MIMIC-IV).
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", newline="", encoding="utf-8") as table:
        table.write(",".join(_field(name, quote_strings) for name in header) + "\n")
        for row in rows:
            table.write(",".join(_field(value, quote_strings) for value in row) + "\n")
    return path


def note_row(row_id, subject_id, hadm_id, category, description, text, chartdate="2150-01-01"):
    return [
        row_id,
        subject_id,
        hadm_id,
        chartdate,
        None,
        None,
        category,
        description,
        None,
        None,
        text,
    ]


def code_row(row_id, subject_id, hadm_id, seq_num, code):
    return [row_id, subject_id, hadm_id, seq_num, code]
