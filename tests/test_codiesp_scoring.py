"""codiesp_scoring against pairs counted by hand and against trectools, driven as the official
CodiEsp-D script drives it (codiespD_P_evaluation.py, with the trectools version it pins)."""

import importlib.metadata
import math
import os

import pytest

from longbert_tf.evaluation import codiesp_scoring

CASE_A = "S1130-05582000000000001-1"
CASE_B = "S0210-48062000000000002-1"  # in gold, no prediction
CASE_C = "S0004-06142000000000003-1"  # run lines not adjacent
CASE_D = "S1889-836X2000000000004-1"  # in the run, not in gold
CASE_E = "S0365-66912000000000005-1"  # in the run, only invalid codes

GOLD_ROWS = [
    (CASE_A, "n44.8"),
    (CASE_A, "r60.9"),
    (CASE_A, "N44.8"),  # the same code, upper case
    (CASE_A, "z20.818"),
    (CASE_A, "r60.9"),  # a second mention
    (CASE_A, "x99.99"),  # outside the valid list: always missed
    (CASE_B, "k02.9"),
    (CASE_B, "m89.9"),
    (CASE_B, "d49.2"),
    (CASE_C, "a53.9"),
    (CASE_C, "n39.0"),
    (CASE_C, "q64.4"),
]
RUN_ROWS = [
    (CASE_A, "Z20.818"),
    (CASE_A, "CODE1"),  # not a valid code: dropped, not a miss
    (CASE_A, "n44.8"),
    (CASE_A, "n44.8"),  # a repeat: dropped
    (CASE_A, "e11.9"),
    (CASE_A, "r60.9"),
    (CASE_C, "n39.0"),
    (CASE_C, "k02.9"),
    (CASE_C, "q64.4"),
    (CASE_D, "m89.9"),
    (CASE_C, "a53.9"),  # fourth in CASE_C's ranking
    (CASE_E, "CODE2"),
]
# Shaped like codiesp-D_codes.tsv: code, Spanish and English descriptions; case varies.
VALID_ROWS = [
    ("N44.8", "otros trastornos", "Other disorders"),
    ("R60.9", "edema", "Edema"),
    ("z20.818", "contacto", "Contact"),
    ("e11.9", "diabetes", "Diabetes"),
    ("k02.9", "caries", "Caries"),
    ("m89.9", "hueso", "Bone"),
    ("d49.2", "neoplasia", "Neoplasm"),
    ("a53.9", "sifilis", "Syphilis"),
    ("n39.0", "infeccion", "Infection"),
    ("q64.4", "uraco", "Urachus"),
]

# Average precision by hand, ranks after dropping CODE1 and the repeat:
# A: z20.818 (1, hit), n44.8 (2, hit), e11.9 (3), r60.9 (4, hit); 4 gold codes with x99.99.
AP_A = (1 / 1 + 2 / 2 + 3 / 4) / 4
# C: n39.0 (1, hit), k02.9 (2), q64.4 (3, hit), a53.9 (4, hit); 3 gold codes.
AP_C = (1 / 1 + 2 / 3 + 3 / 4) / 3
# Over the run's cases that keep a code: A, C and D (AP 0); B (no run) and E (none valid) not.
EXPECTED_MAP = (AP_A + AP_C + 0) / 3
# Pairs by hand. Predicted: A 4, C 4, D 1 = 9. Gold: A 4, B 3, C 3 = 10.
# True positives: A 3 (z20.818, n44.8, r60.9), C 3, D 0 (m89.9 is B's) = 6.
EXPECTED_PRECISION, EXPECTED_RECALL = 6 / 9, 6 / 10
EXPECTED_F1 = 2 * (6 / 9) * (6 / 10) / (6 / 9 + 6 / 10)


def write_tsv(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as tsv_file:
        tsv_file.writelines("\t".join(row) + "\n" for row in rows)
    return str(path)


@pytest.fixture
def toy_files(tmp_path):
    return (
        write_tsv(tmp_path / "gs_D.tsv", GOLD_ROWS),
        write_tsv(tmp_path / "pred_D.tsv", RUN_ROWS),
        write_tsv(tmp_path / "codiesp-D_codes.tsv", VALID_ROWS),
    )


def trectools_map(gold_path, run_path, codes_path, work_dir) -> float:
    """MAP as the official script gets it: its intermediate qrels and run files, read back by
    trectools' TrecQrel and TrecRun, and TrecEval.get_map(trec_eval=False)."""
    try:
        version = importlib.metadata.version("trectools")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is None or tuple(int(part) for part in version.split(".")) >= (0, 0, 45):
        reason = (
            f"trectools {version} ranks equal scores by code; CodiEsp's 2020 scores used "
            "0.0.42, which keeps the run order"
            if version
            else "trectools is not installed"
        ) + ": pip install trectools==0.0.42 (the reference)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs it, and CI never skips the reference")
        pytest.skip(reason)
    trectools = pytest.importorskip("trectools", reason="trectools 0.0.42 is the MAP reference")

    def rows(path):
        with open(path, encoding="utf-8") as tsv_file:
            return [line.rstrip("\n").split("\t") for line in tsv_file]

    valid = {row[0].lower() for row in rows(codes_path)}
    qrels = dict.fromkeys((case_id, code.lower()) for case_id, code in rows(gold_path))
    qrels_path = os.path.join(work_dir, "intermediate_gs_file.txt")
    with open(qrels_path, "w") as qrels_file:
        qrels_file.writelines(f"{case_id} 0 {code} 1\n" for case_id, code in qrels)
    rank, kept = {}, {}
    for case_id, code in rows(run_path):
        rank[case_id] = rank.get(case_id, 0) + 1  # numbered before dropping, as the script does
        kept.setdefault((case_id, code.lower()), rank[case_id])
    trec_run_path = os.path.join(work_dir, "intermediate_predictions_file.txt")
    with open(trec_run_path, "w") as run_file:
        run_file.writelines(
            f"{case_id}\tQ0\t{code}\t{place}\t10.0\txx\n"
            for (case_id, code), place in kept.items()
            if code in valid
        )
    evaluation = trectools.TrecEval(
        trectools.TrecRun(trec_run_path), trectools.TrecQrel(qrels_path)
    )
    return evaluation.get_map(trec_eval=False)


