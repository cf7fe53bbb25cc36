"""In-graph lexical code matching: a note's words against an index of code terms.

A note is split into words at every character that is not a letter, combining
mark or digit, and the words are composed (NFC: `u` and a combining acute are
`ú`), lower-cased and, in a language that folds them, stripped of accents
(`languages.Language`); a newline or full stop ends a sentence. Plural endings
are dropped (`fractures` -> `fracture`, `lesiones` -> `lesion`). Stop words and
terminators are skipped; negation and uncertainty cues are skipped and mark the words in their
scope, up to `CUE_SCOPE` words after a forward cue or before a backward one,
within a clause (a sentence, cut at terminators such as `but` or `pero`), as
negated. A window is 1 to `MAX_TERM_WORDS` consecutive remaining words of one
sentence; its key is its words' vocabulary ids, sorted, so word order does not
matter (`left femur fracture` matches `fracture of femur, left`). A window whose
key is a term of the index matches every code the term names (`TermIndex`).

Per note and code the matcher gives `MATCH_FEATURES`: the largest of each
`PAIR_VALUES` over the affirmed (not negated) matches, and the largest of each
`NEGATED_FEATURES` value over the negated ones; and the byte
span of the code's first affirmed match, its evidence: UTF-8 byte offsets into
the note as given (not into its normalized form, whose characters may be longer
or shorter).
"""

import dataclasses
import json

import numpy as np

from longbert_tf import files
from longbert_tf.framework import tf, tf_text
from longbert_tf.lexical import languages

CUE_SCOPE = 5
MAX_TERM_WORDS = 5
# Per (term, code) pair: a code-book term names the code; its content words; 1 / the codes the
# term names; for a variant mined from training notes, its precision and log support; for an
# annotated mention of the training notes, its precision where affirmed, log support, and
# precision where only negated.
PAIR_VALUES = (
    "title",
    "title_words",
    "title_specificity",
    "variant_precision",
    "variant_support",
    "evidence_precision",
    "evidence_support",
    "evidence_negated_precision",
)
# The features of a code's negated-only matches: per kind, the largest of this pair value.
NEGATED_FEATURES = {
    "title_negated": "title",
    "variant_negated": "variant_precision",
    "evidence_negated": "evidence_negated_precision",
}
MATCH_FEATURES = (*PAIR_VALUES, *NEGATED_FEATURES)
_NEGATED_VALUES = tuple(PAIR_VALUES.index(name) for name in NEGATED_FEATURES.values())


@dataclasses.dataclass
class TermIndex:
    """Terms as sorted word-id keys and the codes they name.

    `language`: the name of the notes' `languages.Language`; `words`: the
    vocabulary (a word's id is its position); `term_keys`: per term its sorted
    word ids joined by spaces; `pair_terms`, `pair_codes` int32 `[num_pairs]`
    sorted by term; `pair_values` float32 `[num_pairs, PAIR_VALUES]`.
    """

    language: str
    words: list
    term_keys: list
    pair_terms: np.ndarray
    pair_codes: np.ndarray
    pair_values: np.ndarray

    def save(self, path: str) -> None:
        files.write_json(
            path,
            dict(
                language=self.language,
                words=self.words,
                term_keys=self.term_keys,
                pair_terms=self.pair_terms.tolist(),
                pair_codes=self.pair_codes.tolist(),
                pair_values=np.round(self.pair_values, 6).tolist(),
                pair_value_names=list(PAIR_VALUES),
            ),
        )

    @classmethod
    def load(cls, path: str) -> "TermIndex":
        with open(path) as index_file:
            saved = json.load(index_file)
        if saved.get("pair_value_names") != list(PAIR_VALUES):
            raise ValueError(
                f"{path}: pair values {saved.get('pair_value_names')}, expected "
                f"{list(PAIR_VALUES)}; rebuild the index"
            )
        return cls(
            saved["language"],
            saved["words"],
            saved["term_keys"],
            np.asarray(saved["pair_terms"], np.int32),
            np.asarray(saved["pair_codes"], np.int32),
            np.asarray(saved["pair_values"], np.float32).reshape(-1, len(PAIR_VALUES)),
        )


