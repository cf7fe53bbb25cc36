"""The in-graph term matcher against a plain-Python re-derivation of its documented rules."""

import re

import numpy as np
import pytest

from longbert_tf.framework import tf
from longbert_tf.lexical import languages
from longbert_tf.lexical import term_matcher as tm
from tests.term_reference import reference_match, reference_words

POOL = (
    "fever fevers headache femur fracture fractures left right humerus abscess sepsis pain "
    "chest acute renal failure cough of the with no denies without and . \n"
).split(" ")


def test_words_follow_the_documented_rules():
    text = "No fevers.\nLeft femur Fractures of the humerus; sepsis, abscess and headaches"
    words, sentence, negated, starts, ends = tm.normalized_words(
        tf.constant([text]), languages.ENGLISH
    )
    expected = reference_words(text)
    assert [w.decode() for w in words[0].numpy()] == [w[0] for w in expected]
    assert [w[0] for w in expected] == [
        "fever",
        "left",
        "femur",
        "fracture",
        "humerus",
        "sepsis",
        "abscess",
        "headache",
    ]
    assert negated[0].numpy().tolist() == [w[2] for w in expected] == [True] + [False] * 7
    assert sentence[0].numpy().tolist() == [w[1] for w in expected]
    assert starts[0].numpy().tolist() == [w[3] for w in expected]
    assert ends[0].numpy().tolist() == [w[4] for w in expected]


# Characters whose UTF-8 length changes when lower-cased (U+0130 2 -> 3 bytes, the Kelvin sign
# 3 -> 1), a NUL byte, a combining accent, a 4-byte emoji and a CRLF line end.
AWKWARD = "İ \u212a ß \x00 e\u0301 😀\r\n"
# Per code, a term as a note writes it: Spanish, an eszett, a Kelvin sign for K, a Turkish İ,
# an accent written as a combining mark (U+0301 after the U).
WRITTEN = (
    "Fractura de fémur IZQUIERDO",
    "GROßE Zehe",
    "\u212aAPOSI Sarcoma",
    "İSHAL",
    "U\u0301LCERA",
)
# Their words lower-cased by hand (Unicode lower-cases İ to i and a combining dot above), an
# accent composed (NFC).
AWKWARD_INDEX = tm.TermIndex(
    "en",
    [
        "de",
        "fractura",
        "fémur",
        "izquierdo",
        "große",
        "zehe",
        "kaposi",
        "sarcoma",
        "i\u0307shal",
        "\u00falcera",
    ],
    ["0 1 2 3", "4 5", "6 7", "8", "9"],
    np.arange(5, dtype=np.int32),
    np.arange(5, dtype=np.int32),
    np.ones([5, len(tm.PAIR_VALUES)], np.float32),
)


def awkward_note(parts: list) -> tuple:
    """`(text, {code: (start, end)})`: `parts` (strings, or codes standing for their `WRITTEN`
    term) joined, and the UTF-8 byte span of each code's term in the text."""
    text, spans = "", {}
    for part in parts:
        if isinstance(part, int):
            start = len(text.encode())
            text += WRITTEN[part]
            spans[part] = (start, len(text.encode()))
        else:
            text += part
    return text, spans


AWKWARD_NOTES = [
    awkward_note([AWKWARD, "Paciente con ", 0, ".\r\nSin fiebre."]),
    awkward_note(["\x00" * 3, 2, "\r\n", AWKWARD * 2, 1, ". Con ", 4, "."]),
    awkward_note(["😀", 3, "\x00", 0, " e\u0301\r\n", 2, " İ ", 1, " ", AWKWARD]),
    awkward_note([AWKWARD, "no ", 0, ".\r\n\u212a ", 3]),
]


def test_words_and_offsets_of_awkward_text_follow_the_rules():
    """Offsets into the note as written: lower-casing first would shift them after an İ or a
    Kelvin sign, and a NUL byte would end the note."""
    texts = [text for text, _ in AWKWARD_NOTES]
    words, sentence, negated, starts, ends = tm.normalized_words(
        tf.constant(texts), languages.ENGLISH
    )
    for row, text in enumerate(texts):
        expected = reference_words(text)
        assert [w.decode() for w in words[row].numpy()] == [w[0] for w in expected]
        assert sentence[row].numpy().tolist() == [w[1] for w in expected]
        assert negated[row].numpy().tolist() == [w[2] for w in expected]
        assert starts[row].numpy().tolist() == [w[3] for w in expected]
        assert ends[row].numpy().tolist() == [w[4] for w in expected]
    # After the NULs; a combining accent composed.
    words_1 = [w.decode() for w in words[1].numpy()]
    assert words_1[-4:] == ["große", "zehe", "con", "\u00falcera"]


