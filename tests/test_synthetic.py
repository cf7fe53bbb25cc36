"""The synthetic dataset: determinism, lengths, code distribution and planted evidence."""

import re

import numpy as np
import pytest

from longbert_tf.data import synthetic

CONFIG = synthetic.SyntheticConfig(num_train=300, num_dev=10, num_test=10, seed=11)


@pytest.fixture(scope="module")
def generated():
    return synthetic.generate(CONFIG)


def _num_tokens(text):
    """Words and punctuation: what a WordPiece vocabulary learned on these notes produces."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def test_same_seed_same_data_other_seed_other_data(generated):
    splits, labels = generated
    again, again_labels = synthetic.generate(CONFIG)
    assert labels == again_labels
    assert splits["train"].equals(again["train"])
    other, _ = synthetic.generate(synthetic.SyntheticConfig(num_train=5, num_dev=1, num_test=1))
    assert not other["train"].text.iloc[0] == splits["train"].text.iloc[0]


def test_lengths_are_long_tailed_like_mimic(generated):
    lengths = np.array([_num_tokens(text) for text in generated[0]["train"].text])
    assert 1300 <= np.median(lengths) <= 1800
    assert 0.06 <= np.mean(lengths > 4096) <= 0.25
    assert lengths.max() <= CONFIG.max_tokens * 1.05


def test_codes_are_zipf_distributed_with_5_to_15_per_note(generated):
    splits, labels = generated
    codes = splits["train"].codes
    assert all(5 <= len(note_codes) <= 15 for note_codes in codes)
    assert all(note_codes == sorted(set(note_codes)) for note_codes in codes)
    counts = np.sort([sum(code in c for c in codes) for code in labels])[::-1]
    assert counts[0] > 5 * counts[len(counts) // 2] > 0
    assert all(re.fullmatch(r"(V\d\d|E\d{3}|\d{3})\.\d{1,2}", code) for code in labels)


def test_every_code_has_planted_evidence_and_notes_have_distractors(generated):
    splits, labels = generated
    table = synthetic.make_code_table(CONFIG)
    positive = "|".join(synthetic.POSITIVE_CONTEXTS)
    negated = "|".join(synthetic.NEGATED_CONTEXTS + synthetic.FAMILY_CONTEXTS)
    with_distractors = 0
    for text, codes in zip(splits["train"].text, splits["train"].codes):
        text = text.lower()
        for code in codes:
            assert re.search(rf"(?:{positive}) {table.phrases[code]}\.", text), code
        for code in set(labels) - set(codes):
            # A code a note lacks is never mentioned positively (only negated or in family history).
            assert not re.search(rf"(?:{positive}) {table.phrases[code]}\.", text), code
        with_distractors += bool(re.search(rf"(?:{negated}) ", text))
    assert with_distractors > 0.9 * len(splits["train"])


def test_some_codes_are_acute_chronic_lookalikes():
    phrases = synthetic.make_code_table(synthetic.SyntheticConfig()).phrases.values()
    acute = {p.split()[1] for p in phrases if p.startswith("acute ")}
    chronic = {p.split()[1] for p in phrases if p.startswith("chronic ")}
    assert len(acute) == len(chronic) == 7 and acute == chronic


def test_patients_never_cross_splits(generated):
    splits, _ = generated
    subjects = [set(notes.subject_id) for notes in splits.values()]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