def normalized_words(texts, language: languages.Language) -> tuple:
    """Texts `[batch]` -> ragged `[batch, (words)]` words, sentence numbers, negated flags and
    `starts`/`ends` (byte offsets into `texts`); stop words, cues and terminators are left
    out."""
    # tensorflow-text's regex split ends a note at a NUL byte: a space, as long, keeps the
    # rest of the note and its offsets.
    texts = tf.strings.regex_replace(texts, r"\x00", " ")
    pieces, starts, ends = tf_text.regex_split_with_offsets(
        texts, r"[^\p{L}\p{M}\p{N}]", keep_delim_regex_pattern=r"[\n.]"
    )
    # Composed, lowered and folded after the split, so the offsets are the note's own: each
    # changes some characters' UTF-8 lengths (U+0130 "İ" 2 -> 3 bytes, the Kelvin sign 3 -> 1,
    # "u" and a combining acute 3 -> "ú" 2, "ú" -> "u" 1).
    pieces = tf.ragged.map_flat_values(lambda flat: _normalized(flat, language), pieces)
    is_break = tf.strings.regex_full_match(pieces, r"[\n.]")
    sentence = tf.math.cumsum(tf.cast(is_break, tf.int32), axis=1)
    is_terminator = _member(pieces, language.terminators)
    clause = tf.math.cumsum(tf.cast(is_break | is_terminator, tf.int32), axis=1)
    forward = _member(pieces, language.forward_cues)
    backward = _member(pieces, language.backward_cues)
    # Scopes on dense rows (padding: no cue, clause -1), each shifted by up to CUE_SCOPE.
    dense_clause = clause.to_tensor(-1)
    dense_cues = {1: forward.to_tensor(False), -1: backward.to_tensor(False)}
    dense_negated = tf.zeros_like(dense_cues[1])
    for distance in range(1, CUE_SCOPE + 1):
        for direction, cues in dense_cues.items():
            shift = direction * distance
            same_clause = tf.equal(_shifted(dense_clause, shift, -1), dense_clause)
            dense_negated |= _shifted(cues, shift, False) & same_clause
    negated = tf.RaggedTensor.from_tensor(dense_negated, lengths=pieces.row_lengths())
    words = tf.strings.regex_replace(pieces, language.plural, r"\1")
    keep = ~(is_break | is_terminator | forward | backward | _member(pieces, language.stop_words))
    return tuple(
        tf.ragged.boolean_mask(values, keep) for values in (words, sentence, negated, starts, ends)
    )


_FOLDED = (("[áàâä]", "a"), ("[éèêë]", "e"), ("[íìîï]", "i"), ("[óòôö]", "o"), ("[úùûü]", "u"))


def _normalized(words, language: languages.Language):
    """Flat words `[n]` composed, lower-cased and, if the language folds them, unaccented."""
    words = tf.strings.lower(tf_text.normalize_utf8(words, "NFC"), encoding="utf-8")
    if language.fold_accents:
        for accented, plain in _FOLDED:
            words = tf.strings.regex_replace(words, accented, plain)
    return words


def _member(words: tf.RaggedTensor, vocabulary) -> tf.RaggedTensor:
    """Whether each word is one of `vocabulary` (a few dozen words: no lookup table)."""
    listed = tf.constant(sorted(vocabulary))
    return tf.ragged.map_flat_values(
        lambda flat: tf.reduce_any(tf.equal(flat[:, tf.newaxis], listed), axis=1), words
    )


def _shifted(dense: tf.Tensor, distance: int, fill) -> tf.Tensor:
    """`[batch, length]` rows moved `distance` places to the right (to the left if negative),
    `fill` coming in."""
    padding = tf.fill([tf.shape(dense)[0], abs(distance)], tf.constant(fill, dense.dtype))
    if distance > 0:
        return tf.concat([padding, dense], axis=1)[:, : tf.shape(dense)[1]]
    return tf.concat([dense, padding], axis=1)[:, -distance:]


def windows(word_ids, sentence, negated, starts, ends) -> dict:
    """One note's windows. Arguments `[num_words]`; returns `key` string `[num_windows]`,
    `affirmed` bool, `start`/`end` int64 byte offsets, for every window of 1 to
    `MAX_TERM_WORDS` words of one sentence, none of them out of the vocabulary (id -1);
    longest windows first, then in text order."""
    outputs = dict(key=[], affirmed=[], start=[], end=[])
    num_words = tf.shape(word_ids)[0]
    for size in range(MAX_TERM_WORDS, 0, -1):
        first = tf.range(tf.maximum(num_words - size + 1, 0))
        positions = first[:, tf.newaxis] + tf.range(size)[tf.newaxis, :]
        ids = tf.gather(word_ids, positions)
        valid = tf.reduce_all(ids >= 0, axis=1) & tf.equal(
            tf.gather(sentence, first), tf.gather(sentence, first + size - 1)
        )
        keys = tf.strings.reduce_join(
            tf.strings.as_string(tf.sort(ids, axis=1)), axis=1, separator=" "
        )
        outputs["key"].append(tf.boolean_mask(keys, valid))
        affirmed = ~tf.reduce_any(tf.gather(negated, positions), axis=1)
        outputs["affirmed"].append(tf.boolean_mask(affirmed, valid))
        outputs["start"].append(tf.boolean_mask(tf.gather(starts, first), valid))
        outputs["end"].append(tf.boolean_mask(tf.gather(ends, first + size - 1), valid))
    return {name: tf.concat(values, axis=0) for name, values in outputs.items()}