def test_map_counts_by_hand(toy_files):
    gold_path, run_path, codes_path = toy_files
    run = codiesp_scoring.read_run(run_path)
    assert run[CASE_C] == ["n39.0", "k02.9", "q64.4", "a53.9"]
    score = codiesp_scoring.mean_average_precision(
        codiesp_scoring.read_gold(gold_path), run, codiesp_scoring.read_valid_codes(codes_path)
    )
    assert score == pytest.approx(EXPECTED_MAP, abs=1e-12)


def depth_files(tmp_path):
    """A case whose only gold code is its 1,001st valid prediction, and one with it first."""
    filler = [f"c{index:04d}" for index in range(1000)]
    return (
        write_tsv(tmp_path / "gold.tsv", [(CASE_A, "late"), (CASE_C, "early")]),
        write_tsv(
            tmp_path / "run.tsv",
            [(CASE_A, code) for code in [*filler, "late"]] + [(CASE_C, "early"), (CASE_C, "c0001")],
        ),
        write_tsv(tmp_path / "codes.tsv", [(code,) for code in [*filler, "late", "early"]]),
    )


def test_map_reads_at_most_depth_codes_per_case(tmp_path):
    gold_path, run_path, codes_path = depth_files(tmp_path)
    args = [
        codiesp_scoring.read_gold(gold_path),
        codiesp_scoring.read_run(run_path),
        codiesp_scoring.read_valid_codes(codes_path),
    ]
    assert codiesp_scoring.mean_average_precision(*args) == pytest.approx((0 + 1) / 2)
    assert codiesp_scoring.mean_average_precision(*args, depth=1001) == pytest.approx(
        (1 / 1001 + 1) / 2
    )


@pytest.mark.parametrize("files_of", ["toy", "depth"])
def test_map_matches_trectools_as_the_official_script_drives_it(files_of, toy_files, tmp_path):
    gold_path, run_path, codes_path = toy_files if files_of == "toy" else depth_files(tmp_path)
    expected = trectools_map(gold_path, run_path, codes_path, tmp_path)
    score = codiesp_scoring.mean_average_precision(
        codiesp_scoring.read_gold(gold_path),
        codiesp_scoring.read_run(run_path),
        codiesp_scoring.read_valid_codes(codes_path),
    )
    assert score == pytest.approx(expected, abs=1e-12)


def test_micro_scores_count_pairs_by_hand(toy_files):
    gold_path, run_path, codes_path = toy_files
    precision, recall, f1 = codiesp_scoring.micro_scores(
        codiesp_scoring.read_gold(gold_path),
        codiesp_scoring.read_run(run_path),
        codiesp_scoring.read_valid_codes(codes_path),
    )
    assert (precision, recall) == (pytest.approx(EXPECTED_PRECISION), pytest.approx(0.6))
    assert f1 == pytest.approx(EXPECTED_F1) and f1 == pytest.approx(12 / 19)


def test_no_valid_prediction_gives_nan_as_the_official_scripts_do():
    gold = {CASE_A: ["n44.8"]}
    run = {CASE_A: ["CODE1"]}
    assert math.isnan(codiesp_scoring.mean_average_precision(gold, run, {"n44.8"}))
    precision, recall, f1 = codiesp_scoring.micro_scores(gold, run, {"n44.8"})
    assert math.isnan(precision) and recall == 0 and math.isnan(f1)
    assert codiesp_scoring.micro_scores(gold, {CASE_A: ["e11.9"]}, {"e11.9"}) == (0, 0, 0)


def test_write_run_round_trips_lower_cased_in_rank_order(tmp_path):
    path = str(tmp_path / "run.tsv")
    codiesp_scoring.write_run(path, {CASE_A: ["N44.8", "r60.9"], CASE_B: [], CASE_C: ["A53.9"]})
    assert open(path).read() == f"{CASE_A}\tn44.8\n{CASE_A}\tr60.9\n{CASE_C}\ta53.9\n"
    assert codiesp_scoring.read_run(path) == {CASE_A: ["n44.8", "r60.9"], CASE_C: ["a53.9"]}
    with pytest.raises(ValueError, match="n44 .8"):
        codiesp_scoring.write_run(path, {CASE_A: ["r52", "n44 .8"]})
    assert codiesp_scoring.read_run(path) == {CASE_A: ["n44.8", "r60.9"], CASE_C: ["a53.9"]}
    assert os.listdir(tmp_path) == ["run.tsv"]


@pytest.mark.parametrize("bad_line", ["only-a-case-id", "case\tn44.8\textra", "case\t"])
def test_malformed_rows_name_the_file_and_line(tmp_path, bad_line):
    path = tmp_path / "devD.tsv"
    path.write_text(f"{CASE_A}\tn44.8\n\n{bad_line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"devD\.tsv:3: expected 'case_id<TAB>code'"):
        codiesp_scoring.read_gold(str(path))
    path.write_text("n44.8\tdescription\n\tr52\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"devD\.tsv:2: the first column"):
        codiesp_scoring.read_valid_codes(str(path))
