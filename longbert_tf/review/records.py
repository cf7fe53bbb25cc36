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
import glob
import hashlib
import io
import json
import os
import shutil

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


def append(path: str, record: dict) -> None:
    """Appends `record` as one line. Under an exclusive lock (`fcntl.flock` on `path.lock`,
    which orders every thread and process), the old lines and the new one are written to a
    temporary file, flushed to disk and renamed over `path`: a crash leaves the old file or
    the new one, never a partial line, and two writers never interleave."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in glob.glob(f"{glob.escape(path)}.tmp-*"):  # of writers killed mid-append
            os.remove(stale)
        with files.atomic_file(path) as temporary, open(temporary, "wb") as updated:
            if os.path.exists(path):
                with open(path, "rb") as previous:
                    shutil.copyfileobj(previous, updated)
            updated.write(line)
            updated.flush()
            os.fsync(updated.fileno())


def read(path: str) -> list:
    """Every record of `path` ([] when it does not exist), oldest first."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not a JSON record ({error.msg})") from None
    return records


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
