"""Review records: one JSON line per saved review of a note, and what they teach.

A record holds `note_id`, `text_sha256` (of the note's UTF-8 text), `export_fingerprint`
(the SavedModel's, `tf.saved_model.experimental.read_fingerprint`), `threshold`, the model's
`suggested` codes and `near_misses` (`[{code, probability}]`), the coder's `accepted` and
`rejected` suggestions and `added` codes (`outside_label_space`: those of them the export
does not know), and `time` (UTC, ISO 8601). A note saved again counts by its latest record.
"""

import collections
import csv
import datetime
import fcntl
import hashlib
import io
import json
import os

from absl import logging

from longbert_tf import files


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_record(
    note_id: str, text: str, fingerprint: str, threshold: float, note, labels: set, decisions: dict
) -> dict:
    """The record of one review: `note` is the note's `serving.suggestions.NoteSuggestions`,
    `decisions` the coder's `{accepted, rejected, added}` code lists. Raises ValueError
    naming the code when they contradict the suggestions or each other."""
    suggested = [code.code for code in note.codes]
    chosen = {}
    for field in ("accepted", "rejected", "added"):
        codes = decisions.get(field, [])
        if not isinstance(codes, list) or not all(isinstance(c, str) and c.strip() for c in codes):
            raise ValueError(f"{field} must be a list of codes (non-empty strings)")
        chosen[field] = list(dict.fromkeys(code.strip() for code in codes))
    for field in ("accepted", "rejected"):
        for code in chosen[field]:
            if code not in suggested:
                raise ValueError(f"{field} code {code} is not among the note's suggestions")
    for code in chosen["added"]:
        if code in suggested:
            raise ValueError(f"added code {code} is a suggestion: accept it instead")
    both = set(chosen["accepted"]) & set(chosen["rejected"])
    if both:
        raise ValueError(f"code {sorted(both)[0]} is both accepted and rejected")
    return dict(
        note_id=note_id,
        text_sha256=text_sha256(text),
        export_fingerprint=fingerprint,
        threshold=round(float(threshold), 6),
        suggested=[dict(code=c.code, probability=round(c.probability, 6)) for c in note.codes],
        near_misses=[
            dict(code=c.code, probability=round(c.probability, 6)) for c in note.near_misses
        ],
        **chosen,
        outside_label_space=[code for code in chosen["added"] if code not in labels],
        time=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


# What every record holds; a line without them is reported, not counted.
RECORD_FIELDS = ("note_id", "text_sha256", "suggested", "accepted", "rejected", "added")


def append(path: str, record: dict) -> None:
    """Appends `record` as one line, durably: under an exclusive lock (`fcntl.flock` on
    `path.lock`, which orders every thread and process) the line is written at the end
    (`O_APPEND`) and flushed to disk before this returns, the folder too when the file is new.
    Nothing already written is rewritten, so a save costs the same at any file size. A writer
    killed mid-line leaves its fragment without a newline; the next append ends it first, so
    the fragment stays a line of its own (`Reader` reports and skips it) and records never
    share a line."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        created = not os.path.exists(path)
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                line = b"\n" + line
            written = 0
            while written < len(line):
                written += os.write(descriptor, line[written:])
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if created:
            files.fsync_folder(folder)


class Reader:
    """The records of `path` as they are appended: each `new()` returns those whose lines were
    completed since the last call, oldest first. A line that is not a record is logged as
    `FILE:LINE` and skipped; a last line without its newline (a save under way) waits."""

    def __init__(self, path: str):
        self.path = path
        self._offset = 0  # bytes read: whole lines only
        self._lines = 0

    def new(self) -> list:
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as records_file:
            records_file.seek(self._offset)
            unread = records_file.read()
        complete = unread[: unread.rfind(b"\n") + 1]
        self._offset += len(complete)
        found = []
        for line in complete.split(b"\n")[:-1]:
            self._lines += 1
            record = _parsed(line)
            if isinstance(record, str):
                logging.warning("%s:%d %s: skipped", self.path, self._lines, record)
            else:
                found.append(record)
        return found


def _parsed(line: bytes):
    """The record on `line`, or why it is not one (a str)."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as error:
        return f"is not UTF-8 (byte {error.start})"
    except json.JSONDecodeError as error:
        return f"is not a JSON record ({error.msg})"
    if not isinstance(record, dict) or not all(field in record for field in RECORD_FIELDS):
        return f"is not a review record (one needs {', '.join(RECORD_FIELDS)})"
    return record


def read(path: str) -> list:
    """Every whole record of `path` ([] when it does not exist), oldest first; see `Reader`."""
    return Reader(path).new()


def latest(records: list) -> list:
    """The latest record of each note, in the order of the notes' first reviews."""
    return list({record["note_id"]: record for record in records}.values())


def summary(records: list, top: int = 10) -> dict:
    """What the latest records teach: suggestion `precision` as the coder judged it
    (accepted / decided), `suggested_share` of the final codes (accepted / (accepted +
    added)), the codes most often `rejected` and `added` (`[(code, count)]`, `top` each), and
    per code `agreement` = accepted / (accepted + rejected + added)."""
    counts = {field: collections.Counter() for field in ("accepted", "rejected", "added")}
    undecided = 0
    reviews = latest(records)
    for record in reviews:
        for field, counter in counts.items():
            counter.update(record[field])
        decided = set(record["accepted"]) | set(record["rejected"])
        undecided += sum(code["code"] not in decided for code in record["suggested"])
    accepted, rejected, added = (sum(counts[f].values()) for f in ("accepted", "rejected", "added"))
    per_code = {}
    for code in sorted(set().union(*counts.values())):
        row = {field: counts[field][code] for field in counts}
        row["agreement"] = row["accepted"] / sum(row.values())
        per_code[code] = row
    return dict(
        notes=len(reviews),
        accepted=accepted,
        rejected=rejected,
        added=added,
        undecided=undecided,
        precision=accepted / (accepted + rejected) if accepted + rejected else None,
        suggested_share=accepted / (accepted + added) if accepted + added else None,
        most_rejected=counts["rejected"].most_common(top),
        most_added=counts["added"].most_common(top),
        per_code=per_code,
    )


def final_codes_csv(records: list) -> str:
    """CSV of the final codes, a row per note and code: `note_id,text_sha256,code,decision`
    (accepted or added), from each note's latest record."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["note_id", "text_sha256", "code", "decision"])
    for record in latest(records):
        for decision in ("accepted", "added"):
            for code in record[decision]:
                writer.writerow([record["note_id"], record["text_sha256"], code, decision])
    return out.getvalue()
