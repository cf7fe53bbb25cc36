"""Who the review server answers and how it keeps going, in process over a stand-in model:
host names, the launch secret, origins and content types, the access token beyond loopback,
500s that name a request and not its note, timeouts and bounded threads, the notes cache."""

import contextlib
import http.client
import json
import socket
import threading
import time

import pytest

from longbert_tf.review import access, records, server
from longbert_tf.serving.suggestions import NoteSuggestions, Suggestion
from tests.review_setup import call, made_up, page_secret, wait_until

TOKEN = "a-token-of-enough-characters-0123"
REVIEW = dict(note_id="note_a.txt", text="fever and cough", accepted=["R50.9"])


class StandInSuggester:
    """What `Reviewer` asks of a `suggestions.Suggester`: one code per note, R50.9, its
    evidence the note's first word; `calls` counts notes sent to the model."""

    labels = ["R50.9", "R05"]
    threshold = 0.5
    fingerprint = "stand-in/0"
    code_system = ""
    path = "/nowhere/export"
    reads_translation = False

    def __init__(self):
        self.calls = []
        self.failure = None

    def describe(self, code: str) -> str:
        return f"title of {code}"

    def suggest(self, texts: list, translations: list | None = None) -> list:
        assert translations is None
        if self.failure:
            raise self.failure
        self.calls += texts
        notes = []
        for text in texts:
            utf8 = text.encode()
            first_word = (0, len(utf8.split()[0]))
            code = Suggestion("R50.9", 0.9, "title of R50.9", [first_word], [1.0], None)
            notes.append(NoteSuggestions(utf8, [code], []))
        return notes


@contextlib.contextmanager
def serving(tmp_path, host="127.0.0.1", **options):
    """`(url, server)` of a review server over `StandInSuggester` on a free port."""
    notes_dir = tmp_path / "notes"
    notes_dir.mkdir(parents=True, exist_ok=True)
    (notes_dir / "note_a.txt").write_text("fever and cough")
    reviewer = server.Reviewer(StandInSuggester(), str(tmp_path / "records.jsonl"), str(notes_dir))
    http_server = server.make_server(reviewer, host, 0, **options)
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http_server.server_address[1]}", http_server
    finally:
        http_server.shutdown()
        http_server.server_close()


@pytest.fixture
def served(tmp_path):
    with serving(tmp_path) as (url, http_server):
        yield url, http_server, tmp_path / "records.jsonl"


def raw_request(url: str, method: str, path: str, headers: dict, body: bytes = b"") -> tuple:
    """`(status, headers, body)` of one request sent exactly with `headers` (no Host added)."""
    port = int(url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    if body:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body or None)
    response = connection.getresponse()
    answer = (response.status, dict(response.getheaders()), response.read())
    connection.close()
    return answer


