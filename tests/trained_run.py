"""The one tiny trained run the suite shares (session fixtures `trained_run` and `exports` in
conftest.py): synthetic notes that word their codes' phrases, a float32 run that learned where
that evidence is, and its exports, built once and only when a test asks for them."""

import dataclasses
import os
import shutil

from longbert_tf import configs, files, run_folder
from longbert_tf.data import dataset, descriptions, synthetic
from longbert_tf.lexical import fitting
from longbert_tf.serving import export
from longbert_tf.training import loop

# Short notes, few codes: a tiny encoder learns where the evidence is within a few hundred steps.
TRAINED_SYNTHETIC = synthetic.SyntheticConfig(
    num_codes=15,
    num_train=240,
    num_dev=30,
    num_test=30,
    median_tokens=120,
    length_sigma=0.5,
    min_tokens=60,
    max_tokens=400,
    min_codes_per_note=1,
    max_codes_per_note=3,
    distractors_per_note=1.0,
    seed=5,
)
ENCODER = "random:L-1_H-32_A-2"
ENCODER_LAYERS = 1
TRAIN_STEPS = 150
# What "a trained model" must have learned for its evidence and codes to mean something.
MIN_TEST_MICRO_F1 = 0.6


def train(root: str) -> tuple:
    """`(config, metrics)` of the run in `root` (float32: its subject is what it learned, not
    its arithmetic; the exports compute in each suite dtype). Two segments of 128 positions.
    A finished run in `root` is read, not trained again."""
    if not os.path.exists(f"{root}/data/synthetic/{dataset.LABELS_FILE}"):
        synthetic.prepare(f"{root}/data", TRAINED_SYNTHETIC)
    config = configs.ExperimentConfig(
        dataset="synthetic",
        data_dir=f"{root}/data",
        model_dir=f"{root}/run",
        encoder=ENCODER,
        segments=configs.SegmentConfig(256, 128),
        batch_size=8,
        learning_rate=3e-3,
        train_steps=TRAIN_STEPS,
        eval_every=TRAIN_STEPS,
        compute_dtype="float32",
    )
    results = loop.train_and_evaluate(config)
    return config, results


def copy_run(source: str, model_dir: str) -> None:
    """Copies the run folder `source` to `model_dir`, whose config then names its own folder
    (where a run lives may change: it is a runtime field), so nothing reaches `source` through
    the copy."""
    shutil.copytree(source, model_dir)
    moved = dataclasses.replace(run_folder.saved_config(model_dir), model_dir=model_dir)
    files.write_json(os.path.join(model_dir, run_folder.CONFIG_FILE), moved.to_dict())


class Exports:
    """The run's exports in `root`, each written on first use (under `lock()`, by whichever
    process asks first): `text(dtype)`, `token_ids(dtype)`, `fused_text()`,
    `translation_text()`."""

    def __init__(self, config: configs.ExperimentConfig, root: str, lock):
        self.config, self.root, self.lock = config, root, lock

    def _export(self, inputs: str, dtype: str) -> str:
        base = f"{self.root}/{inputs}_{dtype}"
        with self.lock():
            if not os.path.isdir(base):
                export.export(self.config.model_dir, base, inputs, compute_dtype=dtype)
            return export.latest_version(base)

    def text(self, dtype: str = "float32") -> str:
        return self._export("text", dtype)

    def token_ids(self, dtype: str = "float32") -> str:
        return self._export("token_ids", dtype)

    def fused_text(self) -> str:
        """The float32 text export of a copy of the run fused with term matching, fitted as
        `experiments.fuse` fits it (with 2 folds, the fewest); the run itself stays unfused."""
        base = f"{self.root}/fused_text"
        with self.lock():
            if not os.path.isdir(base):
                model_dir = f"{self.root}/fused_run"
                shutil.rmtree(model_dir, ignore_errors=True)  # a copy whose fitting failed
                copy_run(self.config.model_dir, model_dir)
                fitting.fit_run_fusion(model_dir, folds=2)
                export.export(model_dir, base, "text", compute_dtype="float32")
            return export.latest_version(base)

    def translation_text(self) -> str:
        """The float32 export of a `coder.TranslationCoder`: a copy of the run fused as in
        `fused_text`, but matching another copy of its notes (`match_data_dir`, the run's
        dataset with its notes in reverse order: `translation_run` and `reordered` here)."""
        base = f"{self.root}/translation_text"
        with self.lock():
            if not os.path.isdir(base):
                model_dir, match_dir = f"{self.root}/translation_run", f"{self.root}/reordered"
                shutil.rmtree(model_dir, ignore_errors=True)
                copy_run(self.config.model_dir, model_dir)
                data_dir = self.config.dataset_dir
                dataset.write_dataset(
                    match_dir,
                    {s: dataset.read_notes(data_dir, s).iloc[::-1] for s in dataset.SPLITS},
                    dataset.read_labels(data_dir),
                    descriptions.read_descriptions(
                        os.path.join(data_dir, descriptions.DESCRIPTIONS_FILE)
                    ),
                )
                fitting.fit_run_fusion(model_dir, folds=2, match_dir=match_dir)
                export.export(model_dir, base, "text", compute_dtype="float32")
            return export.latest_version(base)

    def run_config(self, dtype: str) -> configs.ExperimentConfig:
        """The run's config with products in `dtype`: the in-memory twin of `text(dtype)`."""
        return dataclasses.replace(self.config, compute_dtype=dtype)
