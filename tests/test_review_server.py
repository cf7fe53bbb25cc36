"""The review server's API against `experiments.predict` and the export itself, its records
under concurrent saves and a kill, its limits, errors and logs, requests not from its page (by
curl), and eight clients at once."""

import concurrent.futures
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from longbert_tf.framework import tf
from longbert_tf.review import access
from longbert_tf.review import records as review_records
from longbert_tf.review import server as review_server
from longbert_tf.serving import suggestions
from tests.conftest import predict_json
from tests.entry_points import run_main
from tests.review_setup import ReviewServer, call, coded, page_secret, write_notes

pytestmark = pytest.mark.slow  # trains, exports and starts servers

# Characters of 1 to 4 UTF-8 bytes before a note: code point offsets differ from byte offsets.
NON_ASCII = "Paciente: fiebre — café ü 😀 "


@pytest.fixture(scope="module")
def served(review_export, tmp_path_factory):
    export_dir, dataset_dir = review_export
    root = tmp_path_factory.mktemp("review_server")
    texts = write_notes(dataset_dir, str(root / "notes"))
    (root / "notes" / "latin1.txt").write_bytes("fièvre".encode("latin-1"))
    server = ReviewServer(export_dir, str(root / "records.jsonl"), str(root / "notes"))
    yield server, root, texts
    server.stop()


def test_the_api_gives_predicts_codes_and_evidence(served, review_export):
    server, root, texts = served
    notes = [NON_ASCII + texts[0], *texts[1:]]
    paths = []
    for index, text in enumerate(notes):
        paths.append(root / f"predict_{index}.txt")
        paths[-1].write_text(text, encoding="utf-8")
    predicted = predict_json(review_export[0], paths)
    status, batch = call(server.url, "/api/code", dict(texts=notes))
    assert status == 200
    assert sum(len(result["codes"]) for result in predicted) >= len(notes)
    for text, expected, answer in zip(notes, predicted, batch["notes"]):
        assert [c["code"] for c in answer["codes"]] == [c["code"] for c in expected["codes"]]
        for code, reference in zip(answer["codes"], expected["codes"]):
            assert code["probability"] == pytest.approx(reference["probability"], abs=1e-4)
            assert code["description"] == reference["description"]
            attention = [e for e in code["evidence"] if e["source"] == "attention"]
            # Code point offsets of the API, byte offsets of predict: the same text.
            assert [text[e["start"] : e["end"]] for e in attention] == reference["evidence"]
            weights = [e["weight"] for e in attention]
            assert weights == sorted(weights, reverse=True) and 0 < weights[0] <= 1
    status, single = call(server.url, "/api/code", dict(text=notes[0]))
    assert status == 200 and single["codes"] == batch["notes"][0]["codes"]


def test_codes_and_near_misses_are_the_exports_probabilities(served, review_export):
    """Checked against the SavedModel's own `probabilities` of every code."""
    server, _, texts = served
    loaded = tf.saved_model.load(review_export[0])
    threshold = loaded.threshold.numpy()
    labels = [code.decode() for code in loaded.labels.numpy()]
    probabilities = loaded.signatures["serving_default"](text=tf.constant(texts))["probabilities"]
    near_misses_seen = 0
    for text, row in zip(texts, probabilities.numpy()):
        status, answer = call(server.url, "/api/code", dict(text=text))
        assert status == 200 and answer["threshold"] == pytest.approx(float(threshold))
        order = np.argsort(-row, kind="stable")
        above = [labels[i] for i in order if row[i] >= threshold]
        assert [c["code"] for c in answer["codes"]] == above
        below = [
            labels[i]
            for i in order
            if threshold * suggestions.NEAR_MISS_FRACTION <= row[i] < threshold
        ][: suggestions.MAX_NEAR_MISSES]
        assert [c["code"] for c in answer["near_misses"]] == below
        near_misses_seen += len(below)
        for code in answer["codes"] + answer["near_misses"]:
            assert code["probability"] == pytest.approx(row[labels.index(code["code"])], abs=1e-6)
            assert code["evidence"], "every shown code comes with evidence"
    assert near_misses_seen > 0


