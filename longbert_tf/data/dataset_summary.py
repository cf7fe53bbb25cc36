"""What a prepared dataset holds: notes, codes and lengths per split, saved as `summary.json`."""

import json
import os
import re

import numpy as np

from longbert_tf import files
from longbert_tf.data import dataset

PERCENTILES = (10, 25, 50, 75, 90, 99, 100)
WORD = re.compile(r"\w+|[^\w\s]")


def summarize(dataset_dir: str, preparation: dict) -> dict:
    """Counts per split and writes them, with `preparation` (skips, choices), to `summary.json`.

    `words` counts words and punctuation marks, the pieces BERT's basic
    tokenizer splits a text into before WordPiece; WordPiece token counts
    depend on the encoder's vocabulary (see `token_cache`).
    """
    labels = dataset.read_labels(dataset_dir)
    splits = {}
    train_codes = set()
    for split in dataset.SPLITS:
        notes = dataset.read_notes(dataset_dir, split)
        codes_per_note = notes.codes.map(len).to_numpy()
        words = np.array([len(WORD.findall(text)) for text in notes.text])
        split_codes = {code for codes in notes.codes for code in codes}
        if split == "train":
            train_codes = split_codes
        splits[split] = dict(
            notes=len(notes),
            patients=int(notes.subject_id.nunique()),
            distinct_codes=len(split_codes),
            codes_not_in_train=len(split_codes - train_codes),
            notes_without_codes=int(np.sum(codes_per_note == 0)),
            codes_per_note_mean=round(float(codes_per_note.mean()), 2) if len(notes) else 0.0,
            codes_per_note_max=int(codes_per_note.max()) if len(notes) else 0,
            words_per_note={
                str(q): float(np.percentile(words, q)) if len(notes) else 0.0 for q in PERCENTILES
            },
        )
    summary = dict(labels=len(labels), splits=splits, preparation=preparation)
    files.write_json(os.path.join(dataset_dir, dataset.SUMMARY_FILE), summary)
    return summary


def language(dataset_dir: str) -> str:
    """The notes' language as its preparation recorded it (`preparation.language`), else `en`."""
    path = os.path.join(dataset_dir, dataset.SUMMARY_FILE)
    if not os.path.exists(path):
        return "en"
    with open(path) as summary_file:
        return json.load(summary_file).get("preparation", {}).get("language", "en")


def format_summary(dataset_dir: str, summary: dict) -> str:
    """A few lines for the terminal."""
    lines = [f"{dataset_dir}: {summary['labels']:,} codes"]
    for split, counts in summary["splits"].items():
        lines.append(
            f"  {split:<5} {counts['notes']:>7,} notes, {counts['patients']:,} patients, "
            f"{counts['codes_per_note_mean']:.1f} codes/note, median "
            f"{counts['words_per_note']['50']:,.0f} words, "
            f"{counts['notes_without_codes']:,} without codes"
        )
    for key, value in summary["preparation"].items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)
