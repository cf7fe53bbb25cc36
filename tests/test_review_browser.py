"""The review page in a real browser (Debian's headless Chromium through its WebDriver), against
`experiments.predict` and the records file, with every host but 127.0.0.1 unresolvable."""

import http.server
import json
import os
import shutil
import threading

import pytest

from longbert_tf.data import dataset, descriptions
from longbert_tf.review import records as review_records
from longbert_tf.review import server as review_server
from tests.conftest import predict_json
from tests.review_setup import (
    ROOT,
    ReviewServer,
    call,
    coded,
    page_secret,
    wait_until,
    write_notes,
)

pytestmark = pytest.mark.slow  # trains, exports, starts a server and browsers

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = os.path.join(ROOT, "docs", "figures", "review_page.png")
NON_ASCII = "Paciente: fiebre — café ü 😀 "
XSS_NOTE = 'Seen for <script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2"> pain.'


def new_browser():
    """Headless Chromium with the network unplugged: no host name but 127.0.0.1 (and evil.test,
    which resolves to it) resolves."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = (
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message}: .ci/run installs them, and CI never skips the browser tests")
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        # evil.test: a name whose DNS answer an attacker pointed at this machine (rebinding).
        "--host-resolver-rules=MAP evil.test 127.0.0.1 , MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def requested_urls(browser) -> list:
    """Every URL the page requested, from the DevTools network log."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


@pytest.fixture(scope="module")
def page(review_export, tmp_path_factory):
    """`(browser, server, notes folder, note texts)`: the page opened on the notes folder."""
    export_dir, dataset_dir = review_export
    root = tmp_path_factory.mktemp("review_browser")
    texts = write_notes(dataset_dir, str(root / "notes"))
    server = ReviewServer(export_dir, str(root / "records.jsonl"), str(root / "notes"))
    browser = new_browser()
    browser.get(server.url + "/")
    ready(browser)
    yield browser, server, root, texts
    urls = requested_urls(browser)
    browser.quit()
    server.stop()
    # Nothing but the server and inline data was asked for: the page works offline.
    assert urls and all(u.startswith((server.url, "data:")) for u in urls), urls


def ready(browser) -> None:
    wait_until(lambda: browser.execute_script("return document.body.dataset.ready"), what="page")


def run(browser, script: str, *args):
    return browser.execute_script(script, *args)


def shown(browser, list_id: str) -> list:
    return run(
        browser,
        f"return [...document.querySelectorAll('#{list_id} li')].map(li => li.dataset.code)",
    )


def open_note(browser, note_id: str) -> None:
    run(
        browser, "document.querySelector(`#notes li[data-note='${arguments[0]}']`).click()", note_id
    )
    wait_until(lambda: browser.find_element("id", "note-title").text == note_id, what=note_id)
    wait_until(lambda: "codes in" in browser.find_element("id", "status").text, what="codes")


def paste(browser, text: str) -> None:
    """Codes `text` as a pasted note (set as the text area's value: 😀 cannot be typed)."""
    run(browser, "document.getElementById('paste').value = arguments[0]", text)
    browser.find_element("id", "code-button").click()
    wait_until(lambda: browser.find_element("id", "note-title").text == "Pasted note", what="paste")
    wait_until(lambda: "codes in" in browser.find_element("id", "status").text, what="codes")


def dataset_codes(dataset_dir: str) -> list:
    known = descriptions.read_descriptions(
        os.path.join(dataset_dir, descriptions.DESCRIPTIONS_FILE)
    )
    return [dict(code=code, description=known[code]) for code in dataset.read_labels(dataset_dir)]


def test_the_page_shows_predicts_codes(page, review_export):
    browser, _, root, _ = page
    names = ["note_00.txt", "note_03.txt", "note_07.txt"]
    expected = predict_json(review_export[0], [str(root / "notes" / name) for name in names])
    for name, reference in zip(names, expected):
        open_note(browser, name)
        assert shown(browser, "codes") == [code["code"] for code in reference["codes"]]
    assert sum(len(reference["codes"]) for reference in expected) >= 3


