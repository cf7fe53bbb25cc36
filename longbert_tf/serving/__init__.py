"""Serving a trained run: a SavedModel that takes raw notes (or token ids) and returns codes,
probabilities and evidence (`export`).

Imports every other subpackage.
"""

from longbert_tf.serving.export import code_descriptions, export, latest_version

__all__ = ["code_descriptions", "export", "latest_version"]
