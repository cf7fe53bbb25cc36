"""Time from paste to codes shown on the review page, for notes of a given length.

    python benchmarks/review_latency.py --export_dir=exports/coder --tokens=1024

Serves the page in this process (the model loaded once, as `experiments.review` does) and drives
Debian's headless Chromium: each note is put in the paste box, "Code this note" is clicked, and
the page's own clock (`performance.now()`) runs from the click until the codes and the evidence
of the first are on the page. Each note is cut at exactly `--tokens` WordPiece tokens of the
export's vocabulary, from `--notes_dir` (default: CodiEsp's English dev notes when present,
else synthetic notes). The API alone (one POST, no page) is timed on the same notes.
"""

import glob
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request

from absl import app, flags

from longbert_tf import hardware
from longbert_tf.data import synthetic, tokenization
from longbert_tf.review import access
from longbert_tf.review import server as review_server
from longbert_tf.serving import suggestions

FLAGS = flags.FLAGS
flags.DEFINE_string("export_dir", None, "A text-input export.", required=True)
flags.DEFINE_string("notes_dir", None, "A folder of .txt notes (see the module docstring).")
flags.DEFINE_integer("tokens", 1024, "WordPiece tokens per timed note.")
flags.DEFINE_integer("notes", 10, "Timed notes (after one warm-up note).")
CODIESP_DEV = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "codiesp", "dev", "text_files_en"
)


def source_texts() -> list:
    folder = FLAGS.notes_dir or (CODIESP_DEV if os.path.isdir(CODIESP_DEV) else None)
    if folder is None:
        splits, _ = synthetic.generate(synthetic.SyntheticConfig(num_train=40, seed=1))
        return splits["train"].text.tolist()
    texts = []
    for path in sorted(glob.glob(os.path.join(folder, "*.txt"))):
        with open(path, encoding="utf-8") as note_file:
            texts.append(note_file.read())
    return texts


def notes_of_length(vocab: tokenization.Vocab, texts: list, count: int, tokens: int) -> list:
    """`count` notes of exactly `tokens` tokens: consecutive texts joined, cut after a token."""
    tokenizer = tokenization.make_tokenizer(vocab)
    notes, pending = [], ""
    for text in texts * (1 + count * tokens // 100):
        pending = f"{pending}\n\n{text}" if pending else text
        _, _, ends = tokenizer.tokenize_with_offsets([pending])
        ends = ends.flat_values.numpy()
        if len(ends) >= tokens:
            notes.append(pending.encode("utf-8")[: ends[tokens - 1]].decode("utf-8"))
            pending = ""
            if len(notes) == count:
                return notes
    raise ValueError(f"the notes hold fewer than {count} x {tokens} tokens")


def headless_chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def paste_to_codes(browser, text: str) -> float:
    """Seconds from the click to the codes shown, by the page's clock."""
    browser.execute_script("document.getElementById('paste').value = arguments[0];", text)
    browser.execute_script("delete document.body.dataset.codedIn;")
    browser.find_element("id", "code-button").click()
    while not browser.execute_script("return document.body.dataset.codedIn"):
        time.sleep(0.005)
    return float(browser.execute_script("return document.body.dataset.codedIn"))


def api_seconds(url: str, secret: str, text: str) -> float:
    """Seconds of one `POST /api/code`, sent as the page sends it (`secret`: the server's)."""
    body = json.dumps(dict(text=text)).encode()
    headers = {"Content-Type": "application/json", "Origin": url, access.SECRET_HEADER: secret}
    request = urllib.request.Request(url + "/api/code", data=body, headers=headers)
    started = time.perf_counter()
    with urllib.request.urlopen(request) as answer:
        answer.read()
    return time.perf_counter() - started


def main(argv):
    del argv
    print(f"cpu: {hardware.cpu_summary()}")
    started = time.perf_counter()
    suggester = suggestions.Suggester(FLAGS.export_dir)
    print(f"model load: {time.perf_counter() - started:.1f} s ({suggester.path})")
    started = time.perf_counter()
    suggester.suggest(["warm-up"])  # as experiments.review does before it serves
    print(f"first call (graph optimisation, before serving): {time.perf_counter() - started:.1f} s")
    notes = notes_of_length(suggester.vocab, source_texts(), FLAGS.notes + 1, FLAGS.tokens)
    scratch = tempfile.mkdtemp()  # the records file no review of this benchmark writes
    reviewer = review_server.Reviewer(suggester, os.path.join(scratch, "records.jsonl"))
    server = review_server.make_server(reviewer, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    browser = headless_chromium()
    try:
        browser.get(url + "/")
        while not browser.execute_script("return document.body.dataset.ready"):
            time.sleep(0.01)
        warm_up = paste_to_codes(browser, notes[0])
        # Distinct texts: the server's cache of coded notes never answers.
        page = [paste_to_codes(browser, text) for text in notes[1:]]
        api = [api_seconds(url, server.access.secret, f"{text} ") for text in notes[1:]]
    finally:
        browser.quit()
        server.shutdown()
        shutil.rmtree(scratch)
    print(f"notes: {len(page)} of {FLAGS.tokens} tokens, after one more ({warm_up:.3f} s)")
    for name, seconds in (("paste to codes shown", page), ("API alone", api)):
        ordered = sorted(seconds)
        print(
            f"{name}: median {statistics.median(seconds):.3f} s, "
            f"p90 {ordered[int(0.9 * (len(ordered) - 1))]:.3f} s, max {ordered[-1]:.3f} s"
        )


if __name__ == "__main__":
    app.run(main)
