"""setup.py admits the Python versions the pinned stack supports; its classifiers agree."""

import ast
import pathlib
import re

from packaging.specifiers import SpecifierSet

SETUP = pathlib.Path(__file__).resolve().parent.parent / "setup.py"
SUPPORTED = ["3.11", "3.12", "3.13"]


def _setup_keywords():
    tree = ast.parse(SETUP.read_text(encoding="utf-8"))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup"
    ]
    assert len(calls) == 1
    return {
        kw.arg: ast.literal_eval(kw.value)
        for kw in calls[0].keywords
        if kw.arg in ("python_requires", "classifiers")
    }


def test_python_requires_admits_supported_versions_only():
    spec = SpecifierSet(_setup_keywords()["python_requires"])
    for version in SUPPORTED:
        assert version in spec, version
    for version in ("3.10", "3.14"):
        assert version not in spec, version


def test_classifiers_list_the_supported_versions():
    classifiers = _setup_keywords()["classifiers"]
    prefix = "Programming Language :: Python :: "
    pattern = re.escape(prefix) + r"3\.\d+"
    listed = [c[len(prefix) :] for c in classifiers if re.fullmatch(pattern, c)]
    assert listed == SUPPORTED
    spec = SpecifierSet(_setup_keywords()["python_requires"])
    assert [v for v in (f"3.{minor}" for minor in range(8, 20)) if v in spec] == listed
