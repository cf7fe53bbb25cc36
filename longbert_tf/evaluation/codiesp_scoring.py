"""CodiEsp-D scores as the CLEF eHealth 2020 evaluation computes them: MAP, and micro P, R, F1.

The official scripts are TeMU-BSC's codiesp-evaluation-script: `codiespD_P_evaluation.py` (MAP,
through trectools 0.0.42, the version its requirements pin) and `comp_f1_diag_proc.py` (P, R, F1).

Files are UTF-8, tab-separated, without a header; empty lines are skipped:
- gold (`devD.tsv`): `case_id<TAB>code` a line, e.g. `S0004-06142005000700014-1<TAB>n44.8`; a code
  may repeat within a case (one line per mention);
- run: the same two columns; a case's codes are ranked by the order of its lines in the file,
  most likely first (its lines need not be adjacent);
- valid codes (`codiesp-D_codes.tsv`, or a list): the code in the first column of each line.

Rules both scores share: codes are compared lower-cased, dot kept (`N44.8` is `n44.8`); case ids
exactly. Every gold code is kept: one outside the valid list can never be matched, so it counts as
missed. A predicted code outside the valid list is dropped, and so is a repeat within a case (its
first place kept).

MAP: a run case's ranking is its remaining codes in run order, cut at `depth` (1,000) codes. Its
average precision is the sum, over the ranks k that hold a gold code, of (gold codes in the first
k) / k, divided by its number of gold codes. MAP averages it over the run's cases that keep a code:
a run case absent from gold scores 0, a gold case absent from the run is not counted at all.
(trectools 0.0.45 and later break the tie between the run's equal scores by code instead, which
ranks a case's codes alphabetically; the 2020 results used the run order.)

P, R, F1: micro averages over distinct (case, code) pairs. Every run case's pairs are predictions,
including a case absent from gold; every gold case's pairs are gold, including a case the run
leaves out. Ratios with nothing to divide by are NaN, as in the official scripts: MAP, precision
and F1 when no valid code is predicted; F1 is 0 when P = R = 0.
"""

import math
from collections.abc import Iterable, Mapping, Sequence

from longbert_tf import files

DEPTH = 1000  # codes per case that MAP reads: trectools' get_map default


def _read_rows(path: str) -> list:
    """(line number, fields) of each non-empty line of a tab-separated UTF-8 file."""
    with open(path, encoding="utf-8") as text_file:
        lines = files.split_lines(text_file.read())
    return [(number, line.split("\t")) for number, line in enumerate(lines, start=1) if line]


def _read_case_codes(path: str) -> dict:
    case_codes = {}
    for number, fields in _read_rows(path):
        if len(fields) != 2 or not all(fields):
            raise ValueError(
                f"{path}:{number}: expected 'case_id<TAB>code', got {fields!r} "
                "(two non-empty tab-separated fields, no header)"
            )
        case_codes.setdefault(fields[0], []).append(fields[1])
    return case_codes


def read_gold(path: str) -> dict[str, list[str]]:
    """Gold codes of each case, `{case_id: [code, ...]}` in file order, repeats and case kept."""
    return _read_case_codes(path)


def read_run(path: str) -> dict[str, list[str]]:
    """Ranked codes of each case, `{case_id: [code, ...]}`, most likely first (file order)."""
    return _read_case_codes(path)


def read_valid_codes(path: str) -> set[str]:
    """The lower-cased codes in the first column of each non-empty line (other columns ignored)."""
    codes = set()
    for number, fields in _read_rows(path):
        if not fields[0]:
            raise ValueError(f"{path}:{number}: the first column (the code) is empty")
        codes.add(fields[0].lower())
    return codes


def write_run(path: str, ranked_codes: Mapping[str, Sequence[str]]) -> None:
    """Writes a run file: per case (in mapping order) its codes most likely first, lower-cased,
    one `case_id<TAB>code` line each. The file appears whole or not at all (`files.atomic_file`).

    Raises ValueError, before writing, for an empty case id or code or one holding whitespace
    (trectools splits the official intermediate files at any whitespace)."""
    lines = []
    for case_id, codes in ranked_codes.items():
        for field in (case_id, *codes):
            if not isinstance(field, str) or not field or any(c.isspace() for c in field):
                raise ValueError(
                    f"case {case_id!r}: {field!r} is not a run field (a non-empty string "
                    "without whitespace)"
                )
        lines.extend(f"{case_id}\t{code.lower()}\n" for code in codes)
    with files.atomic_file(path) as temporary, open(temporary, "w", encoding="utf-8") as run_file:
        run_file.writelines(lines)


def _gold_sets(gold: Mapping[str, Iterable[str]]) -> dict:
    """{case_id: set of lower-cased codes}; invalid codes kept (they count as missed)."""
    return {case_id: {code.lower() for code in codes} for case_id, codes in gold.items()}


def _kept_run(run: Mapping[str, Sequence[str]], valid_codes: Iterable[str]) -> dict:
    """{case_id: lower-cased valid codes in run order, first place of a repeat}, cases left
    with no code dropped."""
    valid = {code.lower() for code in valid_codes}
    kept = {}
    for case_id, codes in run.items():
        ranked = list(dict.fromkeys(code.lower() for code in codes if code.lower() in valid))
        if ranked:
            kept[case_id] = ranked
    return kept


def mean_average_precision(
    gold: Mapping[str, Iterable[str]],
    run: Mapping[str, Sequence[str]],
    valid_codes: Iterable[str],
    depth: int = DEPTH,
) -> float:
    """MAP over the run's cases (see the module docstring), as `codiespD_P_evaluation.py` prints
    it unrounded; NaN when the run keeps no valid code. `run` holds each case's codes, most
    likely first."""
    if depth < 1:
        raise ValueError(f"depth is {depth}: it is a number of codes per case, at least 1")
    gold_codes = _gold_sets(gold)
    ranked_run = _kept_run(run, valid_codes)
    if not ranked_run:
        return math.nan
    total_precision = 0.0
    for case_id, ranked in ranked_run.items():
        relevant = gold_codes.get(case_id)
        if not relevant:
            continue  # a case absent from gold: average precision 0, still counted
        hits, precision_sum = 0, 0.0
        for rank, code in enumerate(ranked[:depth], start=1):
            if code in relevant:
                hits += 1
                precision_sum += hits / rank
        total_precision += precision_sum / len(relevant)
    return total_precision / len(ranked_run)


def micro_scores(
    gold: Mapping[str, Iterable[str]],
    predicted: Mapping[str, Iterable[str]],
    valid_codes: Iterable[str],
) -> tuple[float, float, float]:
    """(precision, recall, F1) over distinct (case, code) pairs, as `comp_f1_diag_proc.py`
    computes them (see the module docstring); order within a case is irrelevant."""
    gold_codes = _gold_sets(gold)
    predicted_codes = {
        case_id: set(codes) for case_id, codes in _kept_run(predicted, valid_codes).items()
    }
    num_predicted = sum(len(codes) for codes in predicted_codes.values())
    num_gold = sum(len(codes) for codes in gold_codes.values())
    true_positives = sum(
        len(codes & predicted_codes.get(case_id, set())) for case_id, codes in gold_codes.items()
    )
    precision = true_positives / num_predicted if num_predicted else math.nan
    recall = true_positives / num_gold if num_gold else math.nan
    if math.isnan(precision) or math.isnan(recall):
        return precision, recall, math.nan
    if precision + recall == 0:
        return precision, recall, 0.0
    return precision, recall, 2 * precision * recall / (precision + recall)