def test_spans_are_the_terms_as_the_note_writes_them():
    matcher = tm.TermMatcher(AWKWARD_INDEX, len(WRITTEN))
    outputs = matcher(tf.constant([text for text, _ in AWKWARD_NOTES]))
    for row, (text, spans) in enumerate(AWKWARD_NOTES):
        found = {}
        for code in range(len(WRITTEN)):
            start, end = int(outputs["start"][row, code]), int(outputs["end"][row, code])
            if start >= 0:
                found[code] = (start, end)
                assert text.encode()[start:end].decode() == WRITTEN[code]
        assert found == spans
        # Note 3 negates its Spanish term: its span is given, its match is negated.
        title = tm.MATCH_FEATURES.index("title")
        assert outputs["features"][row, 0, title] == (0 in spans and row != 3)
        features, starts, ends = reference_match(text, AWKWARD_INDEX, len(WRITTEN))
        np.testing.assert_allclose(outputs["features"][row].numpy(), features)
        np.testing.assert_array_equal(outputs["start"][row].numpy(), starts)
        np.testing.assert_array_equal(outputs["end"][row].numpy(), ends)


def random_index(rng, num_labels: int) -> tm.TermIndex:
    content = sorted(
        {re.sub(r"^(.{2,}[^isu])s$", r"\1", w) for w in POOL if w.isalpha()}
        - languages.ENGLISH.stop_words
        - languages.ENGLISH.forward_cues
        - languages.ENGLISH.backward_cues
    )
    keys = set()
    while len(keys) < 25:
        size = rng.integers(1, 4)
        keys.add(" ".join(map(str, sorted(rng.choice(len(content), size, replace=False)))))
    keys = sorted(keys)
    pairs = sorted(
        {(int(rng.integers(len(keys))), int(rng.integers(num_labels))) for _ in range(40)}
    )
    values = rng.uniform(0.1, 3.0, [len(pairs), len(tm.PAIR_VALUES)]).astype(np.float32)
    return tm.TermIndex(
        "en",
        content,
        keys,
        np.array([t for t, _ in pairs], np.int32),
        np.array([c for _, c in pairs], np.int32),
        values,
    )


def test_features_and_spans_equal_a_brute_force_match():
    rng = np.random.default_rng(0)
    num_labels = 9
    index = random_index(rng, num_labels)
    texts = [" ".join(rng.choice(POOL, rng.integers(0, 60))) for _ in range(12)] + ["", ". \n ."]
    matcher = tm.TermMatcher(index, num_labels)
    outputs = matcher(tf.constant(texts))
    matched = negated = 0
    for note, text in enumerate(texts):
        features, starts, ends = reference_match(text, index, num_labels)
        np.testing.assert_allclose(outputs["features"][note].numpy(), features, rtol=1e-6)
        np.testing.assert_array_equal(outputs["start"][note].numpy(), starts)
        np.testing.assert_array_equal(outputs["end"][note].numpy(), ends)
        matched += int((features[:, 0] > 0).sum())
        negated += int((features[:, tm.MATCH_FEATURES.index("title_negated")] > 0).sum())
    assert matched > 20 and negated > 5  # the random notes do match terms, some negated


def test_word_order_and_plurals_do_not_matter_but_sentences_do():
    index = tm.TermIndex(
        "en",
        ["femur", "fracture", "left"],
        ["0 1 2"],
        np.array([0], np.int32),
        np.array([1], np.int32),
        np.ones([1, len(tm.PAIR_VALUES)], np.float32),
    )
    matcher = tm.TermMatcher(index, 2)
    texts = ["Fractures of the left femur.", "Left. Femur fracture", "No left femur fracture"]
    outputs = matcher(tf.constant(texts))
    title_negated = tm.MATCH_FEATURES.index("title_negated")
    assert outputs["features"][:, 1, 0].numpy().tolist() == [1, 0, 0]
    assert outputs["features"][:, 1, title_negated].numpy().tolist() == [0, 0, 1]
    assert texts[0][outputs["start"][0, 1] : outputs["end"][0, 1]] == "Fractures of the left femur"


def test_index_round_trips(tmp_path):
    index = random_index(np.random.default_rng(1), 5)
    index.save(str(tmp_path / "index.json"))
    loaded = tm.TermIndex.load(str(tmp_path / "index.json"))
    assert loaded.words == index.words and loaded.term_keys == index.term_keys
    np.testing.assert_array_equal(loaded.pair_codes, index.pair_codes)
    np.testing.assert_allclose(loaded.pair_values, index.pair_values, atol=1e-6)