def test_clicking_a_code_highlights_exactly_its_evidence(page):
    """On a note whose characters take 1 to 4 UTF-8 bytes (and 1 or 2 UTF-16 units)."""
    browser, server, _, texts = page
    text = NON_ASCII + texts[2]
    paste(browser, text)
    _, answer = call(server.url, "/api/code", dict(text=text))
    codes = answer["codes"] + answer["near_misses"]
    assert codes and answer["codes"][0]["evidence"]
    for code in codes:
        browser.find_element("css selector", f"li[data-code='{code['code']}'] .description").click()
        marks = run(
            browser,
            "return [...document.querySelectorAll('#note-text mark')].map(m => "
            "[Number(m.dataset.start), Array.from(m.textContent).length, m.title])",
        )
        highlighted = {i for start, length, _ in marks for i in range(start, start + length)}
        expected = {i for e in code["evidence"] for i in range(e["start"], e["end"])}
        marked_text = run(
            browser,
            "return [...document.querySelectorAll('#note-text mark')].map(m => m.textContent)",
        )
        assert "".join(marked_text) == "".join(text[i] for i in sorted(expected))
        assert highlighted == expected
        assert all(code["code"] in title for *_, title in marks)  # hovering names the code
        in_view = run(
            browser,
            "const box = document.getElementById('text-panel').getBoundingClientRect();"
            "const mark = document.querySelector('#note-text .strongest').getBoundingClientRect();"
            "return mark.top >= box.top && mark.bottom <= box.bottom;",
        )
        assert in_view
    assert run(browser, "return document.getElementById('note-text').textContent") == text


@pytest.fixture(scope="module")
def two_code_notes(page) -> list:
    """Indices of the notes the server gives at least two codes."""
    _, server, _, texts = page
    return [index for index, _ in coded(server.url, texts, at_least=2)]


def latest_record(root) -> dict:
    return review_records.read(str(root / "records.jsonl"))[-1]


def test_accept_reject_add_and_save_with_the_mouse(page, two_code_notes):
    browser, _, root, _ = page
    name = f"note_{two_code_notes[0]:02d}.txt"
    open_note(browser, name)
    codes = shown(browser, "codes")
    near = shown(browser, "near-misses")
    assert len(codes) >= 2
    browser.find_element("css selector", f"#codes li[data-code='{codes[0]}'] button.accept").click()
    browser.find_element("css selector", f"#codes li[data-code='{codes[1]}'] button.reject").click()
    search = browser.find_element("id", "search")
    search.send_keys("Z99.89")  # outside the label space of made-up codes
    wait_until(lambda: shown(browser, "search-results"), what="search results")
    browser.find_element("css selector", "#search-results li[data-code='Z99.89']").click()
    assert "outside the model's codes" in browser.find_element("id", "added").text
    before = len(review_records.read(str(root / "records.jsonl")))
    browser.find_element("id", "save").click()
    wait_until(lambda: f"Saved {name}" in browser.find_element("id", "status").text, what="save")
    record = latest_record(root)
    assert len(review_records.read(str(root / "records.jsonl"))) == before + 1
    assert (record["note_id"], record["accepted"], record["rejected"]) == (
        name,
        codes[:1],
        codes[1:2],
    )
    assert record["added"] == ["Z99.89"] and record["outside_label_space"] == ["Z99.89"]
    assert [c["code"] for c in record["suggested"]] == codes
    assert [c["code"] for c in record["near_misses"]] == near
    assert "reviewed" in browser.find_element(
        "css selector", f"#notes li[data-note='{name}']"
    ).get_attribute("class")


def test_the_keyboard_path(page, review_export, two_code_notes):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser, _, root, _ = page
    index = two_code_notes[1]
    open_note(browser, f"note_{index:02d}.txt")
    codes = shown(browser, "codes")
    assert len(codes) >= 2
    labels = {c["code"]: c["description"] for c in dataset_codes(review_export[1])}
    wanted = next(code for code in labels if code not in codes + shown(browser, "near-misses"))

    def keys(*sequence):
        ActionChains(browser).send_keys(*sequence).perform()

    keys("a", "j", "r", "j", "k")  # accept the first, reject the second, back to it
    keys("u", "r")  # undecide it, reject it again
    keys("/")
    keys(labels[wanted])
    wait_until(lambda: wanted in shown(browser, "search-results"), what="search")
    keys(
        *[Keys.ARROW_DOWN] * shown(browser, "search-results").index(wanted), Keys.ENTER, Keys.ESCAPE
    )
    keys("s")
    wait_until(
        lambda: f"Saved note_{index:02d}.txt" in browser.find_element("id", "status").text,
        what="save",
    )
    record = latest_record(root)
    assert (record["accepted"], record["rejected"], record["added"]) == (
        codes[:1],
        codes[1:2],
        [wanted],
    )
    keys("n")
    title = browser.find_element("id", "note-title")
    wait_until(lambda: title.text == f"note_{index + 1:02d}.txt", what="next")
    keys("p")
    wait_until(lambda: title.text == f"note_{index:02d}.txt", what="back")
    assert "j/" in browser.find_element("id", "shortcuts").text.replace(" ", "")


