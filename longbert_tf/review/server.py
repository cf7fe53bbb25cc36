"""The review page and its JSON API, served by the standard library's threading HTTP server
with the model in process (`suggestions.Suggester`, loaded once).

    GET  /                     the page (HTML, CSS and JavaScript of `page/`)
    GET  /api/info             threshold, export fingerprint, limits
    GET  /api/notes            the `.txt` notes of the notes folder: `[{id, reviewed}]`
    GET  /api/notes/ID         `{id, text}`
    GET  /api/search?q=WORDS   codes of the label space by code or description (20 at most)
    POST /api/code             `{"text": T}` -> `{threshold, codes, near_misses}`, or
                               `{"texts": [T, ...]}` -> `{threshold, notes: [{codes, near_misses}]}`
    POST /api/review           `{note_id, text, accepted, rejected, added}` -> `{record}`
                               (no note_id: a pasted note, named `pasted-` + its SHA-256)

A code is `{code, description, probability, evidence: [{start, end, weight, source}]}`
(`note_for_api`); offsets are Unicode code points of the text as sent (Python `str` indices).
Bodies are limited to `MAX_BODY_BYTES`; errors are `{"error": message}` with a 4xx status. The
log names requests, never their bodies: no note text reaches it.
"""

import collections
import http.server
import importlib.resources
import json
import os
import threading
import urllib.parse

import numpy as np
from absl import logging

from longbert_tf import files
from longbert_tf.review import records
from longbert_tf.serving.suggestions import NoteSuggestions, Suggester, Suggestion

MAX_BODY_BYTES = 512 * 1024
DRAINED_BYTES = 16 * 1024 * 1024  # an oversized body is read this far before the answer
SEARCH_RESULTS = 20
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/review.css": ("review.css", "text/css; charset=utf-8"),
    "/review.js": ("review.js", "text/javascript; charset=utf-8"),
}
# The page loads nothing but its own files and talks to nothing but this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CACHED_NOTES = 64


class RequestError(Exception):
    """A request the server refuses: `status` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Reviewer:
    """What the handlers share: the model, the notes folder and the records file."""

    def __init__(self, suggester: Suggester, records_path: str, notes_dir: str | None = None):
        self.suggester = suggester
        self.records_path = records_path
        self.notes_dir = notes_dir
        self._labels = set(suggester.labels)
        self._described = [(code, suggester.describe(code)) for code in suggester.labels]
        self._cache = collections.OrderedDict()  # text SHA-256 -> NoteSuggestions
        self._cache_lock = threading.Lock()

    def code(self, texts: list) -> list:
        """`NoteSuggestions` of every text, one call of the model for those not cached."""
        keys = [records.text_sha256(text) for text in texts]
        with self._cache_lock:
            missing = {key: text for key, text in zip(keys, texts) if key not in self._cache}
        found = dict(zip(missing, self.suggester.suggest(list(missing.values()))))
        with self._cache_lock:
            for key, note in found.items():
                self._cache[key] = note
            notes = [found.get(key) or self._cache[key] for key in keys]
            while len(self._cache) > CACHED_NOTES:
                self._cache.popitem(last=False)
        return notes

    def _note_names(self) -> list:
        if not self.notes_dir:
            return []
        return sorted(name for name in os.listdir(self.notes_dir) if name.endswith(".txt"))

    def notes(self) -> list:
        """`[{id, reviewed}]`: reviewed when a record holds the note's name and current text."""
        reviewed = {
            (record["note_id"], record["text_sha256"]) for record in records.read(self.records_path)
        }
        return [
            dict(
                id=name,
                reviewed=(name, files.file_sha256(os.path.join(self.notes_dir, name))) in reviewed,
            )
            for name in self._note_names()
        ]

    def note_text(self, note_id: str) -> str:
        if note_id not in self._note_names():
            raise RequestError(404, f"no note {note_id!r} in the notes folder")
        path = os.path.join(self.notes_dir, note_id)
        with open(path, "rb") as note_file:
            raw = note_file.read()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RequestError(400, f"{path} is not valid UTF-8 (byte {error.start})") from None

    def search(self, query: str) -> list:
        """Codes whose code starts with `query` (dots ignored) or whose description holds
        every word of it; a code-like query outside the label space comes last, marked."""
        words = query.lower().split()
        if not words:
            return []
        compact = query.strip().upper().replace(".", "")
        found = []
        for code, description in self._described:
            by_code = code.upper().replace(".", "").startswith(compact)
            if by_code or all(word in description.lower() for word in words):
                starts = description.lower().startswith(words[0])
                found.append((not by_code, not starts, len(code), code, description))
        found.sort()
        results = [
            dict(code=code, description=description, in_label_space=True)
            for *_, code, description in found[:SEARCH_RESULTS]
        ]
        typed = query.strip()
        if len(words) == 1 and any(c.isdigit() for c in typed) and typed not in self._labels:
            results.append(
                dict(code=typed, description=self.suggester.describe(typed), in_label_space=False)
            )
        return results

    def review(self, body: dict) -> dict:
        text = checked_text(body.get("text"), "text")
        # A pasted note is named by its text.
        note_id = body.get("note_id") or f"pasted-{records.text_sha256(text)[:12]}"
        if not isinstance(note_id, str) or len(note_id) > 300:
            raise RequestError(400, "note_id must be a string of at most 300 characters")
        (note,) = self.code([text])
        try:
            record = records.make_record(
                note_id,
                text,
                self.suggester.fingerprint,
                self.suggester.threshold,
                note,
                self._labels,
                body,
            )
        except ValueError as error:
            raise RequestError(400, str(error)) from None
        records.append(self.records_path, record)
        return record


