"""CodiEsp clinical cases (English translation) with ICD-10-CM diagnosis codes: `codiesp_dx`.

    python -m data_prep.codiesp --codiesp_dir=../shared/data/codiesp --out_dir=data

Reads the CodiEsp release layout (Miranda-Escalada et al., CLEF eHealth 2020;
CC BY 4.0): `train/`, `dev/`, `test/`, any subset of them, each with
`text_files_en/<case-id>.txt` and `<split>D.tsv` (case id, code; no header).
A document is one case (`note_id` = `subject_id` = case id); codes are
upper-cased (`n44.8` -> `N44.8`). The label space is every code of the
prepared documents.

The train split is required. Without the release's `test/`, a deterministic
fifth of the train cases (by a hash of the case id) becomes the test split, so
that dev can pick the checkpoint and threshold and test stays unseen; the
summary says so. Without `dev/`, a fifth of the remaining train cases is dev.
"""

import functools
import glob
import hashlib
import os

import pandas as pd
from absl import app, flags, logging

from data_prep import tables
from longbert_tf import dataset, dataset_summary, descriptions

HELD_OUT_SHARE = 0.2


def read_utf8(path: str) -> str:
    """The text of a release file; an error names the file and the first byte that is not UTF-8."""
    with open(path, "rb") as source:
        raw = source.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 at byte {error.start} ({raw[error.start : error.start + 4]!r}); "
            "CodiEsp's files are UTF-8: re-encode or replace this file"
        ) from None


def read_release_split(codiesp_dir: str, split: str, skipped: tables.SkipCounter) -> pd.DataFrame:
    """Notes of one release split, in case-id order."""
    split_dir = os.path.join(codiesp_dir, split)
    labels_path = os.path.join(split_dir, f"{split}D.tsv")
    if not os.path.exists(labels_path):
        raise FileNotFoundError(
            f"{labels_path} does not exist (CodiEsp layout: {split}/{split}D.tsv)"
        )
    codes = {}
    for line_number, line in enumerate(
        read_utf8(labels_path).replace("\r\n", "\n").split("\n"), start=1
    ):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise ValueError(f"{labels_path}, line {line_number}: expected 'case-id<TAB>code'")
        case_id, code = fields[0].strip(), fields[1].strip().upper()
        if code in codes.setdefault(case_id, []):
            skipped[f"{split}: duplicate code of a case"] += 1
        else:
            codes[case_id].append(code)
    texts = {
        os.path.basename(path)[: -len(".txt")]: path
        for path in glob.glob(os.path.join(split_dir, "text_files_en", "*.txt"))
    }
    if not texts:
        raise FileNotFoundError(f"{split_dir}/text_files_en/ holds no .txt files")
    skipped[f"{split}: coded case without a text file"] += len(set(codes) - set(texts))
    rows = []
    for case_id in sorted(texts):
        text = read_utf8(texts[case_id]).strip()
        rows.append([case_id, case_id, text, sorted(codes.get(case_id, []))])
    return pd.DataFrame(rows, columns=list(dataset.NOTE_COLUMNS))


def _held_out(case_id: str, split: str) -> bool:
    digest = hashlib.sha256(f"{split}:{case_id}".encode()).hexdigest()
    return int(digest[:12], 16) / 16**12 < HELD_OUT_SHARE


def prepare(codiesp_dir: str, out_dir: str) -> dict:
    """Writes `out_dir/codiesp_dx` and returns its summary."""
    if not os.path.isdir(os.path.join(codiesp_dir, "train")):
        raise FileNotFoundError(
            f"{codiesp_dir}/train/ does not exist: not a CodiEsp release folder"
        )
    skipped = tables.SkipCounter()
    splits = {}
    preparation = {}
    for split in dataset.SPLITS:
        if os.path.isdir(os.path.join(codiesp_dir, split)):
            splits[split] = read_release_split(codiesp_dir, split, skipped)
            preparation[split] = f"release {split}/"
    for split in ("test", "dev"):
        if split not in splits:
            train = splits["train"]
            held_out = train.note_id.map(functools.partial(_held_out, split=split))
            splits[split] = train[held_out].reset_index(drop=True)
            splits["train"] = train[~held_out].reset_index(drop=True)
            preparation[split] = f"{HELD_OUT_SHARE:.0%} of release train/ by case-id hash"
    labels = sorted({code for notes in splits.values() for codes in notes.codes for code in codes})
    preparation["skipped"] = skipped.report()
    titles = descriptions.icd10cm_titles(labels)
    preparation["descriptions"] = f"ICD-10-CM titles of {len(titles):,} of {len(labels):,} codes"
    dataset_dir = dataset.write_dataset(os.path.join(out_dir, "codiesp_dx"), splits, labels, titles)
    return dataset_summary.summarize(dataset_dir, preparation)


def main(argv):
    del argv
    result = prepare(flags.FLAGS.codiesp_dir, flags.FLAGS.out_dir)
    dataset_dir = os.path.join(flags.FLAGS.out_dir, "codiesp_dx")
    print(dataset_summary.format_summary(dataset_dir, result))
    logging.info("Summary saved as %s/summary.json", dataset_dir)


if __name__ == "__main__":
    flags.DEFINE_string(
        "codiesp_dir", None, "CodiEsp release folder (train/, dev/, test/).", required=True
    )
    flags.DEFINE_string("out_dir", "data", "Folder that receives codiesp_dx/.")
    app.run(main)
