"""CodiEsp clinical cases with ICD-10-CM diagnosis codes: `codiesp_dx`.

    python -m data_prep.codiesp --codiesp_dir=../shared/data/codiesp --out_dir=data
    python -m data_prep.codiesp --codiesp_dir=../shared/data/codiesp --language=es

Reads the CodiEsp release layout (Miranda-Escalada et al., CLEF eHealth 2020;
CC BY 4.0): `train/`, `dev/`, `test/`, any subset of them, each with the cases'
texts, `text_files_en/<case-id>.txt` (the organisers' English translation,
`--language=en`) or `text_files/<case-id>.txt` (the Spanish originals, `es`),
and `<split>D.tsv` (case id, code; no header). A document is one case
(`note_id` = `subject_id` = case id); codes are upper-cased (`n44.8` -> `N44.8`).

The Spanish notes carry the annotators' evidence when the split has
`<split>X.tsv` (case id, `DIAGNOSTICO` or `PROCEDIMIENTO`, code, the quoted
words, their character offsets as `start end` fragments joined by `;`): each
diagnosis line becomes a mention of the dataset's `evidence`. Its fragments must
cut the quoted words out of the text (white space runs counted as one space,
empty fragments dropped); a fragment whose edges hold a space or a
punctuation mark the quote leaves out (a handful of lines of the release) is
trimmed to the words, and counted; any other difference is an error naming the
file and line. The English translation has no offsets, so no evidence.

The label space never depends on dev or test (`--label_space`): `train`
(default), the codes of the release's `train/`; or `icd10cm`, every code a
CodiEsp annotation can take (`icd10cm_space`), plus any code of the release's
`train/` outside it (the summary names them). Both read the whole `train/`
folder, so `labels.txt` is the same whether or not the release has `test/`.
`train` is the default because it scores better on dev (README, CodiEsp).
Dev and test codes outside the space stay gold codes, which every metric
counts as missed; the summary counts those pairs.

The train split is required. Without the release's `test/`, a deterministic
fifth of the train cases (by a hash of the case id) becomes the test split, so
that dev can pick the checkpoint and threshold and test stays unseen; the
summary says so. Without `dev/`, a fifth of the remaining train cases is dev.

`--dev_trains` writes the final model's dataset: dev's notes join train (and
the label space's source), dev stays a split for the pipeline, and test is
untouched. Steps, threshold and fusion then come from a run that held dev out
(`benchmarks/codiesp_best.py --final`).
"""

import functools
import glob
import hashlib
import os

import pandas as pd
from absl import app, flags, logging

from data_prep import tables
from longbert_tf.data import dataset, dataset_summary, descriptions

HELD_OUT_SHARE = 0.2
LABEL_SPACES = ("icd10cm", "train")
TEXT_FOLDERS = {"en": "text_files_en", "es": "text_files"}
TEXT_NAMES = {
    "en": "the organisers' English translation",
    "es": "the Spanish originals, with the X files' evidence",
}


def icd10cm_space() -> list:
    """Every ICD-10-CM diagnosis code `simple-icd-10-cm` knows as CodiEsp writes codes.

    Categories, subcategories and leaves, not only leaves: CodiEsp was coded
    with an earlier ICD-10-CM, in which codes such as R05 (cough) or R51
    (headache) had no children yet, and its annotations use them. A code with a
    seventh character (S39.94XA) is cut to its first six (S39.94X), the form
    CodiEsp annotates. Chapters and blocks are ranges, not codes. About 50,000
    codes.
    """
    icd10cm = descriptions.icd10cm()
    codes = set()
    for code in icd10cm.get_all_codes(True):
        if not icd10cm.is_chapter_or_block(code):
            codes.add(code[:-1] if icd10cm.is_extended_subcategory(code) else code)
    return sorted(codes)


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


def read_release_split(
    codiesp_dir: str, split: str, skipped: tables.SkipCounter, language: str = "en"
) -> pd.DataFrame:
    """Notes of one release split in `language` (`TEXT_FOLDERS`), in case-id order, with the
    `evidence` of `<split>X.tsv` for the Spanish notes when the split has it."""
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
    folder = os.path.join(split_dir, TEXT_FOLDERS[language])
    paths = {
        os.path.basename(path)[: -len(".txt")]: path
        for path in glob.glob(os.path.join(folder, "*.txt"))
    }
    if not paths:
        raise FileNotFoundError(f"{folder}/ holds no .txt files")
    skipped[f"{split}: coded case without a text file"] += len(set(codes) - set(paths))
    # Texts as written, edges stripped; `lead` counts what the start lost (offsets move by it).
    raw = {case_id: read_utf8(path) for case_id, path in paths.items()}
    texts = {case_id: text.strip() for case_id, text in raw.items()}
    lead = {case_id: len(text) - len(text.lstrip()) for case_id, text in raw.items()}
    evidence_path = os.path.join(split_dir, f"{split}X.tsv")
    evidence = None
    if language == "es" and os.path.exists(evidence_path):
        evidence = read_evidence(evidence_path, texts, lead, codes, skipped)
    rows = []
    for case_id in sorted(texts):
        row = [case_id, case_id, texts[case_id], sorted(codes.get(case_id, []))]
        rows.append(row if evidence is None else [*row, evidence.get(case_id, [])])
    columns = [*dataset.NOTE_COLUMNS, *([] if evidence is None else [dataset.EVIDENCE])]
    return pd.DataFrame(rows, columns=columns)


