"""experiments.reproduce on a tiny synthetic dataset: a complete table, and finished rows reused."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reproduce_writes_the_table_and_skips_finished_rows(tiny_data_dir, tmp_path):
    command = [
        sys.executable, "-m", "experiments.reproduce", "--dataset=synthetic",
        f"--data_dir={tiny_data_dir}", f"--out_dir={tmp_path}", "--rows=caml,512,1024",
        "--encoder=random:L-1_H-16_A-2", "--train_steps=2", "--eval_every=2", "--max_notes=6",
    ]  # fmt: skip
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
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

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("is finished") == 3
    assert (tmp_path / "table.md").read_text().splitlines() == lines
    for row, mtime in written.items():
        assert os.path.getmtime(tmp_path / row / "metrics.json") == mtime
