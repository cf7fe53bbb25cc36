"""Review records: the record of a review, appends that never tear or interleave, and the
summary and CSV checked against counts worked out by hand."""

import csv
import hashlib
import io
import json
import multiprocessing
import os
import signal
import time

import pytest

from longbert_tf.review import records as review_records
from longbert_tf.serving.suggestions import NoteSuggestions, Suggestion
from tests.review_setup import made_up


def suggestion(code: str, probability: float) -> Suggestion:
    return Suggestion(code, probability, f"title of {code}", [], [], None)


NOTE = NoteSuggestions(
    b"fever and cough",
    codes=[suggestion("R50.9", 0.9), suggestion("R05", 0.7), suggestion("J18.9", 0.4)],
    near_misses=[suggestion("J06.9", 0.2)],
)
LABELS = {"R50.9", "R05", "J18.9", "J06.9", "I10"}


def record(note_id: str, **decisions) -> dict:
    return review_records.make_record(
        note_id, "fever and cough", "fp", 0.3, NOTE, LABELS, decisions
    )


def test_a_record_holds_the_suggestions_and_the_decisions():
    made = record("n1", accepted=["R50.9"], rejected=["J18.9"], added=["J06.9", "Z99.X"])
    assert made["text_sha256"] == hashlib.sha256(b"fever and cough").hexdigest()
    assert made["suggested"] == [
        dict(code="R50.9", probability=0.9),
        dict(code="R05", probability=0.7),
        dict(code="J18.9", probability=0.4),
    ]
    assert made["near_misses"] == [dict(code="J06.9", probability=0.2)]
    assert (made["accepted"], made["rejected"]) == (["R50.9"], ["J18.9"])
    assert made["added"] == ["J06.9", "Z99.X"]
    assert made["outside_label_space"] == ["Z99.X"]
    assert (made["export_fingerprint"], made["threshold"]) == ("fp", 0.3)
    assert made["time"].endswith("+00:00")


@pytest.mark.parametrize(
    "decisions, message",
    [
        (dict(accepted=["I10"]), "accepted code I10 is not among the note's suggestions"),
        (dict(rejected=["J06.9"]), "rejected code J06.9 is not among"),
        (dict(added=["R05"]), "added code R05 is a suggestion: accept it instead"),
        (dict(accepted=["R05"], rejected=["R05"]), "code R05 is both accepted and rejected"),
        (dict(added="R05"), "added must be a list of codes"),
        (dict(accepted=[""]), "accepted must be a list of codes"),
    ],
)
def test_contradictory_decisions_are_refused(decisions, message):
    with pytest.raises(ValueError, match=message):
        record("n1", **decisions)


def _append_many(path: str, writer: int, count: int) -> None:
    for index in range(count):
        # Records of very different sizes, so that a torn write would show.
        review_records.append(path, made_up(f"{writer}-{index}", "x" * (index * 997)))


def test_concurrent_writers_never_interleave(tmp_path):
    path = str(tmp_path / "reviews" / "records.jsonl")  # a folder made on the first save
    writers = [
        multiprocessing.Process(target=_append_many, args=(path, writer, 25)) for writer in range(4)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    ids = [line["note_id"] for line in review_records.read(path)]
    assert sorted(ids) == sorted(f"{w}-{i}" for w in range(4) for i in range(25))
    for writer in range(4):  # each writer's records in its own order
        mine = [note_id for note_id in ids if note_id.startswith(f"{writer}-")]
        assert mine == [f"{writer}-{i}" for i in range(25)]


def test_a_writer_killed_mid_append_loses_only_its_unfinished_line(tmp_path, caplog):
    """A kill can tear the line being written (a fatal signal cuts a long write short). The next
    append ends the fragment first: it is reported as a line that is not a record, and every
    record whose line was completed is read."""
    path = str(tmp_path / "records.jsonl")
    torn = 0
    for attempt in range(6):
        process = multiprocessing.Process(target=_append_many, args=(path, attempt, 400))
        process.start()
        time.sleep(0.3 + 0.1 * attempt)
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        with open(path, "rb") as records_file:
            torn += not records_file.read().endswith(b"\n")
        lines = review_records.read(path)
        for writer in range(attempt + 1):  # each writer's records a prefix of what it wrote
            mine = [line["note_id"] for line in lines if line["note_id"].startswith(f"{writer}-")]
            assert mine == [f"{writer}-{i}" for i in range(len(mine))]
            assert len(mine) > 0
    review_records.append(path, made_up("last"))
    assert review_records.read(path)[-1]["note_id"] == "last"
    assert sorted(os.listdir(tmp_path)) == ["records.jsonl", "records.jsonl.lock"]
    reported = {
        record.getMessage().split(" is not")[0]
        for record in caplog.records
        if "is not a JSON record" in record.getMessage()
    }
    assert len(reported) == torn  # one line per torn write, each named FILE:LINE


def test_an_append_adds_bytes_and_rewrites_none(tmp_path):
    path = tmp_path / "records.jsonl"
    review_records.append(str(path), made_up("first"))
    before, inode = path.read_bytes(), os.stat(path).st_ino
    review_records.append(str(path), made_up("second"))
    after = path.read_bytes()
    assert after.startswith(before) and after[len(before) :].count(b"\n") == 1
    assert os.stat(path).st_ino == inode  # the same file, not a rewritten copy
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)  # notes' codes: the owner's only