def position_table(keys: list) -> tf.lookup.StaticHashTable:
    """String -> its position in `keys`, -1 for any other string."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(keys), dtype=tf.int32)),
        default_value=-1,
    )


def note_words(texts, vocabulary: tf.lookup.StaticHashTable, language: languages.Language) -> tuple:
    """`normalized_words` of `texts` `[batch]` with each word replaced by its id in
    `vocabulary` (`position_table` of the index's words): the arguments of `windows`, ragged."""
    words, *rest = normalized_words(texts, language)
    return (tf.ragged.map_flat_values(vocabulary.lookup, words), *rest)


class TermMatcher(tf.Module):
    """Notes `[batch]` -> per code `MATCH_FEATURES` and evidence spans, for `num_labels` codes."""

    def __init__(self, index: TermIndex, num_labels: int):
        super().__init__(name="term_matcher")
        self.num_labels = num_labels
        self.language = languages.named(index.language)
        self.vocabulary = position_table(index.words)
        self.terms = position_table(index.term_keys)
        # The pairs of term t are rows pair_starts[t] to pair_ends[t] (`pair_terms` is sorted).
        ends = np.cumsum(np.bincount(index.pair_terms, minlength=len(index.term_keys)))
        self.pair_ends = tf.constant(ends.astype(np.int64))
        self.pair_starts = tf.constant(np.r_[0, ends[:-1]].astype(np.int64))
        self.pair_codes = tf.constant(index.pair_codes)
        self.pair_values = tf.constant(index.pair_values)

    def __call__(self, texts) -> dict:
        """`features` float32 `[batch, num_labels, MATCH_FEATURES]`, `start`/`end` int64
        `[batch, num_labels]` (the bytes of the code's longest affirmed match, the first of
        those; without one, of its longest negated match; -1 where none)."""
        columns = note_words(texts, self.vocabulary, self.language)
        num_labels, num_features = self.num_labels, len(MATCH_FEATURES)

        def one_note(note):
            found = windows(*note)
            terms = self.terms.lookup(found["key"])
            matched = terms >= 0
            terms = tf.boolean_mask(terms, matched)
            pairs = tf.ragged.range(
                tf.gather(self.pair_starts, terms),
                tf.gather(self.pair_ends, terms),
            )
            window = tf.cast(pairs.value_rowids(), tf.int32)
            pairs = pairs.flat_values
            codes = tf.gather(self.pair_codes, pairs)
            values = tf.gather(self.pair_values, pairs)
            affirmed = tf.gather(tf.boolean_mask(found["affirmed"], matched), window)
            weight = tf.cast(affirmed, tf.float32)[:, tf.newaxis]
            negated = tf.gather(values, _NEGATED_VALUES, axis=1) * (1.0 - weight)
            features = tf.math.unsorted_segment_max(
                tf.concat([values * weight, negated], axis=1), codes, num_labels
            )
            features = tf.maximum(features, 0.0)  # codes without a match get 0, not -inf
            # Windows are longest first, then in text order: affirmed ones come before.
            no_match = tf.shape(terms)[0]
            order = window + tf.where(affirmed, 0, no_match)
            first = tf.math.unsorted_segment_min(order, codes, num_labels)
            first = tf.where(first < tf.int32.max, first % tf.maximum(no_match, 1), no_match)
            spans = [
                tf.gather(tf.concat([tf.boolean_mask(found[side], matched), [-1]], axis=0), first)
                for side in ("start", "end")
            ]
            return features, spans[0], spans[1]

        features, start, end = tf.map_fn(
            one_note,
            columns,
            fn_output_signature=(
                tf.TensorSpec([num_labels, num_features], tf.float32),
                tf.TensorSpec([num_labels], tf.int64),
                tf.TensorSpec([num_labels], tf.int64),
            ),
        )
        return dict(features=features, start=start, end=end)
