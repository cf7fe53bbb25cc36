"""The README stays one screen, every docs page exists, and links and figures resolve."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = (
    "datasets",
    "reproducing",
    "encoders",
    "serving",
    "review",
    "distributed",
    "performance",
    "results",
    "design",
)
DOCUMENTS = [ROOT / "README.md", *(ROOT / "docs" / f"{page}.md" for page in PAGES)]
# Pages say what is true, not how it came to be.
HISTORY = re.compile(r"\bissue\b|\bsession\b|before this table", re.IGNORECASE)
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_the_readme_is_one_screen_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in PAGES:
        assert f"(docs/{page}.md)" in readme, page


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_pages_link_to_what_exists_and_narrate_no_history(path):
    text = path.read_text()
    assert not HISTORY.findall(text), HISTORY.findall(text)
    for target, _ in LINK.findall(text):
        if target.startswith(("http://", "https://")):
            continue
        assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
