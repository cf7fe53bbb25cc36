"""Code descriptions embedded by the note encoder, for `--label_init=descriptions`.

Each description (`data.descriptions`) is read as one short segment; its
token vectors, averaged and scaled to unit length, condition the code's label
attention (see `label_attention.LabelAttention`). Embeddings are cached in the
dataset folder under `data.descriptions.EMBEDDING_CACHE_DIR`.
"""

import hashlib
import json
import os

import numpy as np
from absl import logging

from longbert_tf import distribute, files
from longbert_tf.data.descriptions import EMBEDDING_CACHE_DIR
from longbert_tf.framework import tf

# Positions of a description segment, [CLS] and [SEP] included (ICD-10-CM titles
# are at most about 60 WordPiece tokens; nearly all are below 32).
DESCRIPTION_LENGTH = 48
EMBED_BATCH_SIZE = 256


def description_inputs(texts: list, vocab) -> dict:
    """Descriptions as one-segment model inputs, int32 `[len(texts), 1, DESCRIPTION_LENGTH]`.

    Each is `[CLS] tokens [SEP]`, cut to DESCRIPTION_LENGTH positions; an
    empty description is `[CLS] [SEP]`.
    """
    content = DESCRIPTION_LENGTH - 2
    rows = [ids[:content] for ids in vocab.tokenize(list(texts))]
    word_ids = np.full([len(rows), DESCRIPTION_LENGTH], vocab.pad_id, np.int32)
    mask = np.zeros_like(word_ids)
    for row, ids in enumerate(rows):
        word_ids[row, : len(ids) + 2] = [vocab.cls_id, *ids, vocab.sep_id]
        mask[row, : len(ids) + 2] = 1
    return dict(input_word_ids=word_ids[:, np.newaxis], input_mask=mask[:, np.newaxis])


def embed(model, texts: list, vocab) -> np.ndarray:
    """Unit-length embeddings of `texts` by `model.encode`: float32 `[len(texts), hidden]`.

    The mean of the description's token vectors, over the tokens label
    attention reads (see `LongBERT.encode`), scaled to length 1; an empty text
    gives a zero row. Texts are embedded shortest first, each batch padded to
    its longest text (rounded up to 8 positions), not to DESCRIPTION_LENGTH.
    """
    inputs = description_inputs(texts, vocab)
    lengths = inputs["input_mask"][:, 0].sum(axis=1)
    order = np.argsort(lengths, kind="stable")

    @tf.function(reduce_retracing=True)  # a width per batch
    def embed_batch(batch):
        tokens, mask = model.encode(batch, training=False)
        mask = tf.cast(mask, tf.float32)[:, :, tf.newaxis]
        mean = tf.reduce_sum(tokens * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
        return tf.math.l2_normalize(mean, -1)

    embeddings = [None] * len(texts)
    for start in range(0, len(texts), EMBED_BATCH_SIZE):
        rows = order[start : start + EMBED_BATCH_SIZE]
        width = -(-int(lengths[rows].max()) // 8) * 8
        batch = {name: value[rows][..., :width] for name, value in inputs.items()}
        # Every replica embeds the same batch (an encoder loaded in a strategy's scope runs
        # only in a replica context); the first replica's result is kept.
        for row, embedding in zip(rows, distribute.run_on_replicas(embed_batch, batch).numpy()):
            embeddings[row] = embedding
    embeddings = np.stack(embeddings).astype(np.float32)
    embeddings[[not text for text in texts]] = 0.0
    return embeddings


def embedding_key(model, texts: list, vocab) -> str:
    """16 hex digits that change with anything `embed` depends on: the encoder's weights, the
    texts, their tokenization and what label attention reads of the tokens."""
    digest = hashlib.sha256()
    for weight in model.encoder.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    settings = [texts, vocab.fingerprint, DESCRIPTION_LENGTH]
    settings += [model.normalize_tokens, model.attend_special_tokens]
    digest.update(json.dumps(settings).encode())
    return digest.hexdigest()[:16]


def cached_embed(model, texts: list, vocab, dataset_dir: str) -> np.ndarray:
    """`embed`, computed once per `embedding_key` and kept in the dataset folder."""
    path = os.path.join(
        dataset_dir, EMBEDDING_CACHE_DIR, f"{embedding_key(model, texts, vocab)}.npy"
    )
    if os.path.exists(path):
        logging.info("Code description embeddings from %s", path)
        return np.load(path)
    embeddings = embed(model, texts, vocab)
    with files.atomic_file(path) as temporary, open(temporary, "wb") as out:
        np.save(out, embeddings)
    return embeddings
