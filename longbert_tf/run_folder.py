"""A run's model dir: the names of what a run writes there, and its saved config.

    config.json        the resolved `ExperimentConfig` (`CONFIG_FILE`), written first
    labels.txt         the run's label order, in the dataset format (`data.dataset.LABELS_FILE`)
    checkpoints/       the latest state, to resume from (`CHECKPOINTS_DIR`)
    best/              the weights with the best validation micro F1 so far (`BEST_DIR`)
    train/, dev/       TensorBoard event files
    metrics.json       dev and test metrics at the threshold tuned on dev (`METRICS_FILE`),
                       written when the run is finished
    fusion/            its lexical fusion, once fitted (`experiments.fuse`, `FUSION_DIR`):
                       term_index.json (`TERM_INDEX_FILE`), fusion.json (`FUSION_FILE`) and
                       rankings.jsonl.gz (`RANKINGS_FILE`: dev's out-of-fold and test's
                       fused codes, ranked)

Training writes them (`training.runs`, `training.checkpoints`, `training.loop`,
`lexical.fitting`); serving, the benchmarks and a resumed run read them. A base
module: it imports only `configs`.
"""

import json
import os

from longbert_tf.configs import ExperimentConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
FUSION_DIR = "fusion"
TERM_INDEX_FILE = "term_index.json"
FUSION_FILE = "fusion.json"
RANKINGS_FILE = "rankings.jsonl.gz"


def saved_config(model_dir: str) -> ExperimentConfig | None:
    """The config of the run in `model_dir`, or None before it starts."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as config_file:
        # Through the dataclass, so fields added since the run started take their defaults.
        return ExperimentConfig.from_dict(json.load(config_file))
