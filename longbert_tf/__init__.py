"""longbert-tf: ICD coding of long clinical notes with segment-wise BERT and label attention."""

# Sets TF_USE_LEGACY_KERAS before any module of the package imports TensorFlow.
from longbert_tf import framework  # noqa: F401

__version__ = "0.1.0"
