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
"""

import json
import sys

from absl import app, flags

from longbert_tf.data import descriptions
from longbert_tf.framework import tf
from longbert_tf.serving import export

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
    for span_start, span_end in sorted(set(spans)):
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


def predict(serving, name: str, text: bytes, code_descriptions: dict, code_system: str) -> dict:
    """One note's codes: `{note, codes: [{code, probability, description, evidence}]}`
    (descriptions from `code_descriptions`, else titles of `code_system`, see
    `descriptions.describe`)."""
    # The signature replaces invalid UTF-8 the same way, so byte offsets refer to this copy.
    text = text.decode("utf-8", errors="replace").encode("utf-8")
    outputs = {key: value.numpy()[0] for key, value in serving(text=tf.constant([text])).items()}
    codes = []
    for k in range(outputs["num_codes"]):
        code = outputs["codes"][k].decode("utf-8")
        spans = [
            (int(start), int(end))
            for start, end in zip(outputs["evidence_start"][k], outputs["evidence_end"][k])
            if start >= 0
        ]
        matched = []
        if "match_start" in outputs and outputs["match_start"][k] >= 0:
            matched = [(int(outputs["match_start"][k]), int(outputs["match_end"][k]))]
        codes.append(
            dict(
                code=code,
                probability=round(float(outputs["code_probabilities"][k]), 4),
                description=descriptions.describe(code, code_descriptions, code_system),
                evidence=[text[s:e].decode("utf-8", errors="replace") for s, e in spans],
                evidence_spans=spans,
                matched_term="".join(
                    text[s:e].decode("utf-8", errors="replace") for s, e in matched
                ),
                matched_span=matched[0] if matched else None,
                passage=evidence_passage(text, matched + spans) if matched + spans else "",
            )
        )
    return dict(note=name, codes=codes)


def main(argv):
    paths = argv[1:]
    notes = [("<stdin>", sys.stdin.buffer.read())] if not paths else []
    for path in paths:
        with open(path, "rb") as note_file:
            notes.append((path, note_file.read()))
    loaded = tf.saved_model.load(export.latest_version(FLAGS.export_dir))
    if "text" not in loaded.signatures["serving_default"].structured_input_signature[1]:
        raise ValueError(
            f"{FLAGS.export_dir} takes token ids: predict needs a text-input export "
            "(experiments.export --inputs=text)"
        )
    code_descriptions, code_system = export.code_descriptions(loaded)
    if FLAGS.descriptions_file:
        code_descriptions.update(descriptions.read_descriptions(FLAGS.descriptions_file))
    results = [
        predict(loaded.signatures["serving_default"], name, text, code_descriptions, code_system)
        for name, text in notes
    ]
    if FLAGS.format == "json":
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for result in results:
        print(f"{result['note']}: {len(result['codes'])} codes")
        for code in result["codes"]:
            print(f"  {code['code']:<10} {code['probability']:.3f}  {code['description']}")
            if code["passage"]:
                print(f"             {code['passage']}")


if __name__ == "__main__":
    app.run(main)
