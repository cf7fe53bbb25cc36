"""A plain-Python re-derivation of the term matcher's documented rules
(`longbert_tf.lexical.term_matcher`, `languages`): its words and offsets, and a brute-force
match."""

import re
import unicodedata

import numpy as np

from longbert_tf.lexical import languages
from longbert_tf.lexical import term_matcher as tm

# The vowels a folding language writes with an accent, and their plain letters.
ACCENTED = {c: unicodedata.normalize("NFD", c)[0] for c in "áàâäéèêëíìîïóòôöúùûü"}


def reference_words(text: str, language: languages.Language = languages.ENGLISH) -> list:
    """`(word, sentence, negated, start, end)` of each kept word, by the module's rules; `start`
    and `end` are UTF-8 byte offsets into `text` as written."""

    def byte_offset(chars: int) -> int:
        return len(text[:chars].encode())

    def normalized(piece: str) -> str:
        piece = unicodedata.normalize("NFC", piece).lower()
        return "".join(ACCENTED.get(c, c) for c in piece) if language.fold_accents else piece

    # Runs of letters, combining marks and digits; each newline and full stop on its own.
    kinds = ["w" if unicodedata.category(c)[0] in "LMN" else c if c in "\n." else " " for c in text]
    pieces = [
        (normalized(text[m.start() : m.end()]), byte_offset(m.start()), byte_offset(m.end()))
        for m in re.finditer(r"w+|[\n.]", "".join(kinds))
    ]
    sentences, clauses, sentence, clause = [], [], 0, 0
    for piece, _, _ in pieces:
        sentence += piece in ("\n", ".")
        clause += piece in ("\n", ".") or piece in language.terminators
        sentences.append(sentence)
        clauses.append(clause)
    cues = language.forward_cues | language.backward_cues
    kept = []
    for position, (piece, start, end) in enumerate(pieces):
        skipped = cues | language.stop_words | language.terminators
        if piece in ("\n", ".") or piece in skipped:
            continue
        near = [
            other
            for other in range(position - tm.CUE_SCOPE, position + tm.CUE_SCOPE + 1)
            if 0 <= other < len(pieces)
            and other != position
            and clauses[other] == clauses[position]
        ]
        negated = any(
            pieces[other][0]
            in (language.forward_cues if other < position else language.backward_cues)
            for other in near
        )
        word = re.sub(language.plural, r"\1", piece)
        kept.append((word, sentences[position], negated, start, end))
    return kept


def reference_match(
    text: str, index: tm.TermIndex, num_labels: int, language=languages.ENGLISH
) -> tuple:
    """Features `[num_labels, MATCH_FEATURES]` and spans by brute force over every window."""
    words = reference_words(text, language)
    word_id = {word: i for i, word in enumerate(index.words)}
    term_id = {key: i for i, key in enumerate(index.term_keys)}
    values_count = len(tm.PAIR_VALUES)
    negatable = [tm.PAIR_VALUES.index(name) for name in tm.NEGATED_FEATURES.values()]
    features = np.zeros([num_labels, len(tm.MATCH_FEATURES)], np.float32)
    best = {}  # code -> (negated, -size, start, end)
    for size in range(1, tm.MAX_TERM_WORDS + 1):
        for first in range(len(words) - size + 1):
            window = words[first : first + size]
            if len({w[1] for w in window}) > 1 or any(w[0] not in word_id for w in window):
                continue
            key = " ".join(str(i) for i in sorted(word_id[w[0]] for w in window))
            if key not in term_id:
                continue
            negated = any(w[2] for w in window)
            for pair in np.flatnonzero(index.pair_terms == term_id[key]):
                code, values = index.pair_codes[pair], index.pair_values[pair]
                if negated:
                    features[code, values_count:] = np.maximum(
                        features[code, values_count:], values[negatable]
                    )
                else:
                    features[code, :values_count] = np.maximum(
                        features[code, :values_count], values
                    )
                span = (negated, -size, window[0][3], window[-1][4])
                best[code] = min(best.get(code, span), span)
    starts = np.full(num_labels, -1)
    ends = np.full(num_labels, -1)
    for code, (_, _, start, end) in best.items():
        starts[code], ends[code] = start, end
    return features, starts, ends
