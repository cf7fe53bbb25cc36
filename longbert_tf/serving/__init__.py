"""Serving a trained run: a SavedModel that takes raw notes (or token ids) and returns codes,
probabilities and evidence.

- `coder`: the serving module (`Coder`, `TextCoder`, `TranslationCoder`) around a finished
  run's best weights;
- `export`: `export.export(model_dir, export_dir)` writes it as a versioned SavedModel;
  `latest_version` finds what TensorFlow Serving would serve;
- `suggestions`: a loaded text export answering notes with codes, near misses and evidence
  (what `experiments.predict` prints and the `review` application shows).

Imports every other subpackage but `review`.
"""

from longbert_tf.serving import coder, export
from longbert_tf.serving.coder import Coder, TextCoder, TranslationCoder, load_trained
from longbert_tf.serving.export import code_descriptions, latest_version

__all__ = [
    "Coder",
    "TextCoder",
    "TranslationCoder",
    "code_descriptions",
    "coder",
    "export",
    "latest_version",
    "load_trained",
]
