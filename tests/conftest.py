"""Shared fixtures: a tiny synthetic dataset, a tiny TF-Hub-format encoder built from it, and the
compute dtypes the suite runs in (see tests/dtypes.py)."""

import contextlib
import fcntl
import glob
import json
import os
import re
import signal
import time

import numpy as np
import pandas as pd
import pytest

from longbert_tf import configs, hardware
from longbert_tf.data import dataset, synthetic, tokenization
from longbert_tf.framework import tf
from longbert_tf.modeling import encoder_specs
from longbert_tf.modeling.bert import BertArchitecture
from tests import trained_run as trained_run_lib
from tests.dtypes import SUITE_DTYPES
from tests.entry_points import run_main

MACHINE_FAST_DTYPE = hardware.fast_dtype

TINY_SYNTHETIC = synthetic.SyntheticConfig(
    num_codes=12,
    num_train=24,
    num_dev=8,
    num_test=8,
    median_tokens=200,
    max_tokens=900,
    min_codes_per_note=1,
    max_codes_per_note=4,
    seed=3,
)
TINY_ARCH = BertArchitecture(
    num_layers=1,
    hidden_size=16,
    num_heads=2,
    intermediate_size=32,
    vocab_size=600,
    max_positions=128,
)


def tiny_config(data_dir: str, model_dir: str, **overrides) -> configs.ExperimentConfig:
    """A tiny synthetic run's config (L-1/H-16 encoder, one segment of 128 positions, batch 4,
    2 steps, float32), `overrides` replaced."""
    values = dict(
        dataset="synthetic",
        data_dir=data_dir,
        model_dir=model_dir,
        encoder="random:L-1_H-16_A-2",
        segments=configs.SegmentConfig(128, 128),
        batch_size=4,
        learning_rate=1e-3,
        train_steps=2,
        eval_every=2,
        compute_dtype="float32",
    )
    return configs.ExperimentConfig(**{**values, **overrides})


def _refuse_auto_dtype(strategy: str):
    raise AssertionError(
        "this test left compute_dtype='auto', so its numbers depend on the CPU it runs on: "
        "take the compute_dtype fixture, or pin float32 (see tests/dtypes.py)"
    )


@pytest.fixture(scope="session", autouse=True)
def no_machine_chosen_dtype():
    """Every test states its compute dtype: resolving "auto" from this machine fails the test
    (tests of "auto" itself take `machine_chosen_dtype`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hardware, "fast_dtype", _refuse_auto_dtype)
        yield


@pytest.fixture
def machine_chosen_dtype(monkeypatch):
    """Lets this test resolve compute_dtype="auto" from the (possibly simulated) machine."""
    monkeypatch.setattr(hardware, "fast_dtype", MACHINE_FAST_DTYPE)


CPUINFO = (
    "processor\t: {index}\nmodel name\t: Test CPU 9000\n"
    "flags\t\t: fpu sse2 avx2 avx512f {extra}\n\n"
)


@pytest.fixture
def cpu(tmp_path, monkeypatch, machine_chosen_dtype):
    """`cpu(extra_flags)` simulates a two-core /proc/cpuinfo with those flags and no GPU;
    "auto" resolves from it."""
    monkeypatch.setattr(hardware.tf.config, "list_physical_devices", lambda kind=None: [])

    def with_flags(extra: str):
        path = tmp_path / "cpuinfo"
        path.write_text("".join(CPUINFO.format(index=i, extra=extra) for i in range(2)))
        monkeypatch.setattr(hardware, "CPUINFO", str(path))

    return with_flags


@pytest.fixture(scope="module", params=SUITE_DTYPES)
def compute_dtype(request):
    """Label attention's compute dtype, for tests whose numbers depend on it: each of
    `SUITE_DTYPES` in turn."""
    return request.param


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A data dir holding `synthetic/`: 24/8/8 notes of about 200 tokens, 12 codes."""
    data_dir = tmp_path_factory.mktemp("data")
    synthetic.prepare(str(data_dir), TINY_SYNTHETIC)
    return str(data_dir)


@pytest.fixture(scope="session")
def tiny_dataset_dir(tiny_data_dir):
    return f"{tiny_data_dir}/synthetic"


@pytest.fixture(scope="session")
def tiny_encoder_dir(tiny_dataset_dir, tmp_path_factory):
    """A TF-Hub-format BERT (L-1, H-16, 128 positions) with a vocabulary learned from the notes."""
    out_dir = str(tmp_path_factory.mktemp("encoder") / "tiny_bert")
    texts = dataset.read_notes(tiny_dataset_dir, "train").text
    vocab = tokenization.learn_vocab(texts, TINY_ARCH.vocab_size)
    encoder_specs.build_random_encoder(TINY_ARCH, vocab, out_dir, seed=0)
    return out_dir


