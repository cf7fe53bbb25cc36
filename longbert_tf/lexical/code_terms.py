"""The term index of a label space (`term_matcher.TermIndex`): code-book terms, and term
variants mined from the training notes alone.

Code-book terms are each code's description and, for ICD-10-CM, its title and
inclusion terms (`descriptions.icd10cm_terms`), each also without bracketed
words, up to its first comma, and up to `without` (which names what the code
does not have): `Essential (primary) hypertension` gives `essential
hypertension`; `Pneumonia, unspecified organism` gives `pneumonia`.

Notes rarely word a code as the code book does, and the training annotations
say which codes a note has but not where. So a variant is a window
(`term_matcher.windows`) of the training notes that (1) shares a word with the
code's code-book terms, (2) is affirmed in at least `VARIANT_MIN_NOTES` training
notes that have the code, and (3) has the code in at least
`VARIANT_MIN_PRECISION` of the training notes where it is affirmed: its
precision, which the matcher reports. Nothing but the training split is read.
"""

import collections
import re

import numpy as np

from longbert_tf.framework import tf
from longbert_tf.lexical import term_matcher
from longbert_tf.lexical.term_matcher import MAX_TERM_WORDS, PAIR_VALUES, TermIndex

VARIANT_MIN_NOTES = 2
VARIANT_MIN_PRECISION = 0.2
_BATCH = 4096


def term_forms(text: str) -> set:
    """`text`, without bracketed words, up to its first comma and up to `without`."""
    plain = " ".join(re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text).split())
    forms = {text, plain, plain.split(",")[0], re.split(r"\bwithout\b", plain)[0]}
    return {form.strip(" ,") for form in forms if form.strip(" ,")}


def _word_lists(texts: list) -> list:
    """The normalized words (`term_matcher.normalized_words`) of each text."""
    lists = []
    for start in range(0, len(texts), _BATCH):
        words = term_matcher.normalized_words(tf.constant(texts[start : start + _BATCH]))[0]
        lists += [[word.decode() for word in row] for row in words.to_list()]
    return lists


def build(code_texts: list, train_texts: list, train_label_ids: list) -> TermIndex:
    """The index of a label space.

    `code_texts`: per label, its code-book texts (`term_forms` of each are
    indexed); `train_texts` and `train_label_ids` (per note, its label indices):
    the training notes the variants are mined from.
    """
    forms = [
        (label, form)
        for label, texts in enumerate(code_texts)
        for text in texts
        for form in term_forms(text)
    ]
    form_words = _word_lists([form for _, form in forms])
    book = collections.defaultdict(set)  # sorted words -> labels
    code_words = collections.defaultdict(set)
    for (label, _), words in zip(forms, form_words):
        code_words[label].update(words)
        if 1 <= len(set(words)) <= MAX_TERM_WORDS:
            book[tuple(sorted(set(words)))].add(label)
    note_words = _word_lists(list(train_texts))
    note_frequency = collections.Counter(word for words in note_words for word in set(words))
    vocabulary = sorted(
        {word for key in book for word in key}
        | {word for word, notes in note_frequency.items() if notes >= VARIANT_MIN_NOTES}
    )
    word_id = {word: position for position, word in enumerate(vocabulary)}
    values = collections.defaultdict(lambda: np.zeros(len(PAIR_VALUES), np.float32))
    for key, labels in book.items():
        for label in labels:
            pair = values[(_key(key, word_id), label)]
            pair[:3] = np.maximum(pair[:3], [1.0, len(key), 1.0 / len(labels)])
    for key, label, precision, notes in _mined_variants(
        train_texts, train_label_ids, vocabulary, code_words
    ):
        values[(key, label)][3:] = [precision, np.log(notes)]
    term_keys = sorted({key for key, _ in values})
    term_id = {key: position for position, key in enumerate(term_keys)}
    pairs = sorted((term_id[key], label) for key, label in values)
    return TermIndex(
        vocabulary,
        term_keys,
        np.asarray([term for term, _ in pairs], np.int32).reshape(-1),
        np.asarray([label for _, label in pairs], np.int32).reshape(-1),
        np.asarray([values[(term_keys[t], label)] for t, label in pairs], np.float32).reshape(
            -1, len(PAIR_VALUES)
        ),
    )


def _key(words, word_id: dict) -> str:
    return " ".join(str(i) for i in sorted(word_id[word] for word in words))


def _mined_variants(train_texts, train_label_ids, vocabulary: list, code_words: dict):
    """`(key, label, precision, notes)` of every variant (see the module docstring)."""
    table = term_matcher.position_table(vocabulary)

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def affirmed_keys(text):
        columns = term_matcher.note_words(text[tf.newaxis], table)
        found = term_matcher.windows(*(column[0] for column in columns))
        return found["key"][found["affirmed"]]

    note_keys = [{key.decode() for key in affirmed_keys(text).numpy()} for text in train_texts]
    notes_with_key = collections.Counter(key for keys in note_keys for key in keys)
    together = collections.Counter(
        (key, label)
        for keys, labels in zip(note_keys, train_label_ids)
        for key in keys
        for label in labels
    )
    for (key, label), notes in together.items():
        precision = notes / notes_with_key[key]
        if notes < VARIANT_MIN_NOTES or precision < VARIANT_MIN_PRECISION:
            continue
        words = {vocabulary[int(i)] for i in key.split()}
        if words & code_words.get(label, set()):
            yield key, label, precision, notes
