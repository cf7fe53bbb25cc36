"""The dataset format: writing, reading and the errors that name the bad file, line and field."""

import gzip
import json
import os

import pandas as pd
import pytest

from longbert_tf.data import dataset


def _write_jsonl(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as notes_file:
        notes_file.writelines(line + "\n" for line in lines)


def _note(**overrides):
    record = dict(note_id="1", subject_id="9", text="chest pain", codes=["401.9"])
    record.update(overrides)
    return json.dumps(record)


def test_write_then_read_round_trips(tmp_path):
    notes = pd.DataFrame(
        dict(
            note_id=["0012", "7"],
            subject_id=["3", "3"],
            text=["Pt with CHF.", ""],
            codes=[["428.0", "401.9"], []],
        )
    )
    dataset_dir = dataset.write_dataset(str(tmp_path / "ds"), {"train": notes}, ["401.9", "428.0"])
    read = dataset.read_notes(dataset_dir, "train")
    pd.testing.assert_frame_equal(read, notes)
    assert dataset.read_labels(dataset_dir) == ["401.9", "428.0"]
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary folder left behind


def test_evidence_round_trips_and_notes_without_it_have_none(tmp_path):
    notes = pd.DataFrame(
        dict(
            note_id=["a", "b"],
            subject_id=["a", "b"],
            text=["Fiebre y dolor torácico.", "Tos."],
            codes=[["R50.9", "R07.9"], ["R05"]],
            evidence=[
                [dict(code="R50.9", spans=[[0, 6]]), dict(code="R07.9", spans=[[9, 14], [15, 23]])],
                None,
            ],
        )
    )
    dataset_dir = dataset.write_dataset(
        str(tmp_path / "ds"), {"train": notes}, ["R05", "R07.9", "R50.9"]
    )
    read = dataset.read_notes(dataset_dir, "train")
    assert read.evidence[0] == notes.evidence[0] and read.evidence[1] is None
    with gzip.open(dataset.notes_path(dataset_dir, "train"), "rt") as notes_file:
        assert "evidence" not in json.loads(notes_file.readlines()[1])  # absent, not null
    bad = notes.assign(evidence=[[dict(code="R50.9", spans=[[0, 99]])], None])
    with pytest.raises(ValueError, match=r"train notes to write, line 1: evidence 1: span"):
        dataset.write_dataset(str(tmp_path / "ds"), {"train": bad}, ["R05", "R07.9", "R50.9"])
    assert dataset.read_notes(dataset_dir, "train").evidence[0] == notes.evidence[0]  # kept


def test_write_dataset_refuses_unknown_codes_and_keeps_the_old_folder(tmp_path):
    good = pd.DataFrame(dict(note_id=["1"], subject_id=["1"], text=["x"], codes=[["A"]]))
    dataset_dir = dataset.write_dataset(str(tmp_path / "ds"), {"train": good}, ["A"])
    bad = good.assign(codes=[["B"]])
    with pytest.raises(ValueError, match=r"note_id '1'.*\['B'\] are not in labels.txt"):
        dataset.write_dataset(dataset_dir, {"train": bad}, ["A"])
    assert dataset.read_notes(dataset_dir, "train").codes.tolist() == [["A"]]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"train.jsonl.gz, line 2: not valid JSON"),
        (_note(note_id=1), r"line 2: field 'note_id' must be a string"),
        (
            json.dumps(dict(note_id="2", subject_id="9", codes=[])),
            r"line 2: field 'text' is missing",
        ),
        (_note(note_id="2", codes="401.9"), r"line 2: field 'codes' must be a list of strings"),
        (_note(), r"line 2: note_id '1' repeats line 1"),
        (_note(note_id="2", evidence={}), r"line 2: field 'evidence' must be a list"),
        (
            _note(note_id="2", evidence=[dict(code="I10", spans=[[0, 5]])]),
            r"line 2: evidence 1: code 'I10' is not one of the note's codes",
        ),
        (
            _note(note_id="2", evidence=[dict(code="401.9", spans=[[6, 11]])]),
            r"line 2: evidence 1: span \[6, 11\] is not .* <= 10 \(the text's length",
        ),
        (
            _note(note_id="2", evidence=[dict(code="401.9", spans=[[3, 3]])]),
            r"evidence 1: span \[3, 3\] is not \[start, end\] with 0 <= start < end",
        ),
        (
            _note(note_id="2", evidence=[dict(code="401.9", spans=[])]),
            r"evidence 1: 'spans' must be a non-empty list",
        ),
        (
            _note(note_id="2", evidence=[dict(code="401.9", words="pain")]),
            r"evidence 1 must be an object with 'code' and 'spans'",
        ),
    ],
)
def test_read_notes_names_file_and_line_of_bad_rows(tmp_path, line, message):
    _write_jsonl(str(tmp_path / "train.jsonl.gz"), [_note(), line])
    with pytest.raises(ValueError, match=message):
        dataset.read_notes(str(tmp_path), "train")


def test_missing_files_say_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="dev.jsonl.gz does not exist: prepare"):
        dataset.read_notes(str(tmp_path), "dev")
    with pytest.raises(FileNotFoundError, match="labels.txt does not exist"):
        dataset.read_labels(str(tmp_path))


def test_read_labels_rejects_duplicates_and_blanks(tmp_path):
    (tmp_path / "labels.txt").write_text("401.9\n428.0\n401.9\n")
    with pytest.raises(ValueError, match="line 3: code '401.9' repeats line 1"):
        dataset.read_labels(str(tmp_path))
    (tmp_path / "labels.txt").write_text("401.9\n\n")
    with pytest.raises(ValueError, match="line 2: blank"):
        dataset.read_labels(str(tmp_path))


def test_codes_outside_the_label_space_are_counted_and_refused_in_training():
    notes = pd.DataFrame(dict(note_id=["a", "b"], codes=[["X"], ["X", "Y", "Z", "Y"]]))
    assert dataset.label_ids(notes, ["Y", "X"]) == [[1], [0, 1]]
    assert dataset.label_ids(notes, ["X"]) == [[0], [0]]
    assert dataset.outside_codes(notes, ["X"]).tolist() == [0, 2]
    dataset.check_training_codes(notes, ["X", "Y", "Z"], "src")
    with pytest.raises(ValueError, match=r"src, note 2 \(note_id 'b'\): codes \['Y', 'Z'\]"):
        dataset.check_training_codes(notes, ["X"], "src")


def test_a_dataset_is_written_again_over_its_own_folder_only(tmp_path):
    notes = pd.DataFrame(dict(note_id=["1"], subject_id=["1"], text=["x"], codes=[["A"]]))
    dataset_dir = dataset.write_dataset(str(tmp_path / "ds"), {"train": notes}, ["A"])
    cached = tmp_path / "ds" / "description_cache" / "key.npy"
    cached.parent.mkdir()
    cached.write_bytes(b"embeddings")
    dataset.write_dataset(dataset_dir, {"train": notes.assign(text=["y"])}, ["A"])
    assert dataset.read_notes(dataset_dir, "train").text.tolist() == ["y"]
    assert cached.read_bytes() == b"embeddings"  # derived caches are carried over
    (tmp_path / "ds" / "my_notes.csv").write_text("mine")
    with pytest.raises(FileExistsError, match=r"ds holds my_notes.csv"):
        dataset.write_dataset(dataset_dir, {"train": notes}, ["A"])
    assert dataset.read_notes(dataset_dir, "train").text.tolist() == ["y"]
    assert (tmp_path / "ds" / "my_notes.csv").read_text() == "mine"
