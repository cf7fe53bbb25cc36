"""The dataset format: a prepared dataset folder, read and written with validation.

A prepared dataset is a folder holding `labels.txt` (one code a line, in
label-index order) and, per split, `{split}.jsonl.gz`: one JSON object a line
with `note_id` (str), `subject_id` (str), `text` (str) and `codes` (list of str).
Every training code is listed in `labels.txt`; dev and test notes may hold codes
outside it (a label space their own codes did not choose), which stay gold codes
that every metric counts as missed. An empty text is allowed (it becomes a single
`[CLS] [SEP]` segment), and so is an empty code list (a note with no codes is a
negative for every code). A note may also hold `evidence`: the words behind its
codes, one object per mention, `{"code": str, "spans": [[start, end], ...]}`
(the mention's fragments as Unicode code point offsets into `text`, each
non-empty; the code one of the note's `codes`), as annotators mark them (CodiEsp's
X files). Optionally `descriptions.tsv`: each code's description (see
`longbert_tf.data.descriptions`). Every `data_prep` module writes this format.
"""

import gzip
import hashlib
import json
import os

import numpy as np
import pandas as pd

from longbert_tf import files
from longbert_tf.data import descriptions

SPLITS = ("train", "dev", "test")
NOTE_COLUMNS = ("note_id", "subject_id", "text", "codes")
EVIDENCE = "evidence"  # the optional column of the module docstring
LABELS_FILE = "labels.txt"
SUMMARY_FILE = "summary.json"  # written by `dataset_summary.summarize`
# Derived from the notes and kept when a dataset is written again (see `token_cache`).
TOKEN_CACHE_DIR = "token_cache"
# What a dataset folder holds: the files above, `descriptions.tsv`, the preparation's
# summary and plot, and the caches the package derives (token ids, description
# embeddings, CAML's words, encoders built for the dataset). A folder holding
# anything else is never replaced.
DATASET_ENTRIES = (
    LABELS_FILE,
    "*.jsonl.gz",
    descriptions.DESCRIPTIONS_FILE,
    SUMMARY_FILE,
    "token_lengths.png",
    TOKEN_CACHE_DIR,
    descriptions.EMBEDDING_CACHE_DIR,
    "caml",
    "encoders",
)


