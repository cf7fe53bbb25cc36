"""Evaluates one model on one device and under MirroredStrategy over 2 logical CPUs; prints both.

Run as `python -m tests.mirrored_evaluation DATA_DIR ENCODER_DIR` (a process of its own:
logical devices must be set before TensorFlow starts). Prints one JSON line:
`{"one_device": metrics, "mirrored": metrics, "replicas": 2}`.
"""

import json
import sys

from longbert_tf import configs
from longbert_tf.framework import keras, tf
from longbert_tf.training import loop
from longbert_tf.training.experiment import build_experiment


def main(data_dir: str, encoder_dir: str) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    config = configs.ExperimentConfig(
        dataset="synthetic",
        data_dir=data_dir,
        model_dir="unused",
        encoder=encoder_dir,
        segments=configs.SegmentConfig(256, 128),
        batch_size=3,  # 8 dev notes: the last batch is short, and uneven over 2 replicas
        learning_rate=1e-3,
        train_steps=1,
        eval_every=1,
        label_init="descriptions",  # built (descriptions embedded) under either strategy
        compute_dtype="float32",  # what is compared is the gathering, not the arithmetic
    )
    keras.utils.set_random_seed(0)
    single = build_experiment(config)
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored = build_experiment(config, mirrored_strategy)
    mirrored.model.set_weights(single.model.get_weights())  # the same checkpoint
    results = dict(
        one_device=loop.evaluate(single),
        mirrored=loop.evaluate(mirrored),
        replicas=mirrored_strategy.num_replicas_in_sync,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
