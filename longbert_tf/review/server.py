"""The review page and its JSON API, served by the standard library's threading HTTP server
with the model in process (`suggestions.Suggester`, loaded once).

    GET  /                     the page (HTML, CSS and JavaScript of `page/`)
    GET  /api/info             threshold, export fingerprint, limits
    GET  /api/notes            the `.txt` notes of the notes folder: `[{id, reviewed}]`
    GET  /api/notes/ID         `{id, text}` (and `translation`, see below)
    GET  /api/search?q=WORDS   codes of the label space by code or description (20 at most)
    POST /api/code             `{"text": T}` -> `{threshold, codes, near_misses}`, or
                               `{"texts": [T, ...]}` -> `{threshold, notes: [{codes, near_misses}]}`
    POST /api/review           `{note_id, text, accepted, rejected, added}` -> `{record}`
                               (no note_id: a pasted note, named `pasted-` + its SHA-256)

Who may ask is `access.Access`'s to decide, before a body is read. A code is `{code,
description, probability, evidence: [{start, end, weight, source, within}]}` (`note_for_api`);
offsets are Unicode code points of the text as sent (Python `str` indices), of the note
(`within` "text") or of its translation ("translation"). An export that reads each note's
translation too (`/api/info`'s `reads_translation`; `coder.TranslationCoder`) takes it beside
every text: `translation`, `translations` (one per text), read for the notes folder's notes
from the translations folder under the same name; its matched terms are in the note, its
attention's tokens in the translation. Bodies are limited to
`MAX_BODY_BYTES`; errors are `{"error": message}` with a 4xx status, or a 500 naming a request
id for anything unexpected. The log names requests, never their bodies: no note text reaches it.
At most `MAX_WORKERS` requests are served at once (more wait to be accepted), and a client
silent for `TIMEOUT_SECONDS` is dropped.
"""

import collections
import http.server
import importlib.resources
import json
import os
import secrets
import socket
import threading
import traceback
import urllib.parse

import numpy as np
from absl import logging

from longbert_tf import files
from longbert_tf.review import records
from longbert_tf.review.access import Access, RequestError
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
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# Where the page receives the launch secret (`access.SECRET_HEADER`), filled in when served.
SECRET_META = b'<meta name="review-secret" content="">'
CACHED_NOTES = 64
MAX_WORKERS = 32
TIMEOUT_SECONDS = 20