def checked_text(text, field: str) -> str:
    """`text` when it is a non-empty note that encodes as UTF-8, else a RequestError."""
    if not isinstance(text, str):
        raise RequestError(400, f"{field} must be a string (the note's text)")
    if not text.strip():
        raise RequestError(400, f"{field} is empty: paste or choose a note")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RequestError(400, f"{field} holds an unpaired surrogate at {error.start}") from None
    return text


def page_file(name: str) -> bytes:
    return importlib.resources.files("longbert_tf.review").joinpath("page", name).read_bytes()


def chars_before_bytes(utf8: bytes) -> np.ndarray:
    """`[len(utf8) + 1]`: the code points of `utf8` before each byte offset."""
    lead_bytes = (np.frombuffer(utf8, np.uint8) & 0xC0) != 0x80
    return np.concatenate([[0], np.cumsum(lead_bytes)])


def evidence_items(suggestion: Suggestion, chars_before: np.ndarray) -> list:
    """`[{start, end, weight, source}]` of a code, in code points of its note (`chars_before`
    of the note): the matched term (weight 1, source "term") then the attention's tokens
    (source "attention")."""
    items = []
    if suggestion.matched_span is not None:
        items.append((suggestion.matched_span, 1.0, "term"))
    items += [
        (span, weight, "attention")
        for span, weight in zip(suggestion.byte_spans, suggestion.weights)
    ]
    return [
        dict(
            start=int(chars_before[start]),
            end=int(chars_before[end]),
            weight=round(float(weight), 4),
            source=source,
        )
        for (start, end), weight, source in items
    ]


