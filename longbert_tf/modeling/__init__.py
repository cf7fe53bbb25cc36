"""The models: a BERT encoder over segments, label attention per code, and CAML.

- `bert`: the package's Keras BERT and its TF-Hub-format SavedModel; `convert`: Hugging Face
  checkpoints into it; `model_garden`: TF-Hub encoders (Model Garden's) into it, to compute in
  another dtype; `encoder_specs`: what an `--encoder` value names; `encoders`: loading one
  through `hub.KerasLayer`.
- `label_attention`: `LabelAttention` (dense or `chunked_attention`); `longbert`: LongBERT and
  what it shares with `caml`; `description_embeddings`: codes as text for label attention.

Imports `data` and the base modules.
"""

from longbert_tf.modeling.caml import CAML
from longbert_tf.modeling.encoders import Encoder, load
from longbert_tf.modeling.label_attention import LabelAttention
from longbert_tf.modeling.longbert import LongBERT, NoteClassifier, longbert_for

__all__ = [
    "CAML",
    "Encoder",
    "LabelAttention",
    "LongBERT",
    "NoteClassifier",
    "load",
    "longbert_for",
]
