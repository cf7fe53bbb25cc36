"""The review server's API against `experiments.predict` and the export itself, its records
under concurrent saves and a kill, its limits, errors and logs."""

import concurrent.futures
import hashlib
import http.client
import json
import os
import signal
import urllib.error
import urllib.request

import numpy as np
import pytest

from longbert_tf.framework import tf
from longbert_tf.review import records as review_records
from longbert_tf.review import server as review_server
from longbert_tf.serving import suggestions
from tests.conftest import predict_json
from tests.entry_points import run_main
from tests.review_setup import ReviewServer, call, coded, write_notes

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


def test_listening_beyond_loopback_warns(review_export, tmp_path):
    server = ReviewServer(review_export[0], str(tmp_path / "r.jsonl"), None, "--host=0.0.0.0")
    try:
        status, _ = call(server.url, "/api/info")
        assert status == 200
        assert "listening on 0.0.0.0: anyone who reaches this machine" in server.server_log()
    finally:
        server.stop()


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
