"""A rehearsal of the paper's largest run: a dataset of MIMIC-IV's shape through the real commands.

    python benchmarks/scale.py                       # full size: 89,099 / 13,378 / 19,802 notes
    python benchmarks/scale.py --fraction=0.05 --work_dir=/tmp/scale

Writes a prepared `mimic4_dx` dataset with MIMIC-IV's split sizes (Edin et
al.'s split), the 72,748-code label space (ICD-10-CM leaf codes of the
`simple-icd-10-cm` package), about 15 codes a note drawn Zipf-like, and short
notes (words of the notes' code descriptions, `--tokens_per_note` of them), so
a CPU can finish. Then runs `experiments.run` on it (tokenization and cache,
`--train_steps` steps, a validation, test), `experiments.export` and
`experiments.predict` on the export, and prints, one per line: the run's
peak memory, the largest time one split spent in metrics beyond its forward
pass, the checkpoint's size against weights + optimizer slots, and the wall
time of every phase. Real MIMIC text (notes of thousands of tokens) is not
exercised: the encoder's cost per note is the step benchmark's business.
"""

import glob
import os
import re
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import simple_icd_10_cm
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from longbert_tf import hardware, run_folder  # noqa: E402
from longbert_tf.data import dataset  # noqa: E402
from longbert_tf.framework import tf  # noqa: E402
from longbert_tf.training.experiment import build_experiment  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("fraction", 1.0, "Share of MIMIC-IV's notes to write (0 < fraction <= 1).")
flags.DEFINE_integer("tokens_per_note", 32, "Words per note (short, so a CPU can finish).")
flags.DEFINE_string("work_dir", "runs/scale", "Folder for the dataset, the run and the export.")
flags.DEFINE_integer("train_steps", 200, "Training steps of the run.")

SPLIT_SIZES = dict(train=89_099, dev=13_378, test=19_802)  # Edin et al.'s MIMIC-IV ICD-10 split
NUM_CODES = 72_748
CODES_PER_NOTE = 15
ENCODER = "random:L-2_H-256_A-4"  # the paper's architecture; its weights need network


def write_dataset(data_dir: str, fraction: float, tokens_per_note: int, seed: int = 0) -> str:
    """Writes `data_dir/mimic4_dx` in the dataset format; returns its folder."""
    rng = np.random.default_rng(seed)
    leaves = sorted(
        {code for code in simple_icd_10_cm.get_all_codes(True) if simple_icd_10_cm.is_leaf(code)}
    )
    labels = sorted(rng.choice(leaves, NUM_CODES, replace=False).tolist())
    words = [simple_icd_10_cm.get_description(code).lower().split() for code in labels]
    # Zipf-like code frequencies: code k (in a random order) is drawn with weight 1 / (k + 1).
    weights = 1.0 / np.arange(1, NUM_CODES + 1)
    weights = weights[rng.permutation(NUM_CODES)]
    cumulative = np.cumsum(weights) / weights.sum()
    splits = {}
    for split, size in SPLIT_SIZES.items():
        count = max(1, round(size * fraction))
        rows = []
        for note in range(count):
            draws = rng.random(rng.poisson(CODES_PER_NOTE - 1) + 1)
            codes = np.unique(np.minimum(np.searchsorted(cumulative, draws), NUM_CODES - 1))
            vocabulary = sum((words[code] for code in codes), [])
            text = " ".join(rng.choice(vocabulary, tokens_per_note))
            rows.append((f"{split}-{note}", str(note), text, [labels[code] for code in codes]))
        splits[split] = pd.DataFrame(rows, columns=list(dataset.NOTE_COLUMNS))
    return dataset.write_dataset(os.path.join(data_dir, "mimic4_dx"), splits, labels)


def run(command: list, log_path: str) -> float:
    """Runs a command with its log in `log_path`; returns its wall time in seconds."""
    started = time.time()
    with open(log_path, "w") as log:
        completed = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode:
        raise SystemExit(f"{' '.join(command)} failed; see {log_path}")
    return time.time() - started


def metrics_seconds(model_dir: str, split: str = "test") -> float:
    """Time `split` spends in metrics beyond its forward pass, timed here once more.

    The test split is the largest, and the metrics' cost grows with the notes:
    its time is the largest of any split. Both passes are timed the second
    time they run, so that neither includes tracing.
    """
    experiment = build_experiment(run_folder.saved_config(model_dir))
    best = tf.train.latest_checkpoint(os.path.join(model_dir, run_folder.BEST_DIR))
    tf.train.Checkpoint(model=experiment.model).restore(best).expect_partial()
    forward = tf.function(
        lambda features: experiment.model(features, training=False), reduce_retracing=True
    )

    def forward_pass():
        for features, _ in experiment.dataset(split):
            forward(features).numpy()

    seconds = {}
    for name, work in (("forward", forward_pass), ("count", lambda: experiment.count(split))):
        work()  # traces
        started = time.time()
        work()
        seconds[name] = time.time() - started
    return seconds["count"] - seconds["forward"]


