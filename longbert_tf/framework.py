"""TensorFlow with the Keras 2 API, imported in this one place.

`tensorflow_hub.KerasLayer` is a Keras 2 layer, so the package uses `tf_keras`
and sets `TF_USE_LEGACY_KERAS=1` before TensorFlow is first imported. Every
other module takes `tf` and `keras` from here. Entry points import it through
`quiet_start`, which holds back TensorFlow's native start-up notices.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_hub as hub  # noqa: E402
import tensorflow_text as tf_text  # noqa: E402
import tf_keras as keras  # noqa: E402
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset  # noqa: E402

__all__ = ["bert_vocab_from_dataset", "hub", "keras", "tf", "tf_text"]