def test_a_review_appends_its_record(served, review_export):
    server, root, texts = served
    index, answer = coded(server.url, texts[:8], at_least=2)[0]
    codes = [c["code"] for c in answer["codes"]]
    review = dict(
        note_id=f"note_{index:02d}.txt",
        text=texts[index],
        accepted=codes[:1],
        rejected=codes[1:2],
        added=["Z00.00"],
    )
    status, saved = call(server.url, "/api/review", review)
    assert status == 200
    records = review_records.read(str(root / "records.jsonl"))
    assert records[-1] == saved["record"]
    fingerprint = tf.saved_model.experimental.read_fingerprint(review_export[0]).singleprint()
    expected_sha = hashlib.sha256(texts[index].encode()).hexdigest()
    assert (records[-1]["export_fingerprint"], records[-1]["text_sha256"]) == (
        fingerprint,
        expected_sha,
    )
    assert [c["code"] for c in records[-1]["suggested"]] == codes
    assert (records[-1]["accepted"], records[-1]["rejected"]) == (codes[:1], codes[1:2])
    assert records[-1]["outside_label_space"] == ["Z00.00"]
    _, notes = call(server.url, "/api/notes")
    assert {n["id"]: n["reviewed"] for n in notes}[f"note_{index:02d}.txt"] is True
    assert {n["id"]: n["reviewed"] for n in notes}[f"note_{index + 1:02d}.txt"] is False
    status, refused = call(server.url, "/api/review", dict(review, accepted=["Z00.00"]))
    assert (status, refused["error"]) == (
        400,
        "accepted code Z00.00 is not among the note's suggestions",
    )
    assert len(review_records.read(str(root / "records.jsonl"))) == len(records)  # nothing written
    status, pasted = call(server.url, "/api/review", dict(text=texts[2]))
    expected_id = "pasted-" + hashlib.sha256(texts[2].encode()).hexdigest()[:12]
    assert status == 200 and pasted["record"]["note_id"] == expected_id


def test_bad_requests_get_clear_errors_and_the_server_goes_on(served):
    server, _, texts = served
    limit = review_server.MAX_BODY_BYTES
    one_mb_note = json.dumps(dict(text="fever " * ((1 << 20) // 6 + 1))).encode()
    cases = [
        (dict(body=dict(text="")), 400, "text is empty"),
        (dict(body=dict(text=" \n\t")), 400, "text is empty"),
        (dict(body=dict(texts=[])), 400, "texts must be a non-empty list"),
        (dict(raw=one_mb_note), 413, f"at most {limit:,} ({limit // 1024} KiB)"),
        (dict(raw=b'{"text": "fi\xe8vre"}'), 400, "not valid UTF-8 (byte 12)"),
        (dict(raw=b'{"text": "\\ud800"}'), 400, "unpaired surrogate"),
        (dict(raw=b"text=fever"), 400, "not JSON"),
        (dict(raw=b"[1, 2]"), 400, "must be a JSON object"),
    ]
    for request, status, message in cases:
        got_status, answer = call(server.url, "/api/code", **request)
        assert got_status == status and message in answer["error"], (request, answer)
    status, answer = call(server.url, "/api/notes/latin1.txt")
    assert status == 400 and answer["error"].endswith("latin1.txt is not valid UTF-8 (byte 2)")
    for missing in ("nothing.txt", "..%2Frecords.jsonl", "..%2F..%2Fetc%2Fpasswd"):
        status, answer = call(server.url, f"/api/notes/{missing}")
        assert status == 404 and "no note" in answer["error"]
    status, answer = call(server.url, "/api/code", dict(text=texts[0]))
    assert status == 200 and answer["codes"]


def test_the_log_names_requests_and_holds_no_note_text(served):
    server, _, texts = served
    secret = "zebrafishzebrafish"
    call(server.url, "/api/code", dict(text=f"{secret} {texts[0]}"))
    call(server.url, "/api/review", dict(text=f"{secret} {texts[0]}", note_id="x"))
    log = server.server_log()
    assert '"POST /api/code HTTP/1.1" 200' in log and '"POST /api/review HTTP/1.1" 200' in log
    assert secret not in log and texts[0][:40] not in log


def test_pages_carry_a_policy_that_loads_nothing_from_elsewhere(served):
    server, _, _ = served
    with urllib.request.urlopen(server.url + "/", timeout=30) as response:
        policy = response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert "default-src 'self'" in policy and "object-src 'none'" in policy
    assert "http" not in page.replace('href="/', "").replace('src="/', "")  # no other origin


def test_saves_racing_a_kill_leave_complete_records(review_export, tmp_path):
    """Eight clients save at once; the server is killed mid-stream. Every acknowledged record
    is in the file, and every line of it is whole."""
    export_dir, dataset_dir = review_export
    texts = write_notes(dataset_dir, str(tmp_path / "notes"))
    records = str(tmp_path / "records.jsonl")
    server = ReviewServer(export_dir, records)

    def save(index: int):
        try:
            status, answer = call(
                server.url, "/api/review", dict(note_id=f"n{index}", text=texts[index % len(texts)])
            )
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            OSError,
        ):  # cut off: not acknowledged
            return None
        return answer["record"]["note_id"] if status == 200 else None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(save, index) for index in range(400)]
        concurrent.futures.wait(futures[:40])
        os.kill(server.process.pid, signal.SIGKILL)
        acknowledged = {f.result() for f in futures} - {None}
    server.stop()
    saved = [record["note_id"] for record in review_records.read(records)]
    assert 40 <= len(acknowledged) < 400
    assert acknowledged <= set(saved) and len(saved) == len(set(saved))
    with open(records, "rb") as records_file:
        assert records_file.read().endswith(b"\n")


def test_listening_beyond_loopback_needs_an_access_token(tmp_path):
    short = tmp_path / "short_token"
    short.write_text("abc\n")
    for extra, message in (
        ([], "--host=0.0.0.0: listening on 0.0.0.0 would let anyone who reaches this machine"),
        ([f"--access_token_file={short}"], "the access token has 3 characters"),
        ([f"--access_token_file={tmp_path}/none"], f"--access_token_file={tmp_path}/none"),
    ):
        result = run_main("experiments.review", "--export_dir=unused", "--host=0.0.0.0", *extra)
        assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]


