"""What the review tests share: a notes folder, the review server started as users start it
(`python -m experiments.review`), and requests made as its page makes them. The export is the
suite's trained run's (conftest.py)."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

from longbert_tf.data import dataset
from longbert_tf.review import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
            sys.executable,
            "-m",
            "experiments.review",
            f"--export_dir={export_dir}",
            f"--records={records}",
            "--port=0",
            *flags,
        ]
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


def coded(url: str, texts: list, at_least: int, translated=None) -> list:
    """`(index, API answer)` of each of `texts` the server gives at least `at_least` codes
    (sent with `translated(text)`, its translation, when given)."""
    bodies = [dict(text=text) for text in texts]
    if translated:
        bodies = [dict(body, translation=translated(body["text"])) for body in bodies]
    answers = [call(url, "/api/code", body)[1] for body in bodies]
    return [(i, answer) for i, answer in enumerate(answers) if len(answer["codes"]) >= at_least]


def made_up(note_id: str, pad: str = "") -> dict:
    """A record with every field `records.Reader` requires, `pad` making it long."""
    fields = {field: [] for field in records.RECORD_FIELDS}
    return dict(fields, note_id=note_id, text_sha256="0" * 64, pad=pad)


def page_secret(url: str) -> str:
    """The launch secret the server at `url` wrote into its page, read as the page reads it."""
    with urllib.request.urlopen(url + "/", timeout=30) as response:
        page = response.read().decode()
    return re.search(r'<meta name="review-secret" content="([^"]+)">', page).group(1)


def call(url: str, path: str, body=None, raw: bytes | None = None, headers=None) -> tuple:
    """`(status, JSON answer)` of a GET (no body) or POST, with the headers the page sends
    (its launch secret, its origin, JSON); `headers` add to them or, set to None, remove."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = headers or {}
    sent = {"Origin": url}
    if "X-Review-Secret" not in headers:
        sent["X-Review-Secret"] = page_secret(url)
    if data is not None:
        sent["Content-Type"] = "application/json"
    sent.update(headers)
    sent = {name: value for name, value in sent.items() if value is not None}
    request = urllib.request.Request(
        url + path, data=data, method="POST" if data else "GET", headers=sent
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