def test_damaged_lines_are_named_and_the_rest_is_read(tmp_path, caplog):
    path = tmp_path / "records.jsonl"
    good = json.dumps(made_up("a"))
    path.write_bytes(f'{good}\n{{"note_id": \n[1, 2]\n'.encode() + b"\xff\n" + f"{good}\n".encode())
    assert [record["note_id"] for record in review_records.read(str(path))] == ["a", "a"]
    assert f"{path}:2 is not a JSON record" in caplog.text
    assert f"{path}:3 is not a review record" in caplog.text
    assert f"{path}:4 is not UTF-8 (byte 0)" in caplog.text


def test_a_reader_returns_lines_as_they_are_completed(tmp_path):
    path = tmp_path / "records.jsonl"
    reader = review_records.Reader(str(path))
    assert reader.new() == []
    review_records.append(str(path), made_up("a"))
    line = json.dumps(made_up("b")).encode()
    with open(path, "ab") as records_file:
        records_file.write(line[:10])  # a save under way
    assert [record["note_id"] for record in reader.new()] == ["a"]
    assert reader.new() == []
    with open(path, "ab") as records_file:
        records_file.write(line[10:] + b"\n")
    assert [record["note_id"] for record in reader.new()] == ["b"]


def test_summary_and_csv_count_each_notes_latest_review():
    records = [
        record("n1", accepted=["R50.9"], rejected=["R05", "J18.9"]),
        # n1 again: this review replaces the first.
        record("n1", accepted=["R50.9", "R05"], rejected=["J18.9"], added=["I10"]),
        record("n2", accepted=["R50.9"], added=["I10", "J06.9"]),
        record("n3", rejected=["R50.9", "J18.9"]),
    ]
    summary = review_records.summary(records)
    # Latest: n1 acc {R50.9, R05} rej {J18.9} add {I10}; n2 acc {R50.9} add {I10, J06.9};
    # n3 rej {R50.9, J18.9}. Undecided suggestions: n1 0, n2 2 (R05, J18.9), n3 1 (R05).
    assert (summary["notes"], summary["accepted"], summary["rejected"]) == (3, 3, 3)
    assert (summary["added"], summary["undecided"]) == (3, 3)
    assert summary["precision"] == pytest.approx(3 / 6)
    assert summary["suggested_share"] == pytest.approx(3 / 6)
    assert summary["most_rejected"] == [("J18.9", 2), ("R50.9", 1)]
    assert summary["most_added"] == [("I10", 2), ("J06.9", 1)]
    assert summary["per_code"]["R50.9"] == dict(accepted=2, rejected=1, added=0, agreement=2 / 3)
    assert summary["per_code"]["I10"] == dict(accepted=0, rejected=0, added=2, agreement=0.0)
    rows = list(csv.DictReader(io.StringIO(review_records.final_codes_csv(records))))
    assert [(row["note_id"], row["code"], row["decision"]) for row in rows] == [
        ("n1", "R50.9", "accepted"),
        ("n1", "R05", "accepted"),
        ("n1", "I10", "added"),
        ("n2", "R50.9", "accepted"),
        ("n2", "I10", "added"),
        ("n2", "J06.9", "added"),
    ]
    assert json.dumps(summary)  # the --format=json output is plain JSON
