"""experiments.reproduce: a complete table on tiny synthetic data, finished rows reused, and the
published rows (the LongBERT paper's Tables 2-4, CAML's paper) printed beneath ours."""

import json
import os
import re

import pytest

from longbert_tf.evaluation import report
from tests.entry_points import run_main

pytestmark = pytest.mark.slow  # trains

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = os.path.join(ROOT, "experiments", "published_results.json")
PAPER_TABLES = os.path.join(ROOT, "..", "shared", "paper_tables.md")
PAPER_TABLE = {"mimic3_full": 2, "mimic4_dx": 3, "mimic3_50": 4}


def test_reproduce_writes_the_table_and_skips_finished_rows(tiny_data_dir, tmp_path):
    command = [
        "experiments.reproduce",
        "--dataset=synthetic",
        f"--data_dir={tiny_data_dir}",
        f"--out_dir={tmp_path}",
        "--rows=caml,512,1024",
        "--encoder=random:L-1_H-16_A-2",
        "--train_steps=2",
        "--eval_every=2",
        "--max_notes=6",
        "--compute_dtype=float32",
    ]
    first = run_main(*command)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[2].startswith("| Model | Seq. length | Micro F1 |")
    assert [line.split("|")[1].strip() for line in lines[4:]] == [
        "CAML",
        "BERT-baseline",
        "LongBERT",
    ]
    assert [line.split("|")[2].strip() for line in lines[4:]] == ["2500", "512", "1024"]
    table = json.loads((tmp_path / "table.json").read_text())
    assert [row["test"]["num_notes"] for row in table["rows"]] == [6, 6, 6]
    written = {
        row: os.path.getmtime(tmp_path / row / "metrics.json") for row in ("caml", "512", "1024")
    }

    second = run_main(*command)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("is finished") == 3
    assert (tmp_path / "table.md").read_text().splitlines() == lines
    for row, mtime in written.items():
        assert os.path.getmtime(tmp_path / row / "metrics.json") == mtime


def paper_rows(dataset: str) -> list:
    """The rows of `published_results.json` taken from the LongBERT paper's table of the dataset."""
    with open(PUBLISHED) as published_file:
        rows = json.load(published_file)[dataset]
    return [
        row
        for row in rows
        if row["source"].startswith(f"Afkanpour et al. 2022, Table {PAPER_TABLE[dataset]}")
    ]


def test_published_results_hold_the_papers_tables():
    for dataset in PAPER_TABLE:
        rows = paper_rows(dataset)
        assert [
            (row["model"], row["input_length"])
            for row in rows
            if row["model"] != "BioBERT full text"
        ] == [
            ("CAML", 2500),
            ("BERT-baseline", 512),
            ("LongBERT", 1024),
            ("LongBERT", 2048),
            ("LongBERT", 4096),
            ("LongBERT", 8192),
        ]
        for row in rows:
            assert set(row) - {"model", "input_length", "source"} <= set(report.METRICS)
    by_key = {
        (dataset, row["model"], row["input_length"]): row
        for dataset in PAPER_TABLE
        for row in paper_rows(dataset)
    }
    assert by_key["mimic3_full", "LongBERT", 8192]["micro_f1"] == 0.5680
    assert by_key["mimic3_full", "LongBERT", 8192]["micro_precision"] == 0.6148
    assert by_key["mimic3_full", "BERT-baseline", 512]["micro_roc_auc"] == 0.9745
    assert by_key["mimic3_full", "CAML", 2500]["micro_pr_auc"] == 0.5361
    assert by_key["mimic4_dx", "LongBERT", 8192]["micro_f1"] == 0.5703
    assert by_key["mimic4_dx", "LongBERT", 1024]["micro_recall"] == 0.4205
    assert by_key["mimic3_50", "LongBERT", 8192]["micro_f1"] == 0.6522
    assert by_key["mimic3_50", "LongBERT", 4096]["micro_recall"] == 0.6609
    biobert = by_key["mimic3_full", "BioBERT full text", "entire note"]
    assert {key: biobert.get(key) for key in report.METRICS} == {
        "micro_f1": 0.470,
        "micro_precision": None,
        "micro_recall": None,
        "micro_pr_auc": None,
        "micro_roc_auc": 0.974,
        "map": None,  # the paper reports no MAP
    }
    with open(PUBLISHED) as published_file:
        published = json.load(published_file)
    mullenbach = [row for row in published["mimic3_full"] if row["source"].startswith("Mullenbach")]
    assert [(row["model"], row["micro_f1"]) for row in mullenbach] == [("CAML", 0.539)]


@pytest.mark.skipif(not os.path.exists(PAPER_TABLES), reason="../shared/paper_tables.md absent")
def test_published_results_match_paper_tables_md():
    with open(PAPER_TABLES) as tables_file:
        sections = re.split(r"^## Table (\d)", tables_file.read(), flags=re.M)[1:]
    tables = dict(zip(sections[::2], sections[1::2]))
    for dataset, number in PAPER_TABLE.items():
        expected = []
        for line in tables[str(number)].splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) != 7 or cells[0] == "Model" or cells[0].startswith("---"):
                continue
            metrics = {
                key: float(cell)
                for key, cell in zip(report.METRICS, cells[2:])
                if re.fullmatch(r"[0-9.]+", cell)
            }
            expected.append((cells[1].removesuffix(" words"), metrics))
        got = [
            (str(row["input_length"]), {key: row[key] for key in report.METRICS if key in row})
            for row in paper_rows(dataset)
        ]
        assert got == expected, dataset


def test_report_rows_render_missing_metrics_and_lengths():
    assert report.row("BioBERT", "entire note", {"micro_f1": 0.47, "micro_roc_auc": 0.974}) == (
        "| BioBERT | entire note | 0.470 | - | - | - | 0.974 | - |"
    )
    assert report.row("X", None, {}) == "| X | - | - | - | - | - | - | - |"


def test_reproduce_prints_the_papers_rows(tmp_path):
    for dataset, number in PAPER_TABLE.items():
        out_dir = tmp_path / dataset
        result = run_main(
            "experiments.reproduce", f"--dataset={dataset}", "--rows=", f"--out_dir={out_dir}"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        lines = (out_dir / "table.md").read_text().splitlines()
        paper = f"(published: Afkanpour et al. 2022, Table {number})"
        assert [line.split("|")[2].strip() for line in lines if f"LongBERT {paper}" in line] == [
            "1024",
            "2048",
            "4096",
            "8192",
        ]
        assert f"| BERT-baseline {paper} | 512 |" in result.stdout
        assert f"| CAML {paper} | 2500 |" in result.stdout
        table = json.loads((out_dir / "table.json").read_text())
        assert table["rows"] == []
        assert len(table["published"]) == len(lines) - 4
    assert (
        "| BioBERT full text (published: Afkanpour et al. 2022, Table 2 (from Ji et al. 2021)) "
        "| entire note | 0.470 | - | - | - | 0.974 |"
    ) in (tmp_path / "mimic3_full" / "table.md").read_text()
    assert "| LongBERT (published: Afkanpour et al. 2022, Table 2) | 8192 | 0.568 | 0.615 |" in (
        (tmp_path / "mimic3_full" / "table.md").read_text()
    )
    assert "| CAML (published: Mullenbach et al. 2018, Table 5) | 2500 | 0.614 | - |" in (
        (tmp_path / "mimic3_50" / "table.md").read_text()
    )
