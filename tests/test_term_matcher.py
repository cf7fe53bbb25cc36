"""The in-graph term matcher against a plain-Python re-derivation of its documented rules."""

import re

import numpy as np
import pytest

from longbert_tf.framework import tf
from longbert_tf.lexical import term_matcher as tm

POOL = (
    "fever fevers headache femur fracture fractures left right humerus abscess sepsis pain "
    "chest acute renal failure cough of the with no denies without and . \n"
).split(" ")


def reference_words(text: str) -> list:
    """`(word, sentence, negated, start, end)` of each kept word, by the module's rules."""
    pieces = [(m.group(), m.start(), m.end()) for m in re.finditer(r"[^\W_]+|[\n.]", text.lower())]
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


def test_words_follow_the_documented_rules():
    text = "No fevers.\nLeft femur Fractures of the humerus; sepsis, abscess and headaches"
    words, sentence, negated, starts, ends = tm.normalized_words(tf.constant([text]))
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


def random_index(rng, num_labels: int) -> tm.TermIndex:
    content = sorted(
        {re.sub(r"^(.{2,}[^isu])s$", r"\1", w) for w in POOL if w.isalpha()}
        - tm.STOP_WORDS
        - tm.NEGATION_CUES
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
    matched = 0
    for note, text in enumerate(texts):
        features, starts, ends = reference_match(text, index, num_labels)
        np.testing.assert_allclose(outputs["features"][note].numpy(), features, rtol=1e-6)
        np.testing.assert_array_equal(outputs["start"][note].numpy(), starts)
        np.testing.assert_array_equal(outputs["end"][note].numpy(), ends)
        matched += int((features[:, 0] > 0).sum())
    assert matched > 20  # the random notes do match terms


def test_word_order_and_plurals_do_not_matter_but_sentences_do():
    index = tm.TermIndex(
        ["femur", "fracture", "left"],
        ["0 1 2"],
        np.array([0], np.int32),
        np.array([1], np.int32),
        np.ones([1, 5], np.float32),
    )
    matcher = tm.TermMatcher(index, 2)
    texts = ["Fractures of the left femur.", "Left. Femur fracture", "No left femur fracture"]
    outputs = matcher(tf.constant(texts))
    assert outputs["features"][:, 1, 0].numpy().tolist() == [1, 0, 0]
    assert outputs["features"][:, 1, 5].numpy().tolist() == [0, 0, 1]  # negated only
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
