"""Making sure a preset's dataset folder exists before an experiment uses it."""

import os

from data_prep import synthetic
from longbert_tf import dataset
from longbert_tf.configs import ExperimentConfig


def ensure_prepared(config: ExperimentConfig) -> None:
    """Generates the synthetic dataset when missing; for the others says how to prepare them."""
    if os.path.exists(os.path.join(config.dataset_dir, dataset.LABELS_FILE)):
        return
    if config.dataset == "synthetic":
        synthetic.prepare(config.data_dir, synthetic.SyntheticConfig(seed=config.seed))
        return
    command = config.preset.prepare_command.replace("DATA_DIR", config.data_dir)
    raise SystemExit(
        f"Dataset {config.dataset} is not prepared in {config.dataset_dir}: run\n  {command}"
    )