def read_evidence(
    path: str, texts: dict, lead: dict, codes: dict, skipped: tables.SkipCounter
) -> dict:
    """`{case_id: [{code, spans}]}`: the diagnosis lines of an X file, as offsets into
    `texts` (stripped of `lead[case_id]` leading characters). Raises ValueError naming the
    line when it is malformed, names a case without text or a code its case lacks, or cuts
    other words than it quotes (beyond a trimmable edge, see the module docstring)."""
    evidence = {}
    lines = read_utf8(path).replace("\r\n", "\n").split("\n")
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {line_number}"
        fields = line.split("\t")
        if len(fields) != 5:
            raise ValueError(f"{where}: expected case-id, type, code, words and offsets (5 fields)")
        case_id, kind, code, words, offsets = fields
        if kind != "DIAGNOSTICO":
            continue
        code = code.strip().upper()
        if case_id not in texts:
            raise ValueError(f"{where}: case {case_id!r} has no text file")
        if code not in codes.get(case_id, []):
            raise ValueError(f"{where}: code {code} is not among case {case_id}'s codes")
        try:
            spans = [
                [int(offset) - lead[case_id] for offset in fragment.split()]
                for fragment in offsets.split(";")
            ]
        except ValueError:
            spans = []
        if not spans or any(len(span) != 2 for span in spans):
            raise ValueError(
                f"{where}: offsets {offsets!r} are not 'start end' fragments joined by ';'"
            )
        text = texts[case_id]
        if any(not 0 <= start <= end <= len(text) for start, end in spans):
            raise ValueError(
                f"{where}: offsets {offsets!r} fall outside the text ({len(text):,} characters)"
            )
        fragments = [span for span in spans if span[0] < span[1]]  # empty ones are noise
        quoted = " ".join(words.split())
        if _cut(text, fragments) != quoted:
            fragments = [span for span in map(functools.partial(_trimmed, text), spans) if span]
            if _cut(text, fragments) != quoted:
                raise ValueError(
                    f"{where}: offsets {offsets!r} cut {_cut(text, spans)!r}, not the quoted "
                    f"words {words!r}"
                )
            skipped["evidence: fragment edges trimmed to the quoted words"] += 1
        if not fragments:
            raise ValueError(f"{where}: offsets {offsets!r} cut no words")
        evidence.setdefault(case_id, []).append(dict(code=code, spans=fragments))
    return evidence


def _cut(text: str, spans: list) -> str:
    """The words `spans` cut out of `text`, white space runs as one space."""
    return " ".join(" ".join(text[start:end] for start, end in spans).split())


def _trimmed(text: str, span: list) -> list:
    """`span` without the spaces and punctuation at its edges ([] when nothing is left)."""
    start, end = span
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return [start, end] if start < end else []


def _held_out(case_id: str, split: str) -> bool:
    digest = hashlib.sha256(f"{split}:{case_id}".encode()).hexdigest()
    return int(digest[:12], 16) / 16**12 < HELD_OUT_SHARE


def label_space(kind: str, release_train: pd.DataFrame, source: str = "release train/") -> tuple:
    """`(labels, note)` of a `LABEL_SPACES` kind from the training notes of the release
    (`source` names them); `note` says what the space holds for the summary."""
    train_codes = {code for codes in release_train.codes for code in codes}
    if kind == "train":
        return sorted(train_codes), f"the {len(train_codes):,} codes of {source}"
    if kind != "icd10cm":
        raise ValueError(f"label_space={kind!r}: choose from {LABEL_SPACES}")
    space = icd10cm_space()
    added = sorted(train_codes - set(space))
    note = (
        f"{len(space):,} ICD-10-CM codes (simple-icd-10-cm) and {len(added)} codes of {source} "
        f"outside them: {', '.join(added)}"
    )
    return sorted(set(space) | train_codes), note


