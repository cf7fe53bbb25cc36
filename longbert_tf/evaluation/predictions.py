"""Every note's most probable codes, streamed to a JSON-lines file for error analysis."""

import contextlib
import gzip
import json

from longbert_tf import files
from longbert_tf.data import dataset

TOP_CODES = 15  # codes per note for precision at k and the predictions file


class PredictionsWriter:
    """Streams every note's top codes to a JSON-lines file, for error analysis.

    A line per note: `split`, `note_id`, `codes` (its true codes) and
    `top_codes` (`[code, probability]` pairs, most probable first). The file
    appears complete at `close()` (written to a temporary name, then renamed), gzipped when
    `path` ends in `.gz`.
    With `path` None nothing is written (the other tasks of a distributed run).
    """

    def __init__(self, path: str | None, labels: list, dataset_dir: str):
        self.path = path
        self.labels = labels
        self.dataset_dir = dataset_dir
        self._notes = {}  # split -> [(note_id, codes)] in note order
        self._file = None
        self._replacing = contextlib.ExitStack()  # renames the file into place when closed
        if path:
            temporary = self._replacing.enter_context(files.atomic_file(path))
            opener = gzip.open if path.endswith(".gz") else open
            self._file = opener(temporary, "wt", encoding="utf-8")

    def write(self, split: str, top_codes, top_probabilities, note_index) -> None:
        """One batch: int `[batch, k]` codes, float `[batch, k]` probabilities, int `[batch]`."""
        if self._file is None:
            return
        if split not in self._notes:
            self._notes[split] = _note_ids_and_codes(dataset.notes_path(self.dataset_dir, split))
        for codes, probabilities, index in zip(top_codes, top_probabilities, note_index):
            note_id, true_codes = self._notes[split][index]
            line = dict(
                split=split,
                note_id=note_id,
                codes=true_codes,
                top_codes=[
                    [self.labels[code], round(float(probability), 6)]
                    for code, probability in zip(codes, probabilities)
                ],
            )
            self._file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._replacing.close()
            self._file = None


def _note_ids_and_codes(path: str) -> list:
    """`(note_id, codes)` of every note of a split file, without keeping the texts."""
    with gzip.open(path, "rt", encoding="utf-8") as notes_file:
        return [(note["note_id"], note["codes"]) for note in map(json.loads, notes_file)]