def curl(url: str, *arguments) -> tuple:
    """`(status, body)` of `curl` (Debian's, installed by .ci/run) run with `arguments`."""
    if not shutil.which("curl"):
        if os.environ.get("CI"):
            pytest.fail("needs curl: .ci/run installs it")
        pytest.skip("needs curl (apt-get install curl)")
    result = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *arguments, url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    body, status = result.stdout.rsplit("\n", 1)
    return int(status), body


def test_curl_from_another_host_origin_or_without_the_secret_changes_nothing(served):
    server, root, texts = served
    records = root / "records.jsonl"
    before = records.read_bytes() if records.exists() else b""
    review = json.dumps(dict(note_id="note_00.txt", text=texts[0], added=["Z99.9"]))
    port = server.url.rsplit(":", 1)[1]
    secret = page_secret(server.url)
    own = ["-H", f"X-Review-Secret: {secret}", "-H", f"Origin: {server.url}"]
    json_body = ["-H", "Content-Type: application/json", "--data", review]
    attempts = {
        "the issue's request": [
            "-H",
            "Content-Type: text/plain",
            "-H",
            "Origin: http://evil.example",
        ],
        "a foreign Host": [*own, "-H", f"Host: evil.example:{port}"],
        "a foreign Origin": [*own[:2], "-H", "Origin: http://evil.example"],
        "no secret": own[2:],
        "a wrong secret": ["-H", "X-Review-Secret: x", *own[2:]],
    }
    for what, headers in attempts.items():
        status, body = curl(server.url + "/api/review", *headers, *json_body)
        assert 400 <= status < 500, (what, status, body)
    for path in ("/api/notes", "/api/notes/note_00.txt", "/"):
        status, body = curl(server.url + path, "-H", f"Host: evil.example:{port}", *own)
        assert status == 421 and texts[0][:30] not in body and secret not in body
    assert (records.read_bytes() if records.exists() else b"") == before
    status, body = curl(server.url + "/api/review", *own, *json_body)
    assert status == 200 and json.loads(body)["record"]["added"] == ["Z99.9"]


def same_codes(answer: dict, expected: dict) -> bool:
    """Whether a note's API answer gives `expected`'s codes (probabilities within 1e-4: a
    batch pads its notes) and near misses."""
    return all(
        [c["code"] for c in answer[key]] == [c["code"] for c in expected[key]]
        and np.allclose(
            [c["probability"] for c in answer[key]],
            [c["probability"] for c in expected[key]],
            atol=1e-4,
        )
        for key in ("codes", "near_misses")
    )


