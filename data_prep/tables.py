"""Reading MIMIC-style CSV tables: finding `.csv`/`.csv.gz`, checking columns, streaming chunks.

Every column is read as a string, so ICD codes keep their leading zeros
(`0389` stays `0389`; read as a number it would become `389`).
"""

import collections
import os

import pandas as pd

from longbert_tf.data import dataset

CHUNK_ROWS = 100_000


class SkipCounter(collections.Counter):
    """Rows skipped while reading, by reason; reported in every prep summary."""

    def report(self) -> dict:
        """The reasons that skipped at least one row, with their counts."""
        return {reason: count for reason, count in sorted(self.items()) if count}


def find_table(directory: str, name: str) -> str:
    """Path of `directory/name.csv.gz` or `directory/name.csv`; FileNotFoundError naming both."""
    for path in (os.path.join(directory, f"{name}.csv.gz"), os.path.join(directory, f"{name}.csv")):
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"neither {name}.csv.gz nor {name}.csv is in {directory}")


def read_chunks(path: str, columns: list, chunk_rows: int = CHUNK_ROWS):
    """Yields DataFrames of at most `chunk_rows` rows holding `columns` (str, empty -> NaN).

    Raises ValueError naming the file and the missing columns, and wraps
    parser errors with the file name.
    """
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the header ({error})") from None
    missing = [column for column in columns if column not in header]
    if missing:
        raise ValueError(f"{path}: columns {missing} are missing; the header has {header}")
    reader = pd.read_csv(
        path,
        usecols=columns,
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        chunksize=chunk_rows,
    )
    rows_read = 0
    try:
        for chunk in reader:
            rows_read += len(chunk)
            yield chunk
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: malformed CSV after row {rows_read:,} ({error})") from None


def read_id_list(path: str) -> list:
    """One id a line, no header (CAML's split files); blank lines ignored."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, encoding="utf-8") as id_file:
        ids = [line.strip() for line in id_file if line.strip()]
    if not ids:
        raise ValueError(f"{path} lists no ids")
    for line_number, value in enumerate(ids, start=1):
        if not value.isdigit():
            raise ValueError(f"{path}, id {line_number}: {value!r} is not a numeric id")
    return ids


def check_outside(out_dir: str, raw_dir: str) -> None:
    """Refuses an output folder inside the raw data folder, which is only ever read."""
    if os.path.realpath(out_dir).startswith(os.path.realpath(raw_dir) + os.sep):
        raise ValueError(f"--out_dir={out_dir} is inside {raw_dir}; raw files are never written")


def read_code_list(path: str) -> list:
    """Codes one a line, no repeats; blank lines and a header (`code`, `icd_code`) are skipped."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, encoding="utf-8") as code_file:
        codes = [line.strip().strip('"') for line in code_file if line.strip()]
    if codes and codes[0].lower() in ("code", "icd9_code", "icd_code"):
        codes = codes[1:]
    repeated = sorted(code for code, count in collections.Counter(codes).items() if count > 1)
    if repeated:
        raise ValueError(f"{path}: codes {repeated} are listed more than once")
    if not codes:
        raise ValueError(f"{path} lists no codes")
    return codes


def outside_label_space(splits: dict, labels: list) -> dict:
    """For the summary: how many dev and test (note, code) pairs have a code outside `labels`."""
    return {
        split: f"{dataset.outside_codes(notes, labels).sum():,} of "
        f"{sum(map(len, notes.codes)):,} (note, code) pairs"
        for split, notes in splits.items()
        if split != "train"
    }