class Reviewer:
    """What the handlers share: the model, the notes folder and the records file."""

    def __init__(
        self,
        suggester: Suggester,
        records_path: str,
        notes_dir: str | None = None,
        cached_notes: int = CACHED_NOTES,
        translations_dir: str | None = None,
    ):
        if suggester.reads_translation and notes_dir and not translations_dir:
            raise ValueError(
                f"{suggester.path} reads each note's translation too: give the folder of the "
                "notes' translations"
            )
        if translations_dir and not suggester.reads_translation:
            raise ValueError(f"{suggester.path} reads the notes alone: it takes no translations")
        self.suggester = suggester
        self.records_path = records_path
        self.notes_dir = notes_dir
        self.translations_dir = translations_dir
        self._labels = set(suggester.labels)
        self._described = [(code, suggester.describe(code)) for code in suggester.labels]
        self._cached_notes = cached_notes
        self._cache = collections.OrderedDict()  # text SHA-256 -> NoteSuggestions, oldest use first
        self._cache_lock = threading.Lock()
        self._records = records.Reader(records_path)
        self._reviewed = set()  # (note_id, text_sha256) of every record read so far
        self._records_lock = threading.Lock()
        self._read_records()  # a damaged line is reported now, at start

    def code(self, texts: list, translations: list | None = None) -> list:
        """`NoteSuggestions` of every text (and its translation, for an export that reads
        them), one call of the model for those not cached; the `cached_notes` notes used last
        are kept."""
        pairs = list(zip(texts, translations or [""] * len(texts)))
        keys = [tuple(map(records.text_sha256, pair)) for pair in pairs]
        found = {}
        with self._cache_lock:
            for key in keys:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    found[key] = self._cache[key]
        missing = {key: pair for key, pair in zip(keys, pairs) if key not in found}
        if missing:
            missing_texts, missing_translations = zip(*missing.values())
            if translations is None:
                missing_translations = None
            found.update(
                zip(missing, self.suggester.suggest(list(missing_texts), missing_translations))
            )
            with self._cache_lock:
                for key in missing:
                    self._cache[key] = found[key]
                    self._cache.move_to_end(key)
                while len(self._cache) > self._cached_notes:
                    self._cache.popitem(last=False)
        return [found[key] for key in keys]

    def _note_names(self) -> list:
        if not self.notes_dir:
            return []
        return sorted(name for name in os.listdir(self.notes_dir) if name.endswith(".txt"))

    def _read_records(self) -> set:
        """The reviewed `(note_id, text_sha256)` pairs, with the records saved since last read."""
        with self._records_lock:
            for record in self._records.new():
                self._reviewed.add((record["note_id"], record["text_sha256"]))
            return set(self._reviewed)

    def notes(self) -> list:
        """`[{id, reviewed}]`: reviewed when a record holds the note's name and current text."""
        reviewed = self._read_records()
        return [
            dict(
                id=name,
                reviewed=(name, files.file_sha256(os.path.join(self.notes_dir, name))) in reviewed,
            )
            for name in self._note_names()
        ]

    def note(self, note_id: str) -> dict:
        """`{id, text}` of a note of the notes folder, with its `translation` when the export
        reads one."""
        if note_id not in self._note_names():
            raise RequestError(404, f"no note {note_id!r} in the notes folder")
        note = dict(id=note_id, text=read_note(os.path.join(self.notes_dir, note_id)))
        if self.suggester.reads_translation:
            path = os.path.join(self.translations_dir, note_id)
            if not os.path.exists(path):
                raise RequestError(404, f"note {note_id!r} has no translation: no {path}")
            note["translation"] = read_note(path)
        return note

    def translations(self, body: dict, count: int) -> list | None:
        """The request's translations of its `count` texts (`translation` or
        `translations`), for an export that reads them; else None."""
        if not self.suggester.reads_translation:
            if "translation" in body or "translations" in body:
                raise RequestError(400, "this coder reads the notes alone: send no translation")
            return None
        if count == 1 and "translation" in body:
            return [checked_text(body["translation"], "translation")]
        given = body.get("translations")
        if not isinstance(given, list) or len(given) != count:
            raise RequestError(
                400, f"this coder reads each note's translation too: send one per note ({count})"
            )
        return [checked_text(text, f"translations[{i}]") for i, text in enumerate(given)]

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
        (note,) = self.code([text], self.translations(body, 1))
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


def read_note(path: str) -> str:
    """A note file's text, or a RequestError naming it when it is not UTF-8."""
    with open(path, "rb") as note_file:
        raw = note_file.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"{path} is not valid UTF-8 (byte {error.start})") from None


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


def evidence_items(suggestion: Suggestion, chars_before: dict) -> list:
    """`[{start, end, weight, source, within}]` of a code, in code points (`chars_before` of
    "text", the note, and "translation", the text the attention read when it is not the
    note): the matched term (weight 1, source "term") then the attention's tokens (source
    "attention")."""
    items = []
    if suggestion.matched_span is not None:
        items.append((suggestion.matched_span, 1.0, "term", "text"))
    attended = "translation" if "translation" in chars_before else "text"
    items += [
        (span, weight, "attention", attended)
        for span, weight in zip(suggestion.byte_spans, suggestion.weights)
    ]
    return [
        dict(
            start=int(chars_before[within][start]),
            end=int(chars_before[within][end]),
            weight=round(float(weight), 4),
            source=source,
            within=within,
        )
        for (start, end), weight, source, within in items
    ]