def test_a_note_holding_markup_shows_it_as_text(page):
    browser, _, _, _ = page
    paste(browser, XSS_NOTE)
    assert browser.find_element("id", "note-text").text == XSS_NOTE
    assert (
        run(browser, "return document.querySelectorAll('#note-text img, #note-text script').length")
        == 0
    )
    assert run(browser, "return window.pwned === undefined")


def test_oversized_empty_and_undecodable_notes_get_clear_messages(page):
    browser, _, _, _ = page
    status = browser.find_element("id", "status")
    run(browser, "document.getElementById('paste').value = 'fever '.repeat(200000);")
    browser.find_element("id", "code-button").click()
    limit = review_server.MAX_BODY_BYTES
    wait_until(lambda: f"at most {limit:,}" in status.text, what="size error")
    assert "error" in status.get_attribute("class")
    run(browser, "document.getElementById('paste').value = '  ';")
    browser.find_element("id", "code-button").click()
    wait_until(lambda: "text is empty" in status.text, what="empty error")
    run(
        browser,
        "const file = new File([new Uint8Array([0x66, 0xe8, 0x76])], 'latin1.txt');"
        "const drop = new DragEvent('drop', {dataTransfer: new DataTransfer()});"
        "drop.dataTransfer.items.add(file);"
        "document.getElementById('paste').dispatchEvent(drop);",
    )
    wait_until(lambda: "latin1.txt is not valid UTF-8" in status.text, what="UTF-8 error")