def notes_path(dataset_dir: str, split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    return os.path.join(dataset_dir, f"{split}.jsonl.gz")


def _check_note(record, path: str, line_number: int) -> None:
    where = f"{path}, line {line_number}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for column in NOTE_COLUMNS:
        if column not in record:
            raise ValueError(f"{where}: field {column!r} is missing")
    for column in ("note_id", "subject_id", "text"):
        if not isinstance(record[column], str):
            raise ValueError(
                f"{where}: field {column!r} must be a string, got {record[column]!r:.80}"
            )
    codes = record["codes"]
    if not isinstance(codes, list) or not all(isinstance(code, str) for code in codes):
        raise ValueError(f"{where}: field 'codes' must be a list of strings, got {codes!r:.80}")
    if record.get(EVIDENCE) is not None:
        _check_evidence(record, where)


def _check_evidence(record: dict, where: str) -> None:
    mentions = record[EVIDENCE]
    if not isinstance(mentions, list):
        raise ValueError(f"{where}: field 'evidence' must be a list, got {mentions!r:.80}")
    length, codes = len(record["text"]), set(record["codes"])
    for number, mention in enumerate(mentions, start=1):
        at = f"{where}: evidence {number}"
        if not isinstance(mention, dict) or set(mention) != {"code", "spans"}:
            raise ValueError(f"{at} must be an object with 'code' and 'spans', got {mention!r:.80}")
        if mention["code"] not in codes:
            raise ValueError(f"{at}: code {mention['code']!r:.40} is not one of the note's codes")
        spans = mention["spans"]
        if not isinstance(spans, list) or not spans:
            raise ValueError(f"{at}: 'spans' must be a non-empty list of [start, end]")
        for span in spans:
            valid = isinstance(span, list) and len(span) == 2
            valid = valid and all(isinstance(offset, int) for offset in span)
            if not valid or not 0 <= span[0] < span[1] <= length:
                raise ValueError(
                    f"{at}: span {span!r:.40} is not [start, end] with 0 <= start < end <= "
                    f"{length:,} (the text's length in code points)"
                )


def read_notes(dataset_dir: str, split: str) -> pd.DataFrame:
    """Reads one split: columns `note_id`, `subject_id`, `text` (str) and `codes` (list of str),
    and `evidence` (list, or None for a note without) when a note of the split has it."""
    path = notes_path(dataset_dir, split)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: prepare the dataset with one of the data_prep modules"
        )
    records = []
    first_line = {}
    with gzip.open(path, "rt", encoding="utf-8") as notes_file:
        for line_number, line in enumerate(notes_file, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({error})") from None
            _check_note(record, path, line_number)
            note_id = record["note_id"]
            if note_id in first_line:
                raise ValueError(
                    f"{path}, line {line_number}: note_id {note_id!r} repeats line "
                    f"{first_line[note_id]}"
                )
            first_line[note_id] = line_number
            records.append([record.get(column) for column in (*NOTE_COLUMNS, EVIDENCE)])
    notes = pd.DataFrame(records, columns=[*NOTE_COLUMNS, EVIDENCE])
    return notes if notes[EVIDENCE].notna().any() else notes.drop(columns=EVIDENCE)


def read_labels(dataset_dir: str) -> list:
    """Reads `labels.txt`: the codes in label-index order."""
    path = os.path.join(dataset_dir, LABELS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: prepare the dataset with one of the data_prep modules"
        )
    with open(path, encoding="utf-8") as labels_file:
        labels = files.split_lines(labels_file.read())
    first_line = {}
    for line_number, code in enumerate(labels, start=1):
        if not code.strip() or code != code.strip():
            raise ValueError(f"{path}, line {line_number}: blank or padded code {code!r}")
        if code in first_line:
            raise ValueError(
                f"{path}, line {line_number}: code {code!r} repeats line {first_line[code]}"
            )
        first_line[code] = line_number
    if not labels:
        raise ValueError(f"{path} lists no codes")
    return labels


def require_notes(
    dataset_dir: str, split: str, prepared_by: str = "with the data_prep module that wrote it"
) -> None:
    """Raises unless `split` holds a note (reads one line); `prepared_by` says how to prepare it."""
    path = notes_path(dataset_dir, split)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: prepare the dataset {prepared_by}")
    with gzip.open(path, "rt", encoding="utf-8") as notes_file:
        if any(line.strip() for line in notes_file):
            return
    raise ValueError(
        f"{path} holds no notes: the {split} split is empty; prepare the dataset again "
        f"{prepared_by}"
    )


def labels_fingerprint(labels: list) -> str:
    """Identifies a label list and its order: equal fingerprints give equal label indices."""
    return hashlib.sha256("".join(f"{code}\n" for code in labels).encode()).hexdigest()[:16]


def label_ids(notes: pd.DataFrame, labels: list) -> list:
    """Each note's codes in `labels` as sorted, unique label indices (others left out)."""
    index = {code: position for position, code in enumerate(labels)}
    return [sorted({index[code] for code in codes if code in index}) for codes in notes.codes]


def mention_texts(notes: pd.DataFrame, labels: list) -> list:
    """`(label index, words)` of every evidence mention of a code in `labels` (none without the
    evidence column): the mention's fragments of the note's text, joined by a space."""
    if EVIDENCE not in notes.columns:
        return []
    index = {code: position for position, code in enumerate(labels)}
    return [
        (index[mention["code"]], " ".join(text[start:end] for start, end in mention["spans"]))
        for text, mentions in zip(notes.text, notes[EVIDENCE])
        if isinstance(mentions, list)
        for mention in mentions
        if mention["code"] in index
    ]


def outside_codes(notes: pd.DataFrame, labels: list) -> np.ndarray:
    """int64 `[notes]`: each note's distinct codes outside `labels` (gold codes no score covers)."""
    space = set(labels)
    return np.array([len(set(codes) - space) for codes in notes.codes], np.int64)


def check_training_codes(notes: pd.DataFrame, labels: list, source: str) -> None:
    """Raises ValueError naming the first training note with a code outside `labels`."""
    space = set(labels)
    for row, (note_id, codes) in enumerate(zip(notes.note_id, notes.codes), start=1):
        unknown = sorted(set(codes) - space)
        if unknown:
            raise ValueError(
                f"{source}, note {row} (note_id {note_id!r}): codes {unknown} are not in "
                f"{LABELS_FILE}; every training code must be in the label space"
            )


def write_dataset(
    dataset_dir: str, splits: dict, labels: list, code_descriptions: dict | None = None
) -> str:
    """Writes `{split: notes DataFrame}`, `labels` and `{code: description}` (if given; only
    the labels' are kept) in the dataset format, atomically.

    The folder appears complete or not at all; an existing one is replaced
    when it holds only what a dataset folder does (`DATASET_ENTRIES`), keeping
    its token and description-embedding caches (keyed by content, so stale
    entries are never used).
    """
    check_training_codes(splits["train"], labels, source="train notes to write")
    with files.atomic_dir(dataset_dir, DATASET_ENTRIES) as temporary:
        with open(os.path.join(temporary, LABELS_FILE), "w", encoding="utf-8") as labels_file:
            labels_file.writelines(f"{code}\n" for code in labels)
        if code_descriptions is not None:
            descriptions.write_descriptions(
                temporary, {code: code_descriptions.get(code, "") for code in labels}
            )
        for split, notes in splits.items():
            columns = [*NOTE_COLUMNS, *([EVIDENCE] if EVIDENCE in notes.columns else [])]
            with gzip.open(notes_path(temporary, split), "wt", encoding="utf-8") as notes_file:
                for row, record in enumerate(notes[columns].to_dict("records"), start=1):
                    if pd.api.types.is_scalar(record.get(EVIDENCE)) and pd.isna(
                        record.get(EVIDENCE)
                    ):
                        record.pop(EVIDENCE, None)  # a note without evidence
                    _check_note(record, f"{split} notes to write", row)
                    notes_file.write(json.dumps(record, ensure_ascii=False) + "\n")
        for cache in (TOKEN_CACHE_DIR, descriptions.EMBEDDING_CACHE_DIR):
            if os.path.isdir(os.path.join(dataset_dir, cache)):
                os.rename(os.path.join(dataset_dir, cache), os.path.join(temporary, cache))
    return dataset_dir
