"""The term index of a label space (`term_matcher.TermIndex`): code-book terms, term
variants mined from the training notes alone, and the training notes' annotated mentions.

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
precision, which the matcher reports.

Where annotators marked the words that justify a code (the dataset's
evidence), every such mention of 1 to `MAX_TERM_WORDS` kept words is a term of
its code: an evidence term. Its support is the log of its mentions. Its
precision is the share of the training notes where it is affirmed that have
the code, add-one smoothed (`hits / (notes + 1)`); its negated precision the
same share over the notes where it occurs only negated, smoothed towards the
share over every evidence term (`(hits + share) / (notes + 1)`): whether
annotators code a negated finding ("sin fiebre") is learned from them, not
assumed. Nothing but the training split is read.
"""

import collections
import functools
import re

import numpy as np

from longbert_tf.framework import tf
from longbert_tf.lexical import languages, term_matcher
from longbert_tf.lexical.term_matcher import MAX_TERM_WORDS, PAIR_VALUES, TermIndex

VARIANT_MIN_NOTES = 2
VARIANT_MIN_PRECISION = 0.2
_BATCH = 4096


def term_forms(text: str) -> set:
    """`text`, without bracketed words, up to its first comma and up to `without`."""
    plain = " ".join(re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text).split())
    forms = {text, plain, plain.split(",")[0], re.split(r"\bwithout\b", plain)[0]}
    return {form.strip(" ,") for form in forms if form.strip(" ,")}


@functools.cache
def _normalized_words(language: languages.Language):
    """`term_matcher.normalized_words` of texts `[batch]` in `language` without the offsets,
    traced once per language."""
    return tf.function(
        lambda texts: term_matcher.normalized_words(texts, language)[:3],
        input_signature=[tf.TensorSpec([None], tf.string)],
    )


# `term_matcher.windows` of one note, traced once (the offsets are not needed here).
_windows = tf.function(
    lambda ids, sentence, negated: term_matcher.windows(
        ids, sentence, negated, tf.zeros_like(ids, tf.int64), tf.zeros_like(ids, tf.int64)
    ),
    input_signature=[
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.bool),
    ],
)


def _note_columns(texts: list, language: languages.Language) -> list:
    """`(words, sentence, negated)` of each text, the words as str (`normalized_words`)."""
    columns = []
    for start in range(0, len(texts), _BATCH):
        words, sentence, negated = _normalized_words(language)(
            tf.constant(texts[start : start + _BATCH])
        )
        columns += [
            ([word.decode() for word in row_words], row_sentence, row_negated)
            for row_words, row_sentence, row_negated in zip(
                words.to_list(), sentence.to_list(), negated.to_list()
            )
        ]
    return columns


def _word_lists(texts: list, language: languages.Language) -> list:
    """The normalized words (`term_matcher.normalized_words`) of each text."""
    return [words for words, _, _ in _note_columns(texts, language)]


