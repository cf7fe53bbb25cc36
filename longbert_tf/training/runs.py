"""A run's identity: the config saved in its model dir, and what binds its weights.

A run starts by writing `config.json` (the resolved `ExperimentConfig`) and
`labels.txt` (its label order) into the model dir (see `run_folder`); resuming
or exporting reads them back. Choices left open until a run starts (`compute_dtype="auto"`, the
fingerprints of `configs.RUN_BINDING`) are settled here, once.
"""

import dataclasses
import os

from absl import logging

from longbert_tf import files, hardware, run_folder
from longbert_tf.configs import RUN_BINDING, RUNTIME_FIELDS, ExperimentConfig
from longbert_tf.data import dataset


def resolve_compute_dtype(
    config: ExperimentConfig, saved: ExperimentConfig | None = None
) -> ExperimentConfig:
    """`config` with `compute_dtype="auto"` made concrete.

    A started run (`saved`, or else the config in `config.model_dir`) keeps its
    own dtype; a new one takes bfloat16 where this machine multiplies it
    natively (see `hardware`).
    """
    if config.compute_dtype != "auto":
        return config
    saved = saved or run_folder.saved_config(config.model_dir)
    if saved is not None and saved.compute_dtype != "auto":
        dtype, reason = saved.compute_dtype, "auto: the dtype the run started with"
    else:
        dtype, reason = hardware.compute_dtype("auto", config.strategy)
    logging.info("The encoder and label attention multiply in %s (%s)", dtype, reason)
    return dataclasses.replace(config, compute_dtype=dtype)


def same_run(config: ExperimentConfig, saved: ExperimentConfig | None) -> ExperimentConfig:
    """`config`, checked to be the run already in the model dir (if any) and bound as it is.

    What defines the run (data identity, model, optimisation, seed) must match; how and where
    it runs (`configs.RUNTIME_FIELDS`: folders, logging and checkpoint intervals, the
    distribution strategy) may change between sessions, and the new values are used.
    """
    if saved is None:
        return config
    ignored = RUN_BINDING + RUNTIME_FIELDS
    chosen = {key: value for key, value in config.to_dict().items() if key not in ignored}
    started = {key: value for key, value in saved.to_dict().items() if key not in ignored}
    changed = {key for key in chosen.keys() | started.keys() if chosen.get(key) != started.get(key)}
    if changed:
        raise ValueError(
            f"{config.model_dir} holds a run with a different config ({sorted(changed)}): "
            "use another --model_dir, or remove that one to start over"
        )
    return dataclasses.replace(config, **{name: getattr(saved, name) for name in RUN_BINDING})


def bind_run(config: ExperimentConfig, vocab, labels: list) -> ExperimentConfig:
    """`config` bound to the vocabulary and label order its weights are trained with.

    A config already bound (a run resumed or exported) must find the same ones:
    restored embeddings index token ids of the run's vocabulary, and its
    classifier rows follow the run's label order.
    """
    found = dict(
        vocab_fingerprint=vocab.fingerprint, labels_fingerprint=dataset.labels_fingerprint(labels)
    )
    what = dict(
        vocab_fingerprint="encoder vocabulary (re-preparing a dataset rebuilds its "
        "encoders/random-* with a vocabulary learned anew)",
        labels_fingerprint="label list (labels.txt)",
    )
    for name, value in found.items():
        expected = getattr(config, name)
        if expected is not None and expected != value:
            raise ValueError(
                f"{config.model_dir} was trained with another {what[name]}: {name} "
                f"{expected}, found {value}. Its weights only fit that one: restore the encoder "
                "and dataset it was trained with, or train a new --model_dir"
            )
    return dataclasses.replace(config, **found)


def write_start(config: ExperimentConfig, labels: list) -> None:
    """Writes a starting run's label order (all that serving needs beside the weights), then
    its config."""
    labels_text = "".join(f"{code}\n" for code in labels)
    files.write_text(os.path.join(config.model_dir, dataset.LABELS_FILE), labels_text)
    files.write_json(os.path.join(config.model_dir, run_folder.CONFIG_FILE), config.to_dict())
