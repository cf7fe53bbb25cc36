"""Codes as text: each code's description, and its embedding by a note encoder.

A prepared dataset may hold `descriptions.tsv` beside `labels.txt`: one code
a line, a tab, then its description (e.g. `R50.9<TAB>Fever, unspecified`).
The `data_prep` modules write it (ICD-10-CM titles from `simple-icd-10-cm`,
MIMIC-III's own ICD-9 titles, the synthetic phrases). `--label_init=descriptions`
embeds every code's description with the note encoder (`embed`) and conditions
label attention on it (see `layers.LabelAttention`).
"""

import hashlib
import importlib
import json
import os

import numpy as np
from absl import logging

from longbert_tf import configs, distribute, files
from longbert_tf.framework import tf

DESCRIPTIONS_FILE = "descriptions.tsv"
# Embeddings already computed, in a dataset folder: `<embedding_key>.npy`.
EMBEDDING_CACHE_DIR = "description_cache"
# Positions of a description segment, [CLS] and [SEP] included (ICD-10-CM titles
# are at most about 60 WordPiece tokens; nearly all are below 32).
DESCRIPTION_LENGTH = 48
EMBED_BATCH_SIZE = 256


def icd10cm():
    """`simple_icd_10_cm`, imported on first use: it parses the whole classification (2 s)."""
    return importlib.import_module("simple_icd_10_cm")


def read_descriptions(path: str) -> dict:
    """`{code: description}` from a tab-separated file (code, description; no header)."""
    descriptions = {}
    with open(path, encoding="utf-8") as descriptions_file:
        for line_number, line in enumerate(descriptions_file, start=1):
            code, tab, description = line.rstrip("\n").partition("\t")
            if not tab or not code.strip():
                raise ValueError(
                    f"{path}, line {line_number}: expected 'code<TAB>description', got {line!r:.80}"
                )
            descriptions[code.strip()] = description.strip()
    return descriptions


def describe(code: str, descriptions: dict, code_system: str) -> str:
    """A code's description: from `descriptions`, else, for an ICD-10-CM code (`code_system`,
    see `configs.DatasetPreset`), its title, else ''. ICD-9 codes such as V29.0 are valid
    ICD-10-CM syntax with another meaning: they never get ICD-10-CM titles."""
    if code in descriptions:
        return descriptions[code]
    if code_system == configs.ICD10CM and icd10cm().is_valid_item(code):
        return icd10cm().get_description(code)
    return ""


def icd10cm_titles(codes) -> dict:
    """ICD-10-CM titles of the codes `simple-icd-10-cm` knows (the others are left out)."""
    classification = icd10cm()
    return {
        code: classification.get_description(code)
        for code in codes
        if classification.is_valid_item(code)
    }


def write_descriptions(dataset_dir: str, descriptions: dict) -> None:
    """Writes `descriptions.tsv` of a dataset folder (tabs and newlines in titles become spaces)."""
    lines = []
    for code, description in sorted(descriptions.items()):
        description = " ".join(description.split())
        if description:
            lines.append(f"{code}\t{description}\n")
    with open(os.path.join(dataset_dir, DESCRIPTIONS_FILE), "w", encoding="utf-8") as out:
        out.writelines(lines)


def code_descriptions(dataset_dir: str, labels: list) -> list:
    """The description of every code of `labels` ('' when there is none), in label order.

    Raises FileNotFoundError when the dataset has no `descriptions.tsv`, and
    ValueError when none of the codes has a description.
    """
    path = os.path.join(dataset_dir, DESCRIPTIONS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: label_init=descriptions needs the codes' descriptions; "
            "prepare the dataset again with its data_prep module (which writes them)"
        )
    descriptions = read_descriptions(path)
    texts = [descriptions.get(code, "") for code in labels]
    if not any(texts):
        raise ValueError(f"{path} describes none of the {len(labels)} codes of {dataset_dir}")
    return texts


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