def note_for_api(note: NoteSuggestions) -> dict:
    """`{codes, near_misses}` of a note, each `[{code, description, probability, evidence}]`;
    the note's code point offsets are worked out once for all its codes."""
    chars_before = dict(text=chars_before_bytes(note.utf8))
    if note.translation is not None:
        chars_before["translation"] = chars_before_bytes(note.translation)

    def one(suggestion: Suggestion) -> dict:
        return dict(
            code=suggestion.code,
            description=suggestion.description,
            probability=round(suggestion.probability, 6),
            evidence=evidence_items(suggestion, chars_before),
        )

    return dict(codes=[one(c) for c in note.codes], near_misses=[one(c) for c in note.near_misses])


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes of the module docstring for `server.reviewer`, admitted by `server.access`.
    It answers HTTP/1.0: every connection closes after its answer (a refused body unread)."""

    server_version = "longbert-review"
    timeout = TIMEOUT_SECONDS  # of every read and write on the connection

    def log_message(self, format, *args):
        logging.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (*SECURITY_HEADERS.items(), *headers):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value) -> None:
        self._send(status, json.dumps(value, ensure_ascii=False).encode(), "application/json")

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method: str) -> None:
        """Admits, routes and answers one request; an unexpected error is a 500 naming a
        request id, logged with where it happened (never its message: it may quote a note)."""
        try:
            url = urllib.parse.urlsplit(self.path)
            if not self._admitted(method, url):
                return
            if method == "POST" or url.path.startswith("/api/"):
                answer = self._post(url.path) if method == "POST" else self._get_api(url)
                return self._json(200, answer)
            if url.path not in PAGE_FILES:
                raise RequestError(404, f"no page {url.path}")
            name, content_type = PAGE_FILES[url.path]
            self._send(200, self._page(name), content_type)
        except RequestError as error:
            self._json(error.status, dict(error=str(error)))
        except (ConnectionError, TimeoutError):
            pass  # the client left or went silent: no one to answer
        except Exception as error:  # answered as a 500, logged without its message
            request_id = secrets.token_hex(6)
            where = "; ".join(
                f"{os.path.basename(frame.filename)}:{frame.lineno} {frame.name}"
                for frame in traceback.extract_tb(error.__traceback__)
            )
            logging.error("request %s: %s at %s", request_id, type(error).__name__, where)
            self._json(
                500,
                dict(
                    error=f"the server failed on this request (id {request_id}): its log says "
                    "where",
                    request_id=request_id,
                ),
            )

    def _admitted(self, method: str, url) -> bool:
        """Whether the request may go on (`access.Access`); a sign-in with the access token
        is answered here, with the cookie and a redirect to the page."""
        access: Access = self.server.access
        access.check_host(self.headers.get("Host"))
        if not access.signed_in(self.headers):
            token = urllib.parse.parse_qs(url.query).get("token", [None])[0]
            if method == "GET" and url.path == "/" and access.token_matches(token):
                self._send(
                    303, b"", "text/plain", [("Location", "/"), ("Set-Cookie", access.cookie())]
                )
                return False
            raise RequestError(401, "sign in: open the page's address with ?token=ACCESS_TOKEN")
        if url.path.startswith("/api/") or method == "POST":
            access.check_api(method, self.headers)
        return True

    def _page(self, name: str) -> bytes:
        page = page_file(name)
        if name == "index.html":
            secret = self.server.access.secret.encode()
            page = page.replace(SECRET_META, SECRET_META.replace(b'""', b'"' + secret + b'"'))
        return page

    def _get_api(self, url):
        reviewer = self.server.reviewer
        if url.path == "/api/info":
            return self.server.info
        if url.path == "/api/notes":
            return reviewer.notes()
        if url.path.startswith("/api/notes/"):
            return reviewer.note(urllib.parse.unquote(url.path.removeprefix("/api/notes/")))
        if url.path == "/api/search":
            return reviewer.search(urllib.parse.parse_qs(url.query).get("q", [""])[0])
        raise RequestError(404, f"no endpoint {url.path}")

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
            found = reviewer.code(texts, reviewer.translations(body, len(texts)))
            notes = [note_for_api(note) for note in found]
            return dict(threshold=float(reviewer.suggester.threshold), notes=notes)
        text = checked_text(body.get("text"), "text")
        (note,) = reviewer.code([text], reviewer.translations(body, 1))
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


class ReviewHTTPServer(http.server.ThreadingHTTPServer):
    """A thread per connection, `MAX_WORKERS` at most: further connections wait in the
    listen queue until one ends."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple, reviewer: Reviewer):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.reviewer = reviewer
        self._workers = threading.BoundedSemaphore(MAX_WORKERS)

    def process_request(self, request, client_address):
        self._workers.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._workers.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._workers.release()


def make_server(
    reviewer: Reviewer,
    host: str,
    port: int,
    token: str | None = None,
    public_url: str | None = None,
) -> ReviewHTTPServer:
    """A server (not yet serving) for `reviewer` on `host:port` (port 0: any free one),
    answering as `access.Access.for_address` decides (a non-loopback `host` needs `token`)."""
    server = ReviewHTTPServer((host, port), reviewer)
    try:
        server.access = Access.for_address(host, server.server_address[1], token, public_url)
    except ValueError:
        server.server_close()
        raise
    suggester = reviewer.suggester
    server.info = dict(
        threshold=float(suggester.threshold),
        export_fingerprint=suggester.fingerprint,
        code_system=suggester.code_system,
        num_labels=len(suggester.labels),
        max_body_bytes=MAX_BODY_BYTES,
        offsets="unicode code points",
        notes_dir=bool(reviewer.notes_dir),
        reads_translation=suggester.reads_translation,
    )
    return server
