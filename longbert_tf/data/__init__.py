"""Notes and codes as data, up to the segment tensors a model reads.

- `dataset`: the prepared dataset folder (`labels.txt`, `{split}.jsonl.gz`), read and written;
  `descriptions`: each code's text (`descriptions.tsv`); `dataset_summary`: what a split holds.
- `tokenization`: the encoder's WordPiece vocabulary, in-graph; `words`: CAML's word vocabulary.
- `token_cache`: every split tokenized once into a TFRecord; `segmentation`: a note's tokens
  as `[num_segments, segment_length]` encoder inputs; `pipeline`: the tf.data chains.
- `synthetic`: the embedded default dataset.

Imports only the base modules (`framework`, `files`, `configs`).
"""

from longbert_tf.data.dataset import SPLITS, read_labels, read_notes, write_dataset
from longbert_tf.data.descriptions import code_descriptions, describe, read_descriptions
from longbert_tf.data.pipeline import segment_dataset, training_dataset
from longbert_tf.data.segmentation import bert_segmenter
from longbert_tf.data.synthetic import SyntheticConfig
from longbert_tf.data.tokenization import Vocab, load_vocab

__all__ = [
    "SPLITS",
    "SyntheticConfig",
    "Vocab",
    "bert_segmenter",
    "code_descriptions",
    "describe",
    "load_vocab",
    "read_descriptions",
    "read_labels",
    "read_notes",
    "segment_dataset",
    "training_dataset",
    "write_dataset",
]
