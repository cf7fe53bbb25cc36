"""Term indexes: code-book forms and the variants mined from training notes."""

import numpy as np

from longbert_tf.lexical import code_terms, languages
from longbert_tf.lexical import term_matcher as tm


def test_term_forms_drop_brackets_qualifiers_and_without():
    assert code_terms.term_forms("Essential (primary) hypertension") == {
        "Essential (primary) hypertension",
        "Essential hypertension",
    }
    assert code_terms.term_forms("Pneumonia, unspecified organism") == {
        "Pneumonia, unspecified organism",
        "Pneumonia",
    }
    assert "Type 2 diabetes mellitus" in code_terms.term_forms(
        "Type 2 diabetes mellitus without complications"
    )


def pairs_of(index: tm.TermIndex) -> dict:
    """`{(sorted words, label): pair values}`."""
    found = {}
    for term, label, values in zip(index.pair_terms, index.pair_codes, index.pair_values):
        words = tuple(sorted(index.words[int(i)] for i in index.term_keys[term].split()))
        found[(words, int(label))] = values
    return found


def test_book_terms_and_mined_variants():
    code_texts = [["Myocardial infarction"], ["Headache"], ["Other chest pain"]]
    notes = [
        ("Acute heart attack with crushing chest pain.", [0, 2]),
        ("He had a heart attack last year.", [0]),
        ("Heart attack ruled out. Severe cephalalgia.", [1]),  # negated: not counted
        ("Cephalalgia since Monday.", [1]),
        ("Cephalalgia and nausea.", []),
        ("Chest pain at rest.", [2]),
    ]
    index = code_terms.build(
        code_texts, [t for t, _ in notes], [labels for _, labels in notes], languages.ENGLISH
    )
    pairs = pairs_of(index)
    # Code-book terms: all their content words, 1 / the codes they name.
    np.testing.assert_allclose(pairs[(("infarction", "myocardial"), 0)][:3], [1, 2, 1])
    np.testing.assert_allclose(pairs[(("chest", "pain"), 2)][:3], [1, 2, 1])
    # "heart attack" shares no word with "myocardial infarction": not a variant of code 0.
    assert not any(words == ("attack", "heart") for words, _ in pairs)
    # "chest pain" is affirmed in 2 notes, both with code 2: precision 1, support 2.
    np.testing.assert_allclose(pairs[(("chest", "pain"), 2)][3:5], [1.0, np.log(2)], rtol=1e-6)
    # "cephalalgia" has no word of "headache"; "pain" alone is in 2 notes with code 2 of 2.
    assert not any("cephalalgia" in words for words, _ in pairs)
    np.testing.assert_allclose(pairs[(("pain",), 2)], [0, 0, 0, 1.0, np.log(2), 0, 0, 0], rtol=1e-6)


def test_a_variant_needs_enough_notes_and_precision():
    code_texts = [["Fever"], ["Cough"]]
    notes = [
        ("Fever today.", [0]),
        ("Fever and cough.", [1]),
        ("Fever again.", [1]),
        ("Fever, cough.", [1]),
        ("Fever high.", [1]),
        ("Fever low.", [1]),
    ]
    index = code_terms.build(
        code_texts, [t for t, _ in notes], [labels for _, labels in notes], languages.ENGLISH
    )
    pairs = pairs_of(index)
    # "fever" with code 0: 1 note of 6 (below 2 notes): only its code-book term.
    np.testing.assert_allclose(pairs[(("fever",), 0)], [1, 1, 1, 0, 0, 0, 0, 0])
    # "cough" with code 1: 2 notes of 2.
    np.testing.assert_allclose(pairs[(("cough",), 1)][3], 1.0)
    assert (("fever",), 1) not in pairs  # shares no word with "Cough"


def test_evidence_terms_carry_their_precision_and_support():
    """Spanish mentions, normalized as notes are; precisions over the training notes where the
    term is affirmed, or only negated; support the log of its mentions."""
    notes = [
        ("Dolor torácico agudo. Sin fiebre.", [0, 1]),
        ("Refiere dolores torácicos.", [0]),
        ("Niega dolor torácico.", []),
        ("Fiebre alta.", [1]),
        ("No fiebre.", []),
    ]
    mentions = [(0, "Dolor torácico"), (0, "dolores torácicos"), (1, "fiebre"), (1, "Fiebre")]
    index = code_terms.build(
        [[], []],
        [t for t, _ in notes],
        [labels for _, labels in notes],
        languages.SPANISH,
        mentions,
    )
    pairs = pairs_of(index)
    # Negated "dolor torácico" is in 1 note (without code 0), negated "fiebre" in 2 notes (one
    # with code 1): the share of negated occurrences coded is 1 / 3.
    share = 1 / 3
    # "dolor torácico": affirmed in notes 0 and 1, both with code 0: 2 / (2 + 1); negated in
    # note 2, without it: (0 + share) / (1 + 1).
    np.testing.assert_allclose(
        pairs[(("dolor", "toracico"), 0)][5:], [2 / 3, np.log(2), share / 2], rtol=1e-6
    )
    # "fiebre": affirmed in note 3 (code 1): 1 / 2; negated in notes 0 (code 1) and 4 (not):
    # (1 + share) / (2 + 1).
    np.testing.assert_allclose(
        pairs[(("fiebr",), 1)][5:], [0.5, np.log(2), (1 + share) / 3], rtol=1e-6
    )
    assert index.language == "es"