def note_for_api(note: NoteSuggestions) -> dict:
    """`{codes, near_misses}` of a note, each `[{code, description, probability, evidence}]`;
    the note's code point offsets are worked out once for all its codes."""
    chars_before = chars_before_bytes(note.utf8)

    def one(suggestion: Suggestion) -> dict:
        return dict(
            code=suggestion.code,
            description=suggestion.description,
            probability=round(suggestion.probability, 6),
            evidence=evidence_items(suggestion, chars_before),
        )

    return dict(codes=[one(c) for c in note.codes], near_misses=[one(c) for c in note.near_misses])


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes of the module docstring; `server.reviewer` is the shared `Reviewer`."""

    server_version = "longbert-review"

    def log_message(self, format, *args):
        logging.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value) -> None:
        self._send(status, json.dumps(value, ensure_ascii=False).encode(), "application/json")

    def _answer(self, route) -> None:
        try:
            self._json(200, route())
        except RequestError as error:
            self._json(error.status, dict(error=str(error)))

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        reviewer = self.server.reviewer
        if url.path in PAGE_FILES:
            name, content_type = PAGE_FILES[url.path]
            return self._send(200, page_file(name), content_type)
        if url.path == "/api/info":
            return self._answer(lambda: self.server.info)
        if url.path == "/api/notes":
            return self._answer(reviewer.notes)
        if url.path.startswith("/api/notes/"):
            note_id = urllib.parse.unquote(url.path.removeprefix("/api/notes/"))
            return self._answer(lambda: dict(id=note_id, text=reviewer.note_text(note_id)))
        if url.path == "/api/search":
            query = urllib.parse.parse_qs(url.query).get("q", [""])[0]
            return self._answer(lambda: reviewer.search(query))
        self._json(404, dict(error=f"no page {url.path}"))

    def do_POST(self):
        self._answer(lambda: self._post(urllib.parse.urlsplit(self.path).path))

    def _post(self, path: str):
        reviewer = self.server.reviewer
        if path not in ("/api/code", "/api/review"):
            raise RequestError(404, f"no endpoint {path}")
        body = self._body()
        if path == "/api/review":
            return dict(record=reviewer.review(body))
        if "texts" in body:
            if not isinstance(body["texts"], list) or not body["texts"]:
                raise RequestError(400, "texts must be a non-empty list of notes")
            texts = [checked_text(text, f"texts[{i}]") for i, text in enumerate(body["texts"])]
            notes = [note_for_api(note) for note in reviewer.code(texts)]
            return dict(threshold=float(reviewer.suggester.threshold), notes=notes)
        (note,) = reviewer.code([checked_text(body.get("text"), "text")])
        return dict(threshold=float(reviewer.suggester.threshold), **note_for_api(note))

    def _body(self) -> dict:
        """The request's JSON object, read only when it is within `MAX_BODY_BYTES`."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError(411, "send the body's Content-Length")
        if int(length) > MAX_BODY_BYTES:
            # Read and dropped (up to DRAINED_BYTES), so that a client still sending it is not
            # cut off before the answer; the connection closes either way.
            self.close_connection = True
            unread = min(int(length), DRAINED_BYTES)
            while unread > 0:
                chunk = self.rfile.read(min(unread, 65536))
                if not chunk:
                    break
                unread -= len(chunk)
            raise RequestError(
                413,
                f"the request is {int(length):,} bytes; this server takes at most "
                f"{MAX_BODY_BYTES:,} ({MAX_BODY_BYTES // 1024} KiB): code a shorter note",
            )
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise RequestError(
                400, f"the request is not valid UTF-8 (byte {error.start})"
            ) from None
        except json.JSONDecodeError as error:
            raise RequestError(400, f"the request is not JSON ({error.msg})") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request must be a JSON object")
        return body


def make_server(reviewer: Reviewer, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """A server (not yet serving) for `reviewer` on `host:port` (port 0: any free one)."""
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.reviewer = reviewer
    suggester = reviewer.suggester
    server.info = dict(
        threshold=float(suggester.threshold),
        export=suggester.path,
        export_fingerprint=suggester.fingerprint,
        code_system=suggester.code_system,
        num_labels=len(suggester.labels),
        max_body_bytes=MAX_BODY_BYTES,
        offsets="unicode code points",
        notes_dir=bool(reviewer.notes_dir),
    )
    return server
