"""Atomic writes: a folder is replaced whole, never one holding what its writer did not put
there, and a swap a kill interrupted is finished."""

import os

import pytest

from longbert_tf import files

CONTENT = ("content.txt",)  # what the folders of these tests hold


def write_folder(path, text: str) -> None:
    with open(os.path.join(path, "content.txt"), "w") as content:
        content.write(text)


def read_folder(path) -> str:
    with open(os.path.join(path, "content.txt")) as content:
        return content.read()


def test_a_failed_block_leaves_the_folder_as_it_was(tmp_path):
    final = str(tmp_path / "cache")
    with files.atomic_dir(final, CONTENT) as temporary:
        write_folder(temporary, "first")
    with pytest.raises(RuntimeError), files.atomic_dir(final, CONTENT) as temporary:
        write_folder(temporary, "second")
        raise RuntimeError("the writer failed")
    assert read_folder(final) == "first"
    assert os.listdir(tmp_path) == ["cache"]


@pytest.mark.parametrize("killed_after_renames", [1, 2])
def test_a_swap_killed_between_or_after_its_renames_is_finished(
    tmp_path, monkeypatch, killed_after_renames
):
    final = str(tmp_path / "cache")
    with files.atomic_dir(final, CONTENT) as temporary:
        write_folder(temporary, "old")
    renames, rename = [], os.rename

    def rename_then_die(source, target):
        rename(source, target)
        renames.append(target)
        if len(renames) == killed_after_renames:
            raise KeyboardInterrupt  # the process dies here: nothing after runs

    monkeypatch.setattr(os, "rename", rename_then_die)
    monkeypatch.setattr(files.shutil, "rmtree", lambda *args, **kwargs: None)
    with pytest.raises(KeyboardInterrupt), files.atomic_dir(final, CONTENT) as temporary:
        write_folder(temporary, "new")
    monkeypatch.undo()
    expected = "old" if killed_after_renames == 1 else "new"
    # The next writer first finishes the swap: the old folder is back (killed between the
    # renames) or the new one stays (killed after them), and readers see it meanwhile.
    with files.atomic_dir(final, CONTENT) as temporary:
        assert read_folder(final) == expected
        write_folder(temporary, "newer")
    assert read_folder(final) == "newer"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".old")]


def test_atomic_file_replaces_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "cache" / "values.txt"
    with files.atomic_file(str(path)) as temporary:
        assert not path.exists()  # nothing at the final name while it is written
        with open(temporary, "w") as out:
            out.write("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError, match="interrupted"):
        with files.atomic_file(str(path)) as temporary:
            with open(temporary, "w") as out:
                out.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "first"  # the old file is kept
    assert os.listdir(path.parent) == ["values.txt"]  # and the temporary one is gone


def test_atomic_file_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, target):
        events.append(("replace", str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "values.txt"
    files.write_text(str(path), "synced")
    temporary = f"{path}.tmp-{os.getpid()}"
    assert events == [("fsync", temporary), ("replace", str(path)), ("fsync", str(tmp_path))]


def test_a_folder_holding_anything_else_is_never_replaced(tmp_path):
    final = str(tmp_path / "cache")
    with files.atomic_dir(final, CONTENT) as temporary:
        write_folder(temporary, "first")
    (tmp_path / "cache" / "notes.txt").write_text("mine")  # a user's file
    (tmp_path / "cache" / "checkpoints").mkdir()  # a run's folder
    with pytest.raises(FileExistsError, match=r"cache holds checkpoints, notes.txt, which"):
        with files.atomic_dir(final, CONTENT) as temporary:
            write_folder(temporary, "second")
    assert read_folder(final) == "first" and (tmp_path / "cache" / "notes.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["cache"]  # nothing written beside it either


def test_a_folder_given_something_else_while_written_is_kept(tmp_path):
    final = str(tmp_path / "cache")
    with files.atomic_dir(final, CONTENT) as temporary:
        write_folder(temporary, "first")
    with pytest.raises(FileExistsError, match="late.txt"):
        with files.atomic_dir(final, CONTENT) as temporary:
            write_folder(temporary, "second")
            (tmp_path / "cache" / "late.txt").write_text("mine")
    assert read_folder(final) == "first" and (tmp_path / "cache" / "late.txt").exists()


def test_empty_folders_are_filled_and_files_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with files.atomic_dir(str(tmp_path / "empty")) as temporary:
        write_folder(temporary, "new")
    assert read_folder(tmp_path / "empty") == "new"
    (tmp_path / "plain").write_text("mine")
    with pytest.raises(FileExistsError, match="plain is a file"):
        with files.atomic_dir(str(tmp_path / "plain"), CONTENT):
            pass
    assert (tmp_path / "plain").read_text() == "mine"


def test_lines_split_at_newlines_alone():
    text = "[PAD]\r\nA\u2028B\nC\x85D\x1cE\n\nlast\n"
    assert files.split_lines(text) == ["[PAD]", "A\u2028B", "C\x85D\x1cE", "", "last"]
    assert files.split_lines("") == [] and files.split_lines("x") == ["x"]
