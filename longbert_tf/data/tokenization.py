"""WordPiece vocabularies and the in-graph BERT tokenizer built from them.

A vocabulary here is anything with a `fingerprint` (equal fingerprints give
equal ids) and `tokenize(texts) -> list of id lists`: the token cache
(`longbert_tf.data.token_cache`) accepts `Vocab` and CAML's `words.WordVocab` alike.
"""

import dataclasses
import functools
import hashlib

from longbert_tf import files
from longbert_tf.framework import bert_vocab_from_dataset, hub, tf, tf_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclasses.dataclass(frozen=True)
class Vocab:
    """A BERT `vocab.txt` (one token a line, id = line number) and its lower-casing flag."""

    path: str
    lower_case: bool

    @functools.cached_property
    def tokens(self) -> list:
        with tf.io.gfile.GFile(self.path, "r") as vocab_file:
            tokens = files.split_lines(vocab_file.read())
        missing = [token for token in SPECIAL_TOKENS[:4] if token not in tokens]
        if missing:
            raise ValueError(f"vocabulary {self.path} lacks the special tokens {missing}")
        return tokens

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identifies the tokenization: equal fingerprints give equal token ids."""
        content = "\n".join(self.tokens) + f"\nlower_case={self.lower_case}"
        return hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]

    def token_id(self, token: str) -> int:
        return self.tokens.index(token)

    def tokenize(self, texts: list) -> list:
        """WordPiece ids of each text (no special tokens), as lists of ints."""
        return make_tokenizer(self).tokenize(tf.constant(texts)).to_list()

    @property
    def cls_id(self) -> int:
        return self.token_id("[CLS]")

    @property
    def sep_id(self) -> int:
        return self.token_id("[SEP]")

    @property
    def pad_id(self) -> int:
        return self.token_id("[PAD]")


def make_tokenizer(vocab: Vocab) -> tf_text.FastBertTokenizer:
    """In-graph tokenizer: strings `[batch]` -> ragged int32 WordPiece ids `[batch, (tokens)]`."""
    return tf_text.FastBertTokenizer(
        vocab=vocab.tokens,
        token_out_type=tf.int32,
        lower_case_nfd_strip_accents=vocab.lower_case,
    )


def learn_vocab(texts, vocab_size: int, lower_case: bool = True) -> list:
    """Learns a WordPiece vocabulary of exactly `vocab_size` tokens from `texts`.

    Uses tensorflow-text's BERT vocabulary learner (the special tokens come
    first, [PAD] is id 0, every character seen gets a token). Slots the corpus
    does not fill become `[unusedN]`, as in the original BERT vocabularies, so
    the embedding table has the configured size.
    """
    texts = tf.data.Dataset.from_tensor_slices(list(texts)).batch(256)
    tokens = bert_vocab_from_dataset.bert_vocab_from_dataset(
        texts,
        vocab_size=vocab_size,
        reserved_tokens=list(SPECIAL_TOKENS),
        bert_tokenizer_params=dict(lower_case=lower_case),
    )
    return tokens + [f"[unused{i}]" for i in range(vocab_size - len(tokens))]


def vocab_of(resolved, handle: str) -> Vocab:
    """The vocabulary and lower-casing flag of a loaded TF-Hub BERT encoder SavedModel."""
    if not hasattr(resolved, "vocab_file") or not hasattr(resolved, "do_lower_case"):
        raise ValueError(
            f"encoder {handle} has no vocab_file/do_lower_case attributes: it is not a "
            "TF-Hub BERT encoder SavedModel"
        )
    return Vocab(
        path=resolved.vocab_file.asset_path.numpy().decode("utf-8"),
        lower_case=bool(resolved.do_lower_case.numpy()),
    )


def load_vocab(handle: str) -> Vocab:
    """The vocabulary and lower-casing flag of an encoder, without building a Keras layer."""
    return vocab_of(hub.load(handle), handle)