def prepare(
    codiesp_dir: str,
    out_dir: str,
    label_space_kind: str = "train",
    code_text=("title",),
    dev_trains: bool = False,
    language: str = "en",
) -> dict:
    """Writes `out_dir/codiesp_dx` of the `language` notes (`TEXT_FOLDERS`) with the
    `label_space_kind` label space and descriptions made of the `code_text` parts
    (`descriptions.icd10cm_code_text`); returns its summary.
    With `dev_trains`, dev's notes train too (and join the label space's source): the final
    model of a recipe chosen on dev, whose dev figures are then not held out."""
    if not os.path.isdir(os.path.join(codiesp_dir, "train")):
        raise FileNotFoundError(
            f"{codiesp_dir}/train/ does not exist: not a CodiEsp release folder"
        )
    skipped = tables.SkipCounter()
    splits = {}
    preparation = {}
    for split in dataset.SPLITS:
        if os.path.isdir(os.path.join(codiesp_dir, split)):
            splits[split] = read_release_split(codiesp_dir, split, skipped, language)
            preparation[split] = f"release {split}/"
    preparation["text"] = f"{TEXT_NAMES[language]} ({TEXT_FOLDERS[language]}/)"
    preparation["language"] = language
    annotated, source = splits["train"], "release train/"
    if dev_trains and "dev" in splits:
        annotated, source = pd.concat([splits["train"], splits["dev"]]), "release train/ and dev/"
    labels, preparation["label_space"] = label_space(label_space_kind, annotated, source)
    for split in ("test", "dev"):
        if split not in splits:
            train = splits["train"]
            held_out = train.note_id.map(functools.partial(_held_out, split=split))
            splits[split] = train[held_out].reset_index(drop=True)
            splits["train"] = train[~held_out].reset_index(drop=True)
            preparation[split] = f"{HELD_OUT_SHARE:.0%} of release train/ by case-id hash"
    if dev_trains:
        splits["train"] = pd.concat([splits["train"], splits["dev"]], ignore_index=True)
        preparation["train"] = f"{preparation['train']} and dev (dev trains: not held out)"
    preparation["outside_label_space"] = tables.outside_label_space(splits, labels)
    preparation["skipped"] = skipped.report()
    texts = {code: descriptions.icd10cm_code_text(code, code_text) for code in labels}
    titles = {code: text for code, text in texts.items() if text}
    preparation["descriptions"] = (
        f"ICD-10-CM {' + '.join(code_text)} of {len(titles):,} of {len(labels):,} codes"
    )
    dataset_dir = dataset.write_dataset(os.path.join(out_dir, "codiesp_dx"), splits, labels, titles)
    return dataset_summary.summarize(dataset_dir, preparation)


def main(argv):
    del argv
    result = prepare(
        flags.FLAGS.codiesp_dir,
        flags.FLAGS.out_dir,
        flags.FLAGS.label_space,
        flags.FLAGS.code_text,
        flags.FLAGS.dev_trains,
        flags.FLAGS.language,
    )
    dataset_dir = os.path.join(flags.FLAGS.out_dir, "codiesp_dx")
    print(dataset_summary.format_summary(dataset_dir, result))
    logging.info("Summary saved as %s/summary.json", dataset_dir)


if __name__ == "__main__":
    flags.DEFINE_string(
        "codiesp_dir", None, "CodiEsp release folder (train/, dev/, test/).", required=True
    )
    flags.DEFINE_string("out_dir", "data", "Folder that receives codiesp_dx/.")
    flags.DEFINE_enum(
        "label_space",
        "train",
        list(LABEL_SPACES),
        "train: the codes of the release's train/ folder; icd10cm: every ICD-10-CM code CodiEsp "
        "can use (about 50,000) and any training code outside them. Never dev's or test's.",
    )
    flags.DEFINE_multi_enum(
        "code_text",
        ["title"],
        list(descriptions.CODE_TEXT_PARTS),
        "What a code's description (descriptions.tsv, which label attention reads with "
        "label_init=descriptions) holds, in the order title, category, block, inclusion: the "
        "code's title, its category's title, its block's title, its inclusion terms.",
    )
    flags.DEFINE_enum(
        "language",
        "en",
        list(TEXT_FOLDERS),
        "en: the organisers' English translation (text_files_en/); es: the Spanish originals "
        "(text_files/), with the annotators' evidence of the X files.",
    )
    flags.DEFINE_bool(
        "dev_trains",
        False,
        "Dev's notes train too (the final model of a recipe chosen on dev; dev stays a split, "
        "but its figures are no longer held out).",
    )
    app.run(main)