def test_eight_clients_with_notes_evicted_get_every_answer(review_export, tmp_path):
    """8 clients x 400 requests of every kind, in process, over a cache of 8 notes that 24
    notes keep evicting: no 5xx, no dropped connection, and every note's codes are those the
    model gives it directly."""
    export_dir, dataset_dir = review_export
    texts = write_notes(dataset_dir, str(tmp_path / "notes"))[:24]
    suggester = suggestions.Suggester(export_dir)
    reviewer = review_server.Reviewer(
        suggester, str(tmp_path / "records.jsonl"), str(tmp_path / "notes"), cached_notes=8
    )
    expected = [review_server.note_for_api(note) for note in suggester.suggest(texts)]
    coded_notes = []  # every note the model was asked for: more than 24 when notes were evicted
    suggest = suggester.suggest
    suggester.suggest = lambda notes, translations: coded_notes.extend(notes) or suggest(notes)
    server = review_server.make_server(reviewer, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    secret = {access.SECRET_HEADER: server.access.secret}

    def client(seed: int) -> list:
        rng = np.random.default_rng(seed)
        failures = []
        for _ in range(400):
            index = int(rng.integers(len(texts)))
            kind = rng.choice(["code", "codes", "review", "notes", "note", "search", "info"])
            try:
                if kind == "code":
                    status, answer = call(url, "/api/code", dict(text=texts[index]), headers=secret)
                    ok = same_codes(answer, expected[index])
                elif kind == "codes":
                    pair = [index, (index + 7) % len(texts)]
                    status, answer = call(
                        url, "/api/code", dict(texts=[texts[i] for i in pair]), headers=secret
                    )
                    ok = all(map(same_codes, answer["notes"], [expected[i] for i in pair]))
                elif kind == "review":
                    status, answer = call(
                        url, "/api/review", dict(text=texts[index]), headers=secret
                    )
                    ok = "record" in answer
                else:
                    path = dict(
                        notes="/api/notes",
                        note=f"/api/notes/note_{index:02d}.txt",
                        search="/api/search?q=" + texts[index].split()[0],
                        info="/api/info",
                    )[kind]
                    status, answer = call(url, path, headers=secret)
                    ok = True
                if status != 200 or not ok:
                    failures.append((kind, status))
            except (OSError, http.client.HTTPException) as error:
                failures.append((kind, repr(error)))
        return failures

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            failures = [f for found in pool.map(client, range(8)) for f in found]
    finally:
        server.shutdown()
        server.server_close()
    assert failures == []
    assert len(coded_notes) > 4 * len(texts)


def test_the_summary_reads_the_records_the_server_wrote(served):
    server, root, texts = served
    _, answer = call(server.url, "/api/code", dict(text=texts[3]))
    codes = [c["code"] for c in answer["codes"]]
    review = dict(note_id="summary-note", text=texts[3], rejected=codes[:1], added=["Q99.9"])
    assert call(server.url, "/api/review", review)[0] == 200
    records = str(root / "records.jsonl")
    summary = review_records.summary(review_records.read(records))
    outputs = {}
    for output in ("text", "csv"):
        result = run_main(
            "experiments.review", "--summary", f"--records={records}", f"--format={output}"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[output] = result.stdout
    assert f"notes reviewed: {summary['notes']}\n" in outputs["text"]
    assert f"precision (coder-judged): {summary['precision']:.3f}" in outputs["text"]
    row = summary["per_code"][codes[0]]
    assert row["rejected"] >= 1
    assert (
        f"  {codes[0]:<10} {row['agreement']:.2f}  accepted {row['accepted']}, "
        f"rejected {row['rejected']}, added {row['added']}\n"
    ) in outputs["text"]
    assert (
        f"summary-note,{hashlib.sha256(texts[3].encode()).hexdigest()},Q99.9,added"
        in (outputs["csv"])
    )


def test_a_coder_reading_translations_takes_one_per_note_and_others_take_none(
    served, exports, tmp_path
):
    server, root, texts = served
    status, answer = call(server.url, "/api/code", dict(text=texts[0], translation=texts[0]))
    assert status == 400 and "reads the notes alone" in answer["error"]
    export_dir = exports.translation_text()
    with pytest.raises(ValueError, match="reads each note's translation too"):
        review_server.Reviewer(
            suggestions.Suggester(export_dir), str(tmp_path / "r.jsonl"), str(root / "notes")
        )
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "note_00.txt").write_text("Translated: " + texts[0])
    translating = ReviewServer(
        export_dir,
        str(tmp_path / "records.jsonl"),
        str(root / "notes"),
        f"--translations_dir={tmp_path / 'en'}",
    )
    try:
        status, answer = call(translating.url, "/api/code", dict(text=texts[0]))
        assert status == 400 and "send one per note (1)" in answer["error"]
        status, answer = call(translating.url, "/api/notes/note_00.txt")
        assert answer == dict(
            id="note_00.txt", text=texts[0], translation="Translated: " + texts[0]
        )
        status, answer = call(translating.url, "/api/notes/note_01.txt")
        assert status == 404 and "has no translation" in answer["error"]
        status, answer = call(
            translating.url, "/api/code", dict(texts=texts[:2], translations=texts[:2])
        )
        # Given the note itself as its translation, it codes as the fused export.
        fused = suggestions.Suggester(exports.fused_text()).suggest(texts[:2])
        assert status == 200
        for note, expected in zip(answer["notes"], fused):
            assert [c["code"] for c in note["codes"]] == [c.code for c in expected.codes]
    finally:
        translating.stop()
