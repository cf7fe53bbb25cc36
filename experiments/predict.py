"""Codes for clinical notes from an exported model, with descriptions and evidence.

    python -m experiments.predict --export_dir=exports/coder note1.txt note2.txt
    cat note.txt | python -m experiments.predict --export_dir=exports/coder --format=json

For each note: every code whose probability reaches the model's threshold, its
description (the dataset's, which the export carries; `--descriptions_file`, a
`code<TAB>description` file such as CAML's `ICD9_descriptions`, adds or
overrides some; an ICD-10-CM code without one gets its `simple-icd-10-cm`
title, codes of other classifications never do) and the
evidence: the passage around the code's matched term (exports of a run fused
with term matching, `experiments.fuse`) or else the tokens the code's label
attention weighs most, with the term and those tokens marked `[[...]]`.

    python -m experiments.predict --export_dir=exports/codiesp \
        --translation_dir=codiesp/test/text_files_en codiesp/test/text_files/*.txt

gives an export that reads each note's translation too (`coder.TranslationCoder`:
a model trained on the English translation, a dictionary matching the Spanish
original) the note of the same file name in `--translation_dir`; the matched
terms are marked in the note, the attention's tokens in the translation
(`evidence_in: translation`, `translation_passage`).
"""

import json
import os
import sys

from absl import app, flags

from longbert_tf.data import descriptions
from longbert_tf.serving import suggestions

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "export_dir",
    None,
    "A text-input export of experiments.export: a version folder, or a model base folder "
    "(its highest version is used).",
    required=True,
)
flags.DEFINE_enum("format", "text", ["text", "json"], "text for people, json for programs.")
flags.DEFINE_string(
    "descriptions_file", None, "code<TAB>description lines beside those the export carries."
)
flags.DEFINE_string(
    "translation_dir",
    None,
    "For an export that reads each note's translation too: the folder holding them, each "
    "under its note's file name.",
)
CONTEXT_BYTES = 60


def evidence_passage(text: bytes, spans: list) -> str:
    """The text around the strongest evidence span, it and nearby evidence marked [[...]].

    `spans` are byte ranges `(start, end)`, strongest first.
    """
    top_start = spans[0][0]
    spans = [(s, e) for s, e in spans if abs(s - top_start) <= 2 * CONTEXT_BYTES]
    start = max(0, min(s for s, _ in spans) - CONTEXT_BYTES)
    end = min(len(text), max(e for _, e in spans) + CONTEXT_BYTES)
    pieces, cursor = [], start
    # Of spans starting together the longest is marked (a matched term over its tokens).
    for span_start, span_end in sorted(set(spans), key=lambda span: (span[0], -span[1])):
        if span_start < cursor:
            continue
        pieces += [text[cursor:span_start], b"[[", text[span_start:span_end], b"]]"]
        cursor = span_end
    pieces.append(text[cursor:end])
    passage = b"".join(pieces).decode("utf-8", errors="replace")
    return (
        ("..." if start > 0 else "")
        + " ".join(passage.split())
        + ("..." if end < len(text) else "")
    )


def as_json(name: str, note: suggestions.NoteSuggestions) -> dict:
    """The JSON form of a note's codes (byte offsets into its UTF-8 text)."""
    attended_text = note.utf8 if note.translation is None else note.translation
    codes = []
    for code in note.codes:
        matched = [code.matched_span] if code.matched_span else []
        attended = code.byte_spans
        in_note = matched + (attended if note.translation is None else [])
        result = dict(
            code=code.code,
            probability=round(code.probability, 4),
            description=code.description,
            evidence=[attended_text[s:e].decode("utf-8", errors="replace") for s, e in attended],
            evidence_spans=attended,
            matched_term="".join(
                note.utf8[s:e].decode("utf-8", errors="replace") for s, e in matched
            ),
            matched_span=matched[0] if matched else None,
            passage=evidence_passage(note.utf8, in_note) if in_note else "",
        )
        if note.translation is not None:
            result["evidence_in"] = "translation"
            result["translation_passage"] = (
                evidence_passage(note.translation, attended) if attended else ""
            )
        codes.append(result)
    return dict(note=name, codes=codes)


def read_translations(paths: list) -> list:
    """The translation of each note file: `--translation_dir`'s file of the same name."""
    if not FLAGS.translation_dir or not paths:
        raise app.UsageError(
            f"{FLAGS.export_dir} reads each note's translation too: name the note files and "
            "--translation_dir, the folder of their translations"
        )
    translations = []
    for path in paths:
        translated = os.path.join(FLAGS.translation_dir, os.path.basename(path))
        if not os.path.exists(translated):
            raise app.UsageError(f"{path} has no translation: {translated} does not exist")
        with open(translated, "rb") as translation_file:
            translations.append(translation_file.read())
    return translations


def main(argv):
    paths = argv[1:]
    notes = [("<stdin>", sys.stdin.buffer.read())] if not paths else []
    for path in paths:
        with open(path, "rb") as note_file:
            notes.append((path, note_file.read()))
    extra = {}
    if FLAGS.descriptions_file:
        extra = descriptions.read_descriptions(FLAGS.descriptions_file)
    suggester = suggestions.Suggester(FLAGS.export_dir, extra)
    translations = None
    if suggester.reads_translation:
        translations = read_translations(paths)
    elif FLAGS.translation_dir:
        raise app.UsageError(f"{suggester.path} reads the notes alone: drop --translation_dir")
    found = suggester.suggest([text for _, text in notes], translations)
    results = [as_json(name, note) for (name, _), note in zip(notes, found)]
    if FLAGS.format == "json":
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for result in results:
        print(f"{result['note']}: {len(result['codes'])} codes")
        for code in result["codes"]:
            print(f"  {code['code']:<10} {code['probability']:.3f}  {code['description']}")
            if code["passage"]:
                print(f"             {code['passage']}")
            if code.get("translation_passage"):
                print(f"             (translation) {code['translation_passage']}")


if __name__ == "__main__":
    app.run(main)
