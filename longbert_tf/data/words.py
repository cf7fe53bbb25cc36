"""CAML's word-level input (Mullenbach et al. 2018): words, vocabulary and word2vec embeddings.

Words are `\\w+` matches, lower-cased; tokens without a letter (numbers,
underscores) are dropped. The vocabulary holds every word that occurs in at
least 3 training notes (CAML's threshold), in frequency order; id 0 is
padding and id 1 stands for any other word. Embeddings are 100-dimensional
word2vec vectors (gensim CBOW, window 5, 5 epochs, as CAML) trained on the
training notes and scaled to unit length; the padding row is zero and words
without a vector get a seeded random one. Both are built once per dataset and
cached in `DATASET/caml/`, keyed by the training notes.
"""

import collections
import dataclasses
import functools
import hashlib
import json
import os
import re

import numpy as np
from absl import logging

from longbert_tf import files
from longbert_tf.data import dataset
from longbert_tf.framework import tf

WORD = re.compile(r"\w+")
PAD_ID, UNKNOWN_ID = 0, 1
MIN_DOCUMENT_FREQUENCY = 3
EMBEDDING_SIZE = 100
WORD2VEC_EPOCHS = 5


def split_words(text: str) -> list:
    """CAML's tokens of a text: lower-cased `\\w+` matches that contain a letter."""
    return [word.lower() for word in WORD.findall(text) if any(c.isalpha() for c in word)]


@dataclasses.dataclass(frozen=True)
class WordVocab:
    """Word ids for CAML: 0 padding, 1 unknown, then `words` in order."""

    words: tuple

    @functools.cached_property
    def index(self) -> dict:
        return {word: position + 2 for position, word in enumerate(self.words)}

    @functools.cached_property
    def fingerprint(self) -> str:
        content = "caml-words\n" + "\n".join(self.words)
        return hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]

    @property
    def size(self) -> int:
        return len(self.words) + 2

    def tokenize(self, texts: list) -> list:
        """Word ids of each text (all of its words; the pipeline cuts at `max_words`)."""
        return [[self.index.get(word, UNKNOWN_ID) for word in split_words(text)] for text in texts]


def _stable_hash(word: str) -> int:
    """gensim seeds each vector with a hash of its word; Python's own is salted per process."""
    return int(hashlib.md5(word.encode("utf-8")).hexdigest()[:8], 16)


def build(texts, seed: int = 0) -> tuple:
    """Returns `(WordVocab, embeddings [vocab size, 100] float32)` learned from `texts`."""
    from gensim.models import Word2Vec  # imported here: slow, and only CAML needs it

    documents = [split_words(text) for text in texts]
    document_frequency = collections.Counter(word for doc in documents for word in set(doc))
    kept = sorted(
        (word for word, count in document_frequency.items() if count >= MIN_DOCUMENT_FREQUENCY),
        key=lambda word: (-document_frequency[word], word),
    )
    vocab = WordVocab(tuple(kept))
    word2vec = Word2Vec(
        sentences=documents,
        vector_size=EMBEDDING_SIZE,
        min_count=0,
        workers=1,
        epochs=WORD2VEC_EPOCHS,
        seed=seed,
        hashfxn=_stable_hash,
    )
    rng = np.random.default_rng(seed)
    embeddings = rng.uniform(-0.025, 0.025, (vocab.size, EMBEDDING_SIZE)).astype(np.float32)
    embeddings[PAD_ID] = 0.0
    for word, word_id in vocab.index.items():
        if word in word2vec.wv:
            embeddings[word_id] = word2vec.wv[word]
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings = np.divide(embeddings, norms, out=np.zeros_like(embeddings), where=norms > 0)
    return vocab, embeddings


def cached_build(dataset_dir: str, seed: int = 0) -> tuple:
    """`build` on the training notes of a dataset, cached in `dataset_dir/caml/` (written whole,
    rebuilt when the training notes or the seed change)."""
    cache_dir = os.path.join(dataset_dir, "caml")
    source = dict(notes=files.file_sha256(dataset.notes_path(dataset_dir, "train")), seed=seed)
    files.recover(cache_dir)
    info_path = os.path.join(cache_dir, "source.json")
    if os.path.exists(info_path):
        with open(info_path) as info_file:
            if json.load(info_file) == source:
                with open(os.path.join(cache_dir, "words.txt"), encoding="utf-8") as words_file:
                    vocab = WordVocab(tuple(files.split_lines(words_file.read())))
                return vocab, np.load(os.path.join(cache_dir, "embeddings.npy"))
    logging.info("Building CAML's vocabulary and word2vec embeddings for %s", dataset_dir)
    vocab, embeddings = build(dataset.read_notes(dataset_dir, "train").text, seed)
    with files.atomic_dir(cache_dir, ("words.txt", "embeddings.npy", "source.json")) as temporary:
        with open(os.path.join(temporary, "words.txt"), "w", encoding="utf-8") as words_file:
            words_file.writelines(f"{word}\n" for word in vocab.words)
        np.save(os.path.join(temporary, "embeddings.npy"), embeddings)
        files.write_json(os.path.join(temporary, "source.json"), source)
    return vocab, embeddings


def word_segmenter(max_words: int):
    """`word_ids -> (ids, mask)`, int32 `[1, n]`: the first `max_words` words as one segment.

    A note without words gives one padding position (`n = 1`, mask 0).
    """

    def segment(word_ids):
        word_ids = tf.cast(word_ids[:max_words], tf.int32)
        word_ids = tf.cond(tf.size(word_ids) > 0, lambda: word_ids, lambda: tf.constant([PAD_ID]))
        mask = tf.cast(word_ids != PAD_ID, tf.int32)
        return word_ids[tf.newaxis, :], mask[tf.newaxis, :]

    return segment