def test_an_index_of_other_pair_values_is_refused(tmp_path):
    (tmp_path / "index.json").write_text('{"pair_value_names": ["title"]}')
    with pytest.raises(ValueError, match="index.json.*rebuild"):
        tm.TermIndex.load(str(tmp_path / "index.json"))


def words_and_negation(text: str, language) -> list:
    words, _, negated, _, _ = tm.normalized_words(tf.constant([text]), language)
    return list(zip([w.decode() for w in words[0].numpy()], negated[0].numpy().tolist()))


def test_spanish_words_are_folded_and_singular_with_offsets_on_the_original():
    text = "Lesiones ÓSEAS y fracturas múltiples. Año 2010: ano, pingüino; crisis."
    words, _, _, starts, ends = tm.normalized_words(tf.constant([text]), languages.SPANISH)
    expected = reference_words(text, languages.SPANISH)
    assert [w.decode() for w in words[0].numpy()] == [w[0] for w in expected]
    # ñ stays (año is not ano); singular and plural meet at a stem.
    assert [w[0] for w in expected] == [
        "lesion", "osea", "fractura", "multipl", "año", "2010", "ano", "pinguino", "crisi"
    ]  # fmt: skip
    singular = reference_words("lesión ósea fractura múltiple crisis", languages.SPANISH)
    assert [w[0] for w in singular] == ["lesion", "osea", "fractura", "multipl", "crisi"]
    assert starts[0].numpy().tolist() == [w[3] for w in expected]
    assert ends[0].numpy().tolist() == [w[4] for w in expected]
    assert text.encode()[expected[1][3] : expected[1][4]].decode() == "ÓSEAS"


@pytest.mark.parametrize(
    "language, text, expected",
    [
        # A forward cue's scope ends at a terminator; a backward cue reaches back.
        (languages.SPANISH, "Sin fiebre pero con tos", [("fiebr", True), ("tos", False)]),
        (languages.SPANISH, "VIH negativo. Hepatitis", [("vih", True), ("hepatiti", False)]),
        (
            languages.SPANISH,
            "Se descarta neumonía, aunque hay tuberculosis",
            [("neumonia", True), ("hay", False), ("tuberculosi", False)],
        ),
        (
            languages.SPANISH,
            "Tuberculosis descartada, sin embargo fiebre",
            [("tuberculosi", True), ("fiebr", False)],
        ),
        (
            languages.ENGLISH,
            "Pneumonia was ruled out but fever persists",
            [("pneumonia", True), ("out", True), ("fever", False), ("persist", False)],
        ),
        (languages.ENGLISH, "Possible sepsis", [("sepsis", True)]),
    ],
)
def test_cue_scopes_run_both_ways_and_end_at_terminators(language, text, expected):
    assert words_and_negation(text, language) == expected
    assert [(w[0], w[2]) for w in reference_words(text, language)] == expected


SPANISH_POOL = (
    "fiebre fiebres tos lesión lesiones ósea óseas fractura fracturas fémur izquierdo "
    "dolor torácico insuficiencia renal aguda sin no negativo descartada pero aunque de la "
    "con y , . \n"
).split(" ")


def test_spanish_features_and_spans_equal_a_brute_force_match():
    rng = np.random.default_rng(3)
    content = sorted(
        {w for text in SPANISH_POOL for w, *_ in reference_words(text, languages.SPANISH)}
    )
    keys = sorted(
        {
            " ".join(map(str, sorted(rng.choice(len(content), rng.integers(1, 3), replace=False))))
            for _ in range(20)
        }
    )
    num_labels = 6
    pairs = sorted(
        {(int(rng.integers(len(keys))), int(rng.integers(num_labels))) for _ in range(30)}
    )
    index = tm.TermIndex(
        "es",
        content,
        keys,
        np.array([t for t, _ in pairs], np.int32),
        np.array([c for _, c in pairs], np.int32),
        rng.uniform(0.1, 3.0, [len(pairs), len(tm.PAIR_VALUES)]).astype(np.float32),
    )
    texts = [" ".join(rng.choice(SPANISH_POOL, rng.integers(0, 50))) for _ in range(12)]
    outputs = tm.TermMatcher(index, num_labels)(tf.constant(texts))
    negated = 0
    for note, text in enumerate(texts):
        features, starts, ends = reference_match(text, index, num_labels, languages.SPANISH)
        np.testing.assert_allclose(outputs["features"][note].numpy(), features, rtol=1e-6)
        np.testing.assert_array_equal(outputs["start"][note].numpy(), starts)
        np.testing.assert_array_equal(outputs["end"][note].numpy(), ends)
        negated += int((features[:, tm.MATCH_FEATURES.index("evidence_negated")] > 0).sum())
    assert negated > 3
