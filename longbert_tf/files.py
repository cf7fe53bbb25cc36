"""Writing files and folders so that a reader never sees them half-written."""

import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import tempfile

# What `tf.saved_model.save` writes into a folder.
SAVED_MODEL_ENTRIES = (
    "saved_model.pb",
    "fingerprint.pb",
    "keras_metadata.pb",
    "variables",
    "assets",
    "assets.extra",
)


def _previous(final_dir: str) -> str:
    """Where `atomic_dir` keeps the old `final_dir` during the swap."""
    parent, name = os.path.split(os.path.abspath(final_dir))
    return os.path.join(parent, f".{name}.old")


def recover(final_dir: str) -> None:
    """Finishes a swap of `atomic_dir` that a killed process left halfway.

    Killed between its two renames, `final_dir` is missing and the old copy
    is beside it: the old copy comes back. Killed after them, the old copy is
    removed.
    """
    previous = _previous(final_dir)
    if not os.path.exists(previous):
        return
    if os.path.exists(final_dir):
        shutil.rmtree(previous)
    else:
        os.rename(previous, final_dir)


def check_replaceable(final_dir: str, replaceable) -> None:
    """Raises FileExistsError unless `final_dir` is missing, empty, or holds only entries matching
    the `replaceable` patterns (`fnmatch`): what a folder of its kind holds, and nothing a user
    put there."""
    if not os.path.isdir(final_dir):
        if os.path.exists(final_dir):
            raise FileExistsError(f"{final_dir} is a file, not a folder: it is not replaced")
        return
    foreign = sorted(
        entry
        for entry in os.listdir(final_dir)
        if not any(fnmatch.fnmatchcase(entry, pattern) for pattern in replaceable)
    )
    if foreign:
        listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise FileExistsError(
            f"{final_dir} holds {listed}, which this package did not write there: it is not "
            "replaced (name a new or empty folder, or move those out)"
        )


@contextlib.contextmanager
def atomic_dir(final_dir: str, replaceable=()):
    """Yields an empty temporary folder beside `final_dir` that replaces it when the block succeeds.

    An existing `final_dir` is replaced only when `check_replaceable` allows
    it (checked before anything is written and again at the swap): `replaceable` names the entries
    a folder of this kind holds. On an exception the temporary folder is
    removed and `final_dir` is left as it was; a swap a kill interrupted is
    finished first (see `recover`).
    """
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    recover(final_dir)
    check_replaceable(final_dir, replaceable)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(final_dir)}.tmp-", dir=parent)
    try:
        yield temporary
        if os.path.exists(final_dir):
            check_replaceable(final_dir, replaceable)  # again: the block may have taken hours
            previous = _previous(final_dir)
            os.rename(final_dir, previous)
            os.rename(temporary, final_dir)
            shutil.rmtree(previous)
        else:
            os.rename(temporary, final_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str):
    """Yields a temporary path beside `path` that replaces `path` when the block succeeds.

    On an exception the temporary file is removed and `path` is left as it was. The new file's
    bytes reach the disk before the rename, and the rename before the block returns (its folder
    is synced): after a power cut `path` is the old file or the whole new one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
        fsync_folder(folder)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def fsync_folder(folder: str) -> None:
    """Flushes `folder`'s entries (a file created, renamed or removed in it) to disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def split_lines(text: str) -> list:
    """The lines of a file's text, split at "\\n" alone (a "\\r" before it dropped, no empty
    last line). `str.splitlines()` also splits at U+2028, U+0085, U+001C-001E and other
    separators, which a vocabulary token may hold: every later token would shift."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def write_text(path: str, text: str) -> None:
    """Writes `text` through a temporary file and a rename."""
    with atomic_file(path) as temporary, open(temporary, "w", encoding="utf-8") as text_file:
        text_file.write(text)


def write_json(path: str, value) -> None:
    """Writes `value` as indented JSON through a temporary file and a rename."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(paths) -> str:
    """16 hex digits that change with the name or the content of any of the files."""
    listing = "".join(f"{os.path.basename(path)}:{file_sha256(path)}\n" for path in paths)
    return hashlib.sha256(listing.encode()).hexdigest()[:16]
