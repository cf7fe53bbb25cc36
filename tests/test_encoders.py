"""Building, saving and loading TF-Hub-format BERT encoders."""

import os

import numpy as np
import pytest

from longbert_tf.data import dataset, tokenization
from longbert_tf.framework import tf
from longbert_tf.modeling import bert, encoders
from longbert_tf.modeling.bert import BertArchitecture, build_bert_encoder
from tests.conftest import TINY_ARCH


def bert_parameter_count(arch: BertArchitecture) -> int:
    """BERT's parameter count by formula: embeddings, blocks, pooler."""
    hidden, inner = arch.hidden_size, arch.intermediate_size
    embeddings = (arch.vocab_size + arch.max_positions + arch.type_vocab_size) * hidden + 2 * hidden
    block = 4 * (hidden * hidden + hidden) + 2 * hidden  # attention + layer norm
    block += hidden * inner + inner + inner * hidden + hidden + 2 * hidden  # feed-forward + norm
    return embeddings + arch.num_layers * block + hidden * hidden + hidden


def test_parameter_count_of_the_papers_encoder_is_table_1():
    arch = BertArchitecture.from_name("bert_en_uncased_L-2_H-256_A-4")
    assert arch == BertArchitecture()
    assert build_bert_encoder(arch).count_params() == bert_parameter_count(arch) == 9_591_040


def test_parameter_count_of_another_size():
    arch = BertArchitecture.from_name("L-4_H-128_A-2", vocab_size=1000)
    assert build_bert_encoder(arch).count_params() == bert_parameter_count(arch)


def test_architecture_names_are_checked():
    with pytest.raises(ValueError, match="does not name a BERT size"):
        BertArchitecture.from_name("bert-base")
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        BertArchitecture(hidden_size=256, num_heads=3)


def test_learned_vocabulary_covers_the_notes(tiny_dataset_dir):
    texts = dataset.read_notes(tiny_dataset_dir, "train").text
    tokens = tokenization.learn_vocab(texts, 700)
    assert len(tokens) == 700 and len(set(tokens)) == 700
    assert tokens[:5] == list(tokenization.SPECIAL_TOKENS) and tokens[-1].startswith("[unused")
    assert "patient" in tokens and "##s" in tokens


def test_saved_encoder_loads_through_hub_with_its_vocabulary(tiny_encoder_dir, tiny_dataset_dir):
    encoder = encoders.load(tiny_encoder_dir, segment_length=64)
    assert (encoder.hidden_size, encoder.max_positions) == (16, 128)
    assert encoder.vocab.lower_case and encoder.vocab.path.startswith(tiny_encoder_dir)
    assert encoder.num_parameters == bert_parameter_count(TINY_ARCH)
    # The learned vocabulary tokenizes the notes without unknown pieces.
    tokenizer = tokenization.make_tokenizer(encoder.vocab)
    texts = dataset.read_notes(tiny_dataset_dir, "dev").text.tolist()
    ids = tokenizer.tokenize(tf.constant(texts)).flat_values.numpy()
    assert ids.size > 1000 and encoder.vocab.token_id("[UNK]") not in ids


def test_reloaded_encoder_reproduces_the_keras_network(tmp_path):
    keras_model = build_bert_encoder(TINY_ARCH, seed=5)
    vocab = list(tokenization.SPECIAL_TOKENS) + [f"w{i}" for i in range(TINY_ARCH.vocab_size - 5)]
    rng = np.random.default_rng(0)
    inputs = dict(
        input_word_ids=rng.integers(0, TINY_ARCH.vocab_size, (2, 20)).astype(np.int32),
        input_mask=np.ones((2, 20), np.int32),
        input_type_ids=np.zeros((2, 20), np.int32),
    )
    expected = keras_model(inputs)
    bert.save_hub_format(keras_model, TINY_ARCH, vocab, False, str(tmp_path / "enc"))
    assert sorted(os.listdir(tmp_path)) == ["enc"]
    encoder = encoders.load(str(tmp_path / "enc"), segment_length=20)
    outputs = encoder.layer(inputs)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(outputs[key].numpy(), expected[key].numpy(), atol=1e-5)
    assert not encoder.vocab.lower_case and encoder.vocab.tokens == vocab


def test_segment_longer_than_the_position_table_is_refused(tiny_encoder_dir):
    with pytest.raises(ValueError, match="segment_length=256 exceeds the 128 positions"):
        encoders.load(tiny_encoder_dir, segment_length=256)