@pytest.fixture(scope="session")
def deterministic_encoder(tiny_dataset_dir, tmp_path_factory):
    """The tiny encoder without dropout, so that different processes compute the same losses."""
    out_dir = str(tmp_path_factory.mktemp("encoder") / "no_dropout")
    arch = BertArchitecture(**{**TINY_ARCH.__dict__, "dropout_rate": 0.0})
    texts = dataset.read_notes(tiny_dataset_dir, "train").text
    encoder_specs.build_random_encoder(
        arch, tokenization.learn_vocab(texts, arch.vocab_size), out_dir, 0
    )
    return out_dir


def shared_dir(tmp_path_factory, name: str) -> str:
    """A folder of this test run that its xdist workers share (the run's own folder when the
    tests run in one process)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/, the workers' folders' parent
    path = root / name
    path.mkdir(exist_ok=True)
    return str(path)


@contextlib.contextmanager
def locked(folder: str):
    """Holds an exclusive lock on `folder` (one xdist worker builds what the others reuse)."""
    with open(os.path.join(folder, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The suite's one trained run (tests/trained_run.py): its float32 `ExperimentConfig`.
    Trained by the first worker that needs it; the others read it."""
    root = shared_dir(tmp_path_factory, "trained")
    with locked(root):
        config, results = trained_run_lib.train(root)
    assert results["test"]["micro_f1"] > trained_run_lib.MIN_TEST_MICRO_F1, results["test"]
    return config


@pytest.fixture(scope="session")
def exports(trained_run, tmp_path_factory):
    """The trained run's exports (`text(dtype)`, `token_ids(dtype)`), each made on first use
    by whichever worker asks first."""
    root = shared_dir(tmp_path_factory, "exports")
    return trained_run_lib.Exports(trained_run, root, lambda: locked(root))


@pytest.fixture(scope="session")
def review_export(exports, trained_run):
    """`(float32 text export folder, dataset folder)` of the trained run."""
    return exports.text("float32"), trained_run.dataset_dir


def predict_json(export_dir: str, paths: list, *flags: str) -> list:
    """What `python -m experiments.predict --format=json` prints for the note files `paths`."""
    result = run_main(
        "experiments.predict",
        f"--export_dir={export_dir}",
        "--format=json",
        *flags,
        *map(str, paths),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def training_losses(model_dir: str) -> dict:
    """step -> training loss, from the run's TensorBoard event files (a step logged twice, by a
    run and its resumption, must have logged the same loss)."""
    losses = {}
    for path in glob.glob(f"{model_dir}/train/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "loss":
                    loss = float(tf.make_ndarray(value.tensor))
                    assert losses.get(event.step, loss) == pytest.approx(loss, rel=1e-4)
                    losses[event.step] = loss
    return losses


def _saved_step(checkpoint_dir: str) -> int:
    """The step of the latest complete checkpoint in `checkpoint_dir` (0 if none).

    Read from the `checkpoint` state file, which names a checkpoint once all its files are written.
    """
    path = os.path.join(checkpoint_dir, "checkpoint")
    if not os.path.exists(path):
        return 0
    with open(path) as state_file:
        match = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', state_file.read())
    return int(match.group(1)) if match else 0


def kill_after_checkpoint(processes: list, checkpoint_dir: str, step: int) -> None:
    """SIGKILLs `processes` once a complete checkpoint of `step` or later is in `checkpoint_dir`."""
    deadline = time.time() + 300
    while _saved_step(checkpoint_dir) < step and time.time() < deadline:
        assert all(process.poll() is None for process in processes), "training ended too soon"
        time.sleep(0.05)
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.fixture
def edge_dataset(tmp_path, tiny_encoder_dir):
    """Notes with no text, no codes, one token and many tokens, tokenized with the tiny vocab."""
    notes = pd.DataFrame(
        dict(
            note_id=["empty", "no_codes", "short", "long"],
            subject_id=["1", "2", "3", "4"],
            text=["", "patient stable", "pain", " ".join(["patient"] * 300)],
            codes=[["B"], [], ["A", "C"], ["C"]],
        )
    )
    dataset_dir = dataset.write_dataset(
        str(tmp_path / "edge"), {"train": notes, "dev": notes, "test": notes}, ["A", "B", "C"]
    )
    vocab = tokenization.Vocab(f"{tiny_encoder_dir}/assets/vocab.txt", lower_case=True)
    return dataset_dir, vocab


@pytest.fixture
def token_batch():
    """Token vectors `[3, 10, 8]` and their mask: note 0 padded after 6 tokens, note 2 a single
    token."""
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(3, 10, 8)).astype(np.float32)
    mask = np.ones((3, 10), np.int32)
    mask[0, 6:] = 0
    mask[2, 1:] = 0
    return tokens, mask


@pytest.fixture
def batch():
    """Two notes: three full segments, and one segment of 10 real positions then padding."""
    rng = np.random.default_rng(1)
    word_ids = rng.integers(5, 600, size=(2, 3, 32)).astype(np.int32)
    mask = np.ones((2, 3, 32), np.int32)
    mask[1, 0, 10:] = 0
    mask[1, 1:] = 0
    word_ids[mask == 0] = 0
    return dict(input_word_ids=word_ids, input_mask=mask)
