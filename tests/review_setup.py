"""What the review tests share: a tiny synthetic run's text export, a notes folder, and the
review server started as users start it (`python -m experiments.review`)."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

from longbert_tf import configs
from longbert_tf.data import dataset, synthetic
from longbert_tf.serving import export
from longbert_tf.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Short notes and few codes: a tiny encoder learns within 200 steps where the evidence is.
REVIEW_SYNTHETIC = synthetic.SyntheticConfig(
    num_codes=12,
    num_train=160,
    num_dev=24,
    num_test=12,
    median_tokens=100,
    length_sigma=0.4,
    min_tokens=50,
    max_tokens=250,
    min_codes_per_note=1,
    max_codes_per_note=3,
    distractors_per_note=1.0,
    seed=11,
)


def build_export(root: str) -> tuple:
    """Trains the tiny run (float32) and exports it with text inputs; returns `(export
    version folder, dataset folder)`."""
    synthetic.prepare(f"{root}/data", REVIEW_SYNTHETIC)
    config = configs.ExperimentConfig(
        dataset="synthetic",
        data_dir=f"{root}/data",
        model_dir=f"{root}/run",
        encoder="random:L-1_H-32_A-2",
        segments=configs.SegmentConfig(128, 128),
        batch_size=8,
        learning_rate=3e-3,
        train_steps=200,
        eval_every=200,
        compute_dtype="float32",
    )
    loop.train_and_evaluate(config)
    return export.export(config.model_dir, f"{root}/export", "text"), config.dataset_dir


def write_notes(dataset_dir: str, notes_dir: str) -> list:
    """The test split's notes as `note_<i>.txt` files; returns their texts."""
    os.makedirs(notes_dir, exist_ok=True)
    texts = dataset.read_notes(dataset_dir, "test").text.tolist()
    for index, text in enumerate(texts):
        with open(os.path.join(notes_dir, f"note_{index:02d}.txt"), "w") as note_file:
            note_file.write(text)
    return texts


class ReviewServer:
    """`python -m experiments.review` on a free port, its stderr (the log) kept in a file."""

    def __init__(self, export_dir: str, records: str, notes_dir: str | None = None, *flags):
        self.log_path = f"{records}.server-log"
        command = [
            sys.executable, "-m", "experiments.review", f"--export_dir={export_dir}",
            f"--records={records}", "--port=0", *flags,
        ]  # fmt: skip
        if notes_dir:
            command.append(f"--notes_dir={notes_dir}")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        line = self.process.stdout.readline()
        found = re.search(r"http://[^/]+:(\d+)/", line)
        if not found:
            self.stop()
            raise RuntimeError(f"the review server did not start: {self.server_log()[-3000:]}")
        self.url = f"http://127.0.0.1:{found.group(1)}"

    def server_log(self) -> str:
        self.log.flush()
        with open(self.log_path) as log:
            return log.read()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self.log.close()


def wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} not met within {timeout} s")


def call(url: str, path: str, body=None, raw: bytes | None = None) -> tuple:
    """`(status, JSON answer)` of a GET (no body) or POST."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
