"""A plain-Python re-derivation of the term matcher's documented rules
(`longbert_tf.lexical.term_matcher`): its words and offsets, and a brute-force match."""

import re
import unicodedata

import numpy as np

from longbert_tf.lexical import term_matcher as tm


def reference_words(text: str) -> list:
    """`(word, sentence, negated, start, end)` of each kept word, by the module's rules; `start`
    and `end` are UTF-8 byte offsets into `text` as written."""

    def byte_offset(chars: int) -> int:
        return len(text[:chars].encode())

    # Runs of letters, combining marks and digits; each newline and full stop on its own.
    kinds = ["w" if unicodedata.category(c)[0] in "LMN" else c if c in "\n." else " " for c in text]
    pieces = [
        (
            unicodedata.normalize("NFC", text[m.start() : m.end()]).lower(),
            byte_offset(m.start()),
            byte_offset(m.end()),
        )
        for m in re.finditer(r"w+|[\n.]", "".join(kinds))
    ]
    kept, sentence, sentences = [], 0, []
    for piece, _, _ in pieces:
        sentence += piece in ("\n", ".")
        sentences.append(sentence)
    for position, (piece, start, end) in enumerate(pieces):
        if piece in ("\n", ".") or piece in tm.NEGATION_CUES or piece in tm.STOP_WORDS:
            continue
        negated = any(
            pieces[back][0] in tm.NEGATION_CUES and sentences[back] == sentences[position]
            for back in range(max(0, position - tm.NEGATION_WINDOW), position)
        )
        word = re.sub(r"^(.{2,}[^isu])s$", r"\1", piece)
        kept.append((word, sentences[position], negated, start, end))
    return kept


def reference_match(text: str, index: tm.TermIndex, num_labels: int) -> tuple:
    """Features `[num_labels, MATCH_FEATURES]` and spans by brute force over every window."""
    words = reference_words(text)
    word_id = {word: i for i, word in enumerate(index.words)}
    term_id = {key: i for i, key in enumerate(index.term_keys)}
    features = np.zeros([num_labels, len(tm.MATCH_FEATURES)], np.float32)
    best = {}  # code -> (-size, start, end)
    for size in range(1, tm.MAX_TERM_WORDS + 1):
        for first in range(len(words) - size + 1):
            window = words[first : first + size]
            if len({w[1] for w in window}) > 1 or any(w[0] not in word_id for w in window):
                continue
            key = " ".join(str(i) for i in sorted(word_id[w[0]] for w in window))
            if key not in term_id:
                continue
            affirmed = not any(w[2] for w in window)
            for pair in np.flatnonzero(index.pair_terms == term_id[key]):
                code, values = index.pair_codes[pair], index.pair_values[pair]
                if affirmed:
                    features[code, :5] = np.maximum(features[code, :5], values)
                    span = (-size, window[0][3], window[-1][4])
                    best[code] = min(best.get(code, span), span)
                else:
                    features[code, 5:] = np.maximum(features[code, 5:], values[[0, 3]])
    starts = np.full(num_labels, -1)
    ends = np.full(num_labels, -1)
    for code, (_, start, end) in best.items():
        starts[code], ends[code] = start, end
    return features, starts, ends