def checkpoint_sizes(model_dir: str) -> tuple:
    """(bytes on disk of the latest checkpoint, bytes of its model and optimizer tensors)."""
    checkpoint = tf.train.latest_checkpoint(os.path.join(model_dir, run_folder.CHECKPOINTS_DIR))
    on_disk = sum(os.path.getsize(path) for path in glob.glob(f"{checkpoint}.*"))
    reader = tf.train.load_checkpoint(checkpoint)
    dtypes = reader.get_variable_to_dtype_map()
    tensors = sum(
        int(np.prod(shape)) * dtypes[name].size
        for name, shape in reader.get_variable_to_shape_map().items()
        if name.startswith(("model/", "optimizer/"))
    )
    return on_disk, tensors


def phase_seconds(log_path: str) -> dict:
    """Seconds of building (vocabulary, encoder, token caches) and of each split's counting."""
    text = open(log_path).read()
    phases = {"build (vocabulary, encoder, token caches)": 0.0}
    phases["build (vocabulary, encoder, token caches)"] = float(
        re.search(r"Built the experiment in ([\d.]+) s", text).group(1)
    )
    for split, seconds in re.findall(r"Counted (\w+): \d+ notes in ([\d.]+) s", text):
        phases[f"evaluation of {split} (each)"] = float(seconds)
    return phases


def run_commands(work_dir: str, data_dir: str, model_dir: str, export_dir: str) -> tuple:
    """Writes the dataset, then trains, exports and predicts as a user would; returns the
    wall seconds of each and the peak memory of the commands (GB)."""
    wall = {}
    started = time.time()
    dataset_dir = write_dataset(data_dir, FLAGS.fraction, FLAGS.tokens_per_note)
    wall["write the dataset"] = time.time() - started
    python = sys.executable
    wall["experiments.run"] = run(
        [
            python,
            "-m",
            "experiments.run",
            "--dataset=mimic4_dx",
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            f"--encoder={ENCODER}",
            "--seq_len=512",
            f"--train_steps={FLAGS.train_steps}",
            f"--eval_every={FLAGS.train_steps}",
        ],
        f"{work_dir}/run.log",
    )
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    wall["experiments.export"] = run(
        [
            python,
            "-m",
            "experiments.export",
            f"--model_dir={model_dir}",
            f"--export_dir={export_dir}",
        ],
        f"{work_dir}/export.log",
    )
    note = dataset.read_notes(dataset_dir, "test").text.iloc[0]
    with open(f"{work_dir}/note.txt", "w") as note_file:
        note_file.write(note)
    wall["experiments.predict"] = run(
        [python, "-m", "experiments.predict", f"--export_dir={export_dir}", f"{work_dir}/note.txt"],
        f"{work_dir}/predict.log",
    )
    peak_gb = max(peak_gb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6)
    return wall, peak_gb


def main(argv):
    del argv
    if not 0 < FLAGS.fraction <= 1:
        raise app.UsageError(f"--fraction={FLAGS.fraction} must be in (0, 1]")
    print(f"CPU: {hardware.cpu_summary()}")
    work_dir = os.path.abspath(FLAGS.work_dir)
    data_dir, model_dir = f"{work_dir}/data", f"{work_dir}/run"
    export_dir = f"{work_dir}/export"
    for path in (model_dir, export_dir):
        subprocess.run(["rm", "-rf", path], check=True)
    os.makedirs(work_dir, exist_ok=True)
    wall, peak_gb = run_commands(work_dir, data_dir, model_dir, export_dir)
    on_disk, tensors = checkpoint_sizes(model_dir)
    sizes = {split: max(1, round(size * FLAGS.fraction)) for split, size in SPLIT_SIZES.items()}
    print(f"notes: {sizes['train']:,} / {sizes['dev']:,} / {sizes['test']:,}, {NUM_CODES:,} codes")
    print(f"peak memory: {peak_gb:.2f} GB")
    print(f"metrics time: {metrics_seconds(model_dir):.1f} s")
    print(
        f"checkpoint size: {on_disk / 1e6:.1f} MB (weights and optimizer: {tensors / 1e6:.1f} MB)"
    )
    for phase, seconds in {**wall, **phase_seconds(f"{work_dir}/run.log")}.items():
        print(f"time, {phase}: {seconds:.1f} s")


if __name__ == "__main__":
    app.run(main)
