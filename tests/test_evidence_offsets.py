"""A fused export's matched terms, as `experiments.predict` (UTF-8 byte offsets) and the review
API (code point offsets) give them, are the terms as the note writes them, whatever characters
come before and around them."""

import json
import os
import re

import pytest

from longbert_tf import run_folder
from longbert_tf.data import dataset, synthetic
from longbert_tf.lexical.term_matcher import TermIndex
from longbert_tf.review import server as review_server
from longbert_tf.serving import export, suggestions
from tests.conftest import predict_json
from tests.term_reference import reference_match
from tests.trained_run import TRAINED_SYNTHETIC

pytestmark = pytest.mark.slow  # trains, fits a fusion and exports

# Before every note: characters whose UTF-8 length changes when lower-cased (U+0130 2 -> 3
# bytes, the Kelvin sign 3 -> 1), an eszett, a NUL byte, a combining accent, a 4-byte emoji,
# Spanish and a CRLF line end.
AWKWARD = "İ \u212a ß \x00 e\u0301 😀 Fractura de fémur IZQUIERDO.\r\n"
# Between a mention's context ("Diagnosed with") and its phrase: no word, and not ASCII.
BEFORE_PHRASE = "\x00😀 "
PHRASES = synthetic.make_code_table(TRAINED_SYNTHETIC).phrases


def written(phrase: str) -> str:
    """A code's phrase as the awkward notes write it: upper case, a K as the Kelvin sign."""
    return phrase.upper().replace("K", "\u212a")


def awkward_note(text: str) -> tuple:
    """`(note, mentions)`: synthetic note `text` with `AWKWARD` before it, CRLF between its
    sentences, each code phrase it mentions `written` after `BEFORE_PHRASE`; `mentions[code]`
    the UTF-8 byte spans where a matched term of an affirmed mention may lie: from the start
    of one of the mention's words to the end of its phrase."""
    code_of = {phrase: code for code, phrase in PHRASES.items()}
    alternatives = "|".join(map(re.escape, PHRASES.values()))
    mention = re.compile(rf"(.+) ({alternatives})\.")
    note, mentions = AWKWARD, {}
    for sentence in re.split(r"(?<=\.) ", text):
        found = mention.fullmatch(sentence)
        if found is None:
            note += sentence + "\r\n"
            continue
        context, phrase = found.groups()
        starts = [
            len((note + context[: w.start()]).encode()) for w in re.finditer(r"[^\W_]+", context)
        ]
        note += f"{context} {BEFORE_PHRASE}"
        starts.append(len(note.encode()))
        note += written(phrase)
        end = len(note.encode())
        note += ".\r\n"
        if context.lower() not in synthetic.NEGATED_CONTEXTS:
            mentions.setdefault(code_of[phrase], set()).update((start, end) for start in starts)
    return note, mentions


@pytest.fixture(scope="module")
def fused(exports, trained_run, tmp_path_factory):
    """`(export folder, term index, notes, mentions, note files)`: the fused export, its term
    index, the test notes made awkward (`awkward_note`) and a short note whose one mention
    follows NUL bytes, their mentions, and the notes written to files."""
    export_dir = exports.fused_text()
    with open(os.path.join(export_dir, export.EXPORT_INFO)) as info:
        fusion_dir = os.path.join(json.load(info)["model_dir"], run_folder.FUSION_DIR)
    index = TermIndex.load(os.path.join(fusion_dir, run_folder.TERM_INDEX_FILE))
    test = dataset.read_notes(trained_run.dataset_dir, "test")
    short = f"\x00\x00Diagnosed with {PHRASES[test.codes[0][0]]}."
    notes, mentions = zip(*(awkward_note(text) for text in [*test.text, short]))
    folder = tmp_path_factory.mktemp("awkward_notes")
    paths = []
    for row, note in enumerate(notes):
        paths.append(folder / f"note{row}.txt")
        paths[-1].write_bytes(note.encode())
    return export_dir, index, notes, mentions, paths


def test_predict_spans_are_the_matched_terms_as_written(fused):
    export_dir, index, notes, mentions, paths = fused
    predictions = predict_json(export_dir, paths)
    checked = kelvin_terms = 0
    for row, prediction in enumerate(predictions):
        utf8 = notes[row].encode()
        _, starts, ends = reference_match(notes[row], index, len(PHRASES))
        for code in prediction["codes"]:
            if code["matched_span"] is None:
                continue
            checked += 1
            start, end = code["matched_span"]
            assert (start, end) in mentions[row].get(code["code"], ())
            assert utf8[start:end].decode() == code["matched_term"]
            assert code["matched_term"].endswith(written(PHRASES[code["code"]]))
            label = list(PHRASES).index(code["code"])
            assert (start, end) == (starts[label], ends[label])
            kelvin_terms += "\u212a" in code["matched_term"]
    assert checked >= len(notes)
    assert kelvin_terms > 0  # a term whose UTF-8 length changes when lower-cased
    # The short note's one mention, after NUL bytes, is found whole.
    (short_code,) = mentions[-1]
    matched = {code["code"]: code["matched_term"] for code in predictions[-1]["codes"]}
    assert matched[short_code] == f"Diagnosed with {BEFORE_PHRASE}{written(PHRASES[short_code])}"


def test_the_review_api_gives_the_matched_terms_in_code_points(fused):
    export_dir, _, notes, mentions, _ = fused
    suggester = suggestions.Suggester(export_dir)
    checked = 0
    for row, note in enumerate(suggester.suggest(list(notes))):
        answer = review_server.note_for_api(note)
        shown = note.codes + note.near_misses
        for suggestion, code in zip(shown, answer["codes"] + answer["near_misses"]):
            terms = [item for item in code["evidence"] if item["source"] == "term"]
            if suggestion.matched_span is None:
                assert terms == []
                continue
            checked += 1
            (term,) = terms
            text = notes[row]
            assert len(text[: term["start"]].encode()) == suggestion.matched_span[0]
            assert len(text[: term["end"]].encode()) == suggestion.matched_span[1]
            assert text[term["start"] : term["end"]].endswith(written(PHRASES[code["code"]]))
            assert suggestion.matched_span in mentions[row].get(code["code"], ())
    assert checked >= len(notes)
