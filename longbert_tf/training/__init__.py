"""Training a model on a prepared dataset.

- `inputs`: an experiment's encoder, labels, descriptions and token caches, resolved once;
  `experiment`: the model built from them, its batches and its counted splits.
- `trainer`: the model contract (`TrainableModel`) and one training step; `optimization`:
  Adam, schedules and parameter groups; `checkpoints`: the latest and best states;
  `runs`: a run folder's identity; `loop`: train, validate, evaluate, resume.
- `pretraining`: masked-language-model pretraining of an encoder on notes.

Imports `data`, `modeling`, `evaluation` and the base modules.
"""

from longbert_tf.training.experiment import Experiment, build_experiment
from longbert_tf.training.loop import train_and_evaluate
from longbert_tf.training.trainer import TrainableModel, Trainer

__all__ = ["Experiment", "TrainableModel", "Trainer", "build_experiment", "train_and_evaluate"]