def test_two_tabs_saving_at_once_both_land_whole(page, review_export):
    browser, server, root, _ = page
    other = new_browser()
    try:
        other.get(server.url + "/")
        ready(other)
        open_note(browser, "note_08.txt")
        open_note(other, "note_09.txt")
        before = len(review_records.read(str(root / "records.jsonl")))
        start = threading.Barrier(2)

        def save(tab):
            start.wait()
            run(tab, "document.getElementById('save').click()")

        threads = [threading.Thread(target=save, args=(tab,)) for tab in (browser, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for tab, name in ((browser, "note_08.txt"), (other, "note_09.txt")):
            status = tab.find_element("id", "status")
            wait_until(lambda: f"Saved {name}" in status.text, what=name)  # noqa: B023
        records = review_records.read(str(root / "records.jsonl"))
        assert len(records) == before + 2
        assert {r["note_id"] for r in records[before:]} == {"note_08.txt", "note_09.txt"}
    finally:
        other.quit()


ATTACK_PAGE = """<!doctype html><html><body>
<form id="form" method="POST" action="TARGET/api/review" enctype="text/plain" target="sink">
<input type="hidden" name='{"note_id": "note_00.txt", "text": "x", "added": ["Z99.9"], "pad": "'
 value='"}'></form>
<iframe name="sink"></iframe>
<script>
const review = JSON.stringify({note_id: "note_00.txt", text: "x", added: ["Z99.9"]});
window.attack = async () => {
  const outcomes = {};
  for (const [name, options] of Object.entries({
    no_cors: {method: "POST", mode: "no-cors", body: review},
    no_cors_json: {method: "POST", mode: "no-cors", body: review,
                   headers: {"Content-Type": "text/plain"}},
    cors_json: {method: "POST", body: review, headers: {"Content-Type": "application/json"}},
    read_notes: {},
  })) {
    const path = name === "read_notes" ? "/api/notes" : "/api/review";
    try {
      const response = await fetch("TARGET" + path, options);
      outcomes[name] = response.type === "opaque" ? "opaque" : response.status;
    } catch (error) {
      outcomes[name] = "blocked";
    }
  }
  document.getElementById("form").submit();
  return outcomes;
};
</script></body></html>"""


@pytest.fixture
def attacker(page):
    """The URL of an attack page, served by a second local server on another port."""
    _, server, _, _ = page
    body = ATTACK_PAGE.replace("TARGET", server.url).encode()

    class AttackPage(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    attack_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AttackPage)
    threading.Thread(target=attack_server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{attack_server.server_address[1]}/"
    attack_server.shutdown()
    attack_server.server_close()


def test_another_page_and_another_host_name_are_refused(page, attacker, two_code_notes):
    """A page of another local server tries a no-cors fetch, a CORS fetch and a form POST;
    then the browser opens the server under a name an attacker's DNS points here. Nothing is
    written or read, the server refused what reached it, and the real page still saves."""
    browser, server, root, _ = page
    records = root / "records.jsonl"
    before = records.read_bytes() if records.exists() else b""
    refused_before = server.server_log().count('"POST /api/review HTTP/1.1" 403')
    other = new_browser()
    try:
        other.get(attacker)
        outcomes = other.execute_async_script("window.attack().then(arguments[0])")
        # Opaque or blocked (CORP, no CORS answer): the page reads nothing back; the server
        # answered 403 to what reached it (two no-cors fetches and the form).
        assert set(outcomes) == {"no_cors", "no_cors_json", "cors_json", "read_notes"}
        assert set(outcomes.values()) <= {"opaque", "blocked"}, outcomes
        wait_until(
            lambda: (
                server.server_log().count('"POST /api/review HTTP/1.1" 403') >= refused_before + 3
            ),
            what="the no-cors fetches and the form refused",
        )
        port = server.url.rsplit(":", 1)[1]
        other.get(f"http://evil.test:{port}/")  # the rebinding page, same origin as its target
        assert "this server answers for" in other.page_source
        assert page_secret(server.url) not in other.page_source
        status = other.execute_async_script("fetch('/api/notes').then(r => arguments[0](r.status))")
        assert status == 421
    finally:
        other.quit()
    assert (records.read_bytes() if records.exists() else b"") == before
    name = f"note_{two_code_notes[0]:02d}.txt"
    open_note(browser, name)
    browser.find_element("id", "save").click()
    wait_until(lambda: f"Saved {name}" in browser.find_element("id", "status").text, what="save")
    assert latest_record(root)["note_id"] == name


def test_a_screenshot_of_the_page_for_the_docs(page):
    browser, _, _, _ = page
    open_note(browser, "note_01.txt")
    first = shown(browser, "codes")[0]
    browser.find_element("css selector", f"#codes li[data-code='{first}'] button.accept").click()
    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    temporary = SCREENSHOT.replace(".png", f".tmp-{os.getpid()}.png")
    assert browser.save_screenshot(temporary)
    shutil.move(temporary, SCREENSHOT)
    with open(SCREENSHOT, "rb") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_coder_reading_translations_marks_terms_in_the_note_and_attention_in_its_translation(
    exports, trained_run, tmp_path
):
    export_dir = exports.translation_text()
    texts = write_notes(trained_run.dataset_dir, str(tmp_path / "notes"))
    os.makedirs(tmp_path / "en")
    for name in os.listdir(tmp_path / "notes"):
        text = (tmp_path / "notes" / name).read_text()
        (tmp_path / "en" / name).write_text("Translated: " + text)
    records = tmp_path / "records.jsonl"
    server = ReviewServer(
        export_dir, str(records), str(tmp_path / "notes"), f"--translations_dir={tmp_path / 'en'}"
    )
    browser = new_browser()
    try:
        browser.get(server.url + "/")
        ready(browser)
        assert run(browser, "return document.getElementById('paste-translation').hidden") is False
        # A note with a matched term and the attention's tokens among its codes.
        index, answer = next(
            (index, answer)
            for index, answer in coded(server.url, texts, 1, lambda text: "Translated: " + text)
            if any(e["source"] == "term" for c in answer["codes"] for e in c["evidence"])
        )
        name = f"note_{index:02d}.txt"
        open_note(browser, name)
        assert run(browser, "return document.getElementById('translation-text').hidden") is False
        for code in answer["codes"]:
            browser.find_element("css selector", f"#codes li[data-code='{code['code']}']").click()
            for box, within, text in (
                ("note-text", "text", texts[index]),
                ("translation-text", "translation", "Translated: " + texts[index]),
            ):
                marks = run(
                    browser,
                    f"return [...document.querySelectorAll('#{box} mark')].map(m => "
                    "[Number(m.dataset.start), Array.from(m.textContent).length])",
                )
                highlighted = {i for start, length in marks for i in range(start, start + length)}
                expected = {
                    i
                    for e in code["evidence"]
                    if e["within"] == within
                    for i in range(e["start"], e["end"])
                }
                assert highlighted == expected, (code["code"], within)
                assert run(browser, f"return document.getElementById('{box}').textContent") == text
        browser.find_element("id", "save").click()
        wait_until(
            lambda: f"Saved {name}" in browser.find_element("id", "status").text, what="save"
        )
        assert review_records.read(str(records))[-1]["note_id"] == name
    finally:
        browser.quit()
        server.stop()