def test_only_the_servers_own_host_names_are_answered(served):
    url, http_server, records_path = served
    port = http_server.server_address[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        status, _, page = raw_request(url, "GET", "/", {"Host": host})
        assert status == 200 and b"review-secret" in page
    secret = http_server.access.secret
    for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", f"LOCALHOST:{port}"):
        for method, path, body in (
            ("GET", "/", b""),
            ("GET", "/api/notes", b""),
            ("GET", "/api/notes/note_a.txt", b""),
            ("POST", "/api/review", json.dumps(REVIEW).encode()),
        ):
            headers = {"Host": host, "X-Review-Secret": secret, "Origin": url}
            headers["Content-Type"] = "application/json"
            status, _, answer = raw_request(url, method, path, headers, body)
            assert status == 421, (host, path)
            assert b"fever" not in answer and secret.encode() not in answer
    status, _, _ = raw_request(url, "GET", "/", {})  # no Host at all
    assert status == 421
    assert not records_path.exists()


@pytest.mark.parametrize(
    "headers, status, message",
    [
        ({"Content-Type": "text/plain"}, 415, "Content-Type: application/json"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
        ({"Origin": "http://evil.example"}, 403, "origin 'http://evil.example' is refused"),
        ({"Origin": "http://127.0.0.1:1"}, 403, "is refused"),
        ({"Origin": "null"}, 403, "origin 'null' is refused"),
        ({"Origin": None}, 403, "send the Origin header"),
        ({"Sec-Fetch-Site": "cross-site"}, 403, "another site (cross-site)"),
        ({"Sec-Fetch-Site": "same-site"}, 403, "another site (same-site)"),
        ({"X-Review-Secret": None}, 403, "send the X-Review-Secret header"),
        ({"X-Review-Secret": "guessed"}, 403, "send the X-Review-Secret header"),
    ],
)
def test_a_save_not_from_the_page_is_refused_and_writes_nothing(served, headers, status, message):
    url, _, records_path = served
    got_status, answer = call(url, "/api/review", REVIEW, headers=headers)
    assert (got_status, message in answer["error"]) == (status, True), answer
    assert not records_path.exists()


def test_the_page_saves_with_its_secret_from_its_origin(served):
    url, http_server, records_path = served
    assert page_secret(url) == http_server.access.secret and len(page_secret(url)) >= 40
    status, answer = call(url, "/api/review", REVIEW)
    assert status == 200 and records.read(str(records_path))[-1] == answer["record"]
    # A browser that sends no Origin still says the request is the page's own.
    headers = {"Origin": None, "Sec-Fetch-Site": "same-origin"}
    assert call(url, "/api/review", REVIEW, headers=headers)[0] == 200
    assert len(records.read(str(records_path))) == 2


def test_every_api_request_needs_the_secret_and_each_launch_has_its_own(served, tmp_path):
    url, http_server, _ = served
    for path in ("/api/info", "/api/notes", "/api/notes/note_a.txt", "/api/search?q=fever"):
        status, answer = call(url, path, headers={"X-Review-Secret": None})
        assert status == 403 and "fever and cough" not in json.dumps(answer)
        assert call(url, path)[0] == 200
    with serving(tmp_path / "second") as (_, other):
        assert other.access.secret != http_server.access.secret


def test_info_tells_no_paths(served, tmp_path):
    url, _, _ = served
    status, info = call(url, "/api/info")
    assert status == 200 and info["export_fingerprint"] == "stand-in/0"
    values = json.dumps(info)
    assert "/" not in values.replace("stand-in/0", "") and str(tmp_path) not in values


def test_beyond_loopback_only_with_an_access_token(tmp_path):
    with pytest.raises(ValueError, match="listening on 0.0.0.0 would let anyone"):
        with serving(tmp_path, host="0.0.0.0"):
            pass
    with pytest.raises(ValueError, match="the access token has 5 characters; use at least 24"):
        with serving(tmp_path, host="0.0.0.0", token="short"):
            pass
    with serving(tmp_path, host="0.0.0.0", token=TOKEN) as (url, http_server):
        host = {"Host": url.removeprefix("http://")}
        assert raw_request(url, "GET", "/", host)[0] == 401
        assert raw_request(url, "GET", "/?token=" + TOKEN[:-1] + "x", host)[0] == 401
        status, headers, _ = raw_request(url, "GET", "/?token=" + TOKEN, host)
        assert (status, headers["Location"]) == (303, "/")
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"review_access={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
        signed_in = dict(host, Cookie=cookie.split(";")[0])
        status, _, page = raw_request(url, "GET", "/", signed_in)
        assert status == 200 and http_server.access.secret.encode() in page
        secret = {"X-Review-Secret": http_server.access.secret}
        assert call(url, "/api/notes", headers=secret)[0] == 401
        bearer = dict(secret, Authorization=f"Bearer {TOKEN}")
        assert call(url, "/api/notes", headers=bearer)[0] == 200
        assert call(url, "/api/review", REVIEW, headers=bearer)[0] == 200
        assert call(url, "/api/review", REVIEW, headers=dict(signed_in, **secret))[0] == 200


def test_a_public_url_is_answered_and_its_cookie_is_secure(tmp_path):
    public = "https://coding.example.org"
    with serving(tmp_path, host="0.0.0.0", token=TOKEN, public_url=public) as (url, http_server):
        headers = {"Host": "coding.example.org", "Origin": public}
        headers["Authorization"] = f"Bearer {TOKEN}"
        headers["X-Review-Secret"] = http_server.access.secret
        assert call(url, "/api/review", REVIEW, headers=headers)[0] == 200
        status, answer = call(url, "/api/review", REVIEW, headers=dict(headers, Host="evil.org"))
        assert status == 421 and "coding.example.org" in answer["error"]
        status, response_headers, _ = raw_request(
            url, "GET", f"/?token={TOKEN}", {"Host": "coding.example.org"}
        )
        assert status == 303 and "; Secure" in response_headers["Set-Cookie"]
    with pytest.raises(ValueError, match="is not an origin"):
        access.public_origin("https://coding.example.org/review")


def test_an_unexpected_error_is_a_500_naming_a_request_and_not_the_note(served, caplog):
    url, http_server, _ = served
    http_server.reviewer.suggester.failure = RuntimeError("zebrafish: the note's own words")
    status, answer = call(url, "/api/code", dict(text="zebrafish fever"))
    assert status == 500 and answer["request_id"] in answer["error"]
    logged = [record.getMessage() for record in caplog.records]
    assert any(answer["request_id"] in line and "RuntimeError" in line for line in logged)
    assert "zebrafish" not in caplog.text
    http_server.reviewer.suggester.failure = None
    assert call(url, "/api/code", dict(text="fever"))[0] == 200  # and it goes on


def test_silent_clients_are_dropped_and_threads_stay_bounded(served, monkeypatch):
    url, _, _ = served
    monkeypatch.setattr(server.Handler, "timeout", 0.5)
    port = int(url.rsplit(":", 1)[1])
    threads_before = threading.active_count()
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(server.MAX_WORKERS + 8)]
    try:
        time.sleep(0.2)
        assert threading.active_count() <= threads_before + server.MAX_WORKERS
        started = time.monotonic()
        assert call(url, "/api/notes")[0] == 200  # answered once the silent ones time out
        assert time.monotonic() - started < 10
        for connection in silent:
            connection.settimeout(5)
            assert connection.recv(1) == b""  # closed by the server
    finally:
        for connection in silent:
            connection.close()
    wait_until(lambda: threading.active_count() <= threads_before, what="threads ended")


def test_the_notes_cache_keeps_the_notes_used_last(tmp_path):
    suggester = StandInSuggester()
    reviewer = server.Reviewer(suggester, str(tmp_path / "r.jsonl"), cached_notes=2)
    for text in ("a x", "b x", "a x", "c x", "a x", "b x"):
        reviewer.code([text])
    # "a" was used again before "c" came, so "b" went: a first-in-first-out cache drops "a".
    assert suggester.calls == ["a x", "b x", "c x", "b x"]


def test_a_note_evicted_while_another_is_coded_is_still_answered(tmp_path):
    """Thread 1 codes a cached note with a new one; while the model runs, thread 2 pushes the
    cached note out. Thread 1 still gets both notes' codes."""
    suggester = StandInSuggester()
    reviewer = server.Reviewer(suggester, str(tmp_path / "r.jsonl"), cached_notes=1)
    reviewer.code(["cached x"])
    in_model, evicted = threading.Event(), threading.Event()
    suggest = suggester.suggest

    def slow_suggest(texts, translations):
        if texts == ["new x"]:
            in_model.set()
            evicted.wait(10)
        return suggest(texts, translations)

    suggester.suggest = slow_suggest
    answers = []
    first = threading.Thread(target=lambda: answers.append(reviewer.code(["cached x", "new x"])))
    first.start()
    assert in_model.wait(10)
    reviewer.code(["other x"])  # evicts "cached x"
    evicted.set()
    first.join(10)
    assert [note.utf8 for note in answers[0]] == [b"cached x", b"new x"]


def test_a_damaged_records_line_is_reported_and_the_server_serves(tmp_path, caplog):
    records_path = tmp_path / "records.jsonl"
    good = dict(made_up("note_a.txt"), text_sha256=records.text_sha256("fever and cough"))
    records_path.write_text('{"note_id": "torn\n' + json.dumps(good) + "\n")
    with serving(tmp_path) as (url, _):
        assert f"{records_path}:1 is not a JSON record" in caplog.text
        status, notes = call(url, "/api/notes")
        assert status == 200 and notes == [dict(id="note_a.txt", reviewed=True)]
        assert call(url, "/api/review", REVIEW)[0] == 200
    assert len(records.read(str(records_path))) == 2