def build(
    code_texts: list,
    train_texts: list,
    train_label_ids: list,
    language: languages.Language,
    train_mentions: list = (),
) -> TermIndex:
    """The index of a label space.

    `code_texts`: per label, its code-book texts (`term_forms` of each are
    indexed); `train_texts` and `train_label_ids` (per note, its label indices):
    the training notes the variants are mined from; `train_mentions`: `(label,
    text)` of each annotated mention in them.
    """
    forms = [
        (label, form)
        for label, texts in enumerate(code_texts)
        for text in texts
        for form in term_forms(text)
    ]
    form_words = _word_lists([form for _, form in forms], language)
    book = collections.defaultdict(set)  # sorted words -> labels
    code_words = collections.defaultdict(set)
    for (label, _), words in zip(forms, form_words):
        code_words[label].update(words)
        if 1 <= len(set(words)) <= MAX_TERM_WORDS:
            book[tuple(sorted(set(words)))].add(label)
    mention_words = _word_lists([text for _, text in train_mentions], language)
    mentions = collections.Counter(
        (tuple(sorted(words)), label)
        for (label, _), words in zip(train_mentions, mention_words)
        if 1 <= len(words) <= MAX_TERM_WORDS
    )
    note_columns = _note_columns(list(train_texts), language)
    note_frequency = collections.Counter(
        word for words, _, _ in note_columns for word in set(words)
    )
    vocabulary = sorted(
        {word for key in book for word in key}
        | {word for key, _ in mentions for word in key}
        | {word for word, notes in note_frequency.items() if notes >= VARIANT_MIN_NOTES}
    )
    word_id = {word: position for position, word in enumerate(vocabulary)}
    values = collections.defaultdict(lambda: np.zeros(len(PAIR_VALUES), np.float32))
    for key, labels in book.items():
        for label in labels:
            pair = values[(_key(key, word_id), label)]
            pair[:3] = np.maximum(pair[:3], [1.0, len(key), 1.0 / len(labels)])
    note_keys = _note_keys(note_columns, word_id)
    for key, label, precision, notes in _mined_variants(
        note_keys, train_label_ids, vocabulary, code_words
    ):
        values[(key, label)][3:5] = [precision, np.log(notes)]
    mention_keys = {
        (_key(words, word_id), label): count for (words, label), count in mentions.items()
    }
    for (key, label), (affirmed, negated) in _evidence_precisions(
        note_keys, train_label_ids, mention_keys
    ).items():
        values[(key, label)][5:] = [affirmed, np.log(mention_keys[(key, label)]), negated]
    term_keys = sorted({key for key, _ in values})
    term_id = {key: position for position, key in enumerate(term_keys)}
    pairs = sorted((term_id[key], label) for key, label in values)
    return TermIndex(
        language.name,
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


def _note_keys(note_columns: list, word_id: dict) -> list:
    """Per training note (`_note_columns`), `(affirmed, every)`: the sets of keys of its
    affirmed windows and of all its windows."""
    keys = []
    for words, sentence, negated in note_columns:
        ids = tf.constant([word_id.get(word, -1) for word in words], tf.int32)
        found = _windows(ids, tf.constant(sentence, tf.int32), tf.constant(negated, tf.bool))
        every, affirmed = found["key"].numpy(), found["affirmed"].numpy()
        keys.append(({key.decode() for key in every[affirmed]}, {key.decode() for key in every}))
    return keys


def _mined_variants(note_keys: list, train_label_ids, vocabulary: list, code_words: dict):
    """`(key, label, precision, notes)` of every variant (see the module docstring)."""
    affirmed = [keys for keys, _ in note_keys]
    notes_with_key = collections.Counter(key for keys in affirmed for key in keys)
    together = collections.Counter(
        (key, label)
        for keys, labels in zip(affirmed, train_label_ids)
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


def _evidence_precisions(note_keys: list, train_label_ids, mention_keys) -> dict:
    """`{(key, label): (precision, negated precision)}` of the evidence terms (see the module
    docstring)."""
    notes = collections.Counter()  # (key, affirmed) -> notes
    hits = collections.Counter()  # (key, label, affirmed) -> notes with the label
    labels_of_key = collections.defaultdict(list)
    for key, label in mention_keys:
        labels_of_key[key].append(label)
    for (affirmed, every), labels in zip(note_keys, train_label_ids):
        labels = set(labels)
        for key in every & labels_of_key.keys():
            is_affirmed = key in affirmed
            notes[(key, is_affirmed)] += 1
            for label in labels_of_key[key]:
                if label in labels:
                    hits[(key, label, is_affirmed)] += 1
    negated_notes = sum(notes[(key, False)] * len(codes) for key, codes in labels_of_key.items())
    negated_hits = sum(count for (_, _, affirmed), count in hits.items() if not affirmed)
    share = negated_hits / negated_notes if negated_notes else 0.0
    return {
        (key, label): (
            hits[(key, label, True)] / (notes[(key, True)] + 1),
            (hits[(key, label, False)] + share) / (notes[(key, False)] + 1),
        )
        for key, label in mention_keys
    }
