"""The benchmark scripts run and print their figures (their numbers are reported, not tested)."""

import json
import os
import sys

import pytest

from tests.entry_points import run_main

pytestmark = pytest.mark.slow  # runs the benchmark scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script: str, *arguments, env=None):
    """`python benchmarks/NAME.py *arguments`, in this process (tests/entry_points.py)."""
    name = os.path.splitext(os.path.basename(script))[0]
    return run_main(f"benchmarks.{name}", *arguments, env=env)


def test_train_step_benchmark_reports_one_configuration(tmp_path):
    result = run_script(
        "benchmarks/train_step.py",
        "--num_labels=50",
        "--seq_len=1024",
        "--batch_size=2",
        "--compute_dtype=bfloat16",
        "--steps=1",
        "--warmup=1",
        "--json",
        env={"LONGBERT_TF_CACHE": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["tokens_per_second"] > 0 and figures["peak_memory_gb"] > 0.1
    assert figures["label_attention"] == "chunked" and figures["batch_size"] == 2


def test_train_step_times_any_encoder_at_its_segment_length(tmp_path):
    result = run_script(
        "benchmarks/train_step.py",
        "--encoder=random:L-1_H-32_A-2",
        "--segment_length=128",
        "--num_labels=20",
        "--seq_len=256",
        "--steps=1",
        "--warmup=0",
        "--json",
        "--compute_dtype=float32",
        env={"LONGBERT_TF_CACHE": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert (figures["encoder"], figures["segment_length"]) == ("random:L-1_H-32_A-2", 128)
    assert figures["gflops_per_second"] > 0  # the architecture is known: FLOPs are counted
    assert list((tmp_path / "benchmark").iterdir())[0].name == "random-L-1_H-32_A-2"


def test_pipeline_benchmark_reports_throughput_and_padding(tiny_dataset_dir, tiny_encoder_dir):
    result = run_script(
        "benchmarks/pipeline.py",
        f"--dataset_dir={tiny_dataset_dir}",
        f"--encoder={tiny_encoder_dir}",
        "--seq_len=256",
        "--segment_length=128",
        "--batches=20",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note tokens/s" in result.stdout and "padding waste, training batches" in result.stdout


def test_figures_show_the_numbers_of_their_results_files(tmp_path, tiny_dataset_dir):
    from longbert_tf.framework import tf

    written = {512: [(100, 0.25), (200, 0.5)], 1024: [(100, 0.375)]}
    for seq_len, points in written.items():
        with tf.summary.create_file_writer(
            str(tmp_path / "table" / str(seq_len) / "dev")
        ).as_default():
            for step, f1 in points:
                tf.summary.scalar("micro_f1", f1, step=step)
    (tmp_path / "table" / "caml" / "dev").mkdir(parents=True)  # not a LongBERT row: left out
    cell = dict(
        batch_size=1,
        status="ok",
        label_attention="chunked",
        compute_dtype="float32",
        step_seconds=0.5,
        peak_memory_gb=1.0,
        cpu="a CPU",
        seq_len=512,
    )
    cells = [
        dict(cell, num_labels=50),
        dict(cell, num_labels=8921, step_seconds=2.0),
        dict(cell, num_labels=50, batch_size=2),  # batch 2: not drawn
        dict(cell, status="failed: killed"),
    ]
    sweep = tmp_path / "sweep.jsonl"
    sweep.write_text("".join(json.dumps(line) + "\n" for line in cells))
    out = tmp_path / "figures"
    result = run_script(
        "benchmarks/figures.py",
        f"--reproduce_dir={tmp_path / 'table'}",
        f"--sweep_results={sweep}",
        f"--dataset_dir={tiny_dataset_dir}",
        f"--out_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    curves = json.loads((out / "dev_f1_by_seq_len.json").read_text())
    assert curves == {
        str(seq_len): [list(p) for p in points] for seq_len, points in written.items()
    }
    shown = json.loads((out / "step_time_sweep.json").read_text())
    assert [(c["num_labels"], c["step_seconds"]) for c in shown] == [(50, 0.5), (8921, 2.0)]
    lengths = json.loads((out / "token_lengths.json").read_text())
    assert lengths["notes"] == 40  # 24 + 8 + 8 tiny synthetic notes
    assert all(
        (out / name).stat().st_size > 1000
        for name in ("token_lengths.png", "dev_f1_by_seq_len.png", "step_time_sweep.png")
    )


def test_the_sweep_records_every_cell_it_prints(tmp_path):
    results = tmp_path / "sweep.jsonl"
    result = run_script(
        "benchmarks/train_step.py",
        "--sweep",
        "--sweep_labels=50",
        "--sweep_seq_lens=256",
        "--sweep_batches=1",
        "--steps=1",
        "--warmup=0",
        f"--results_file={results}",
        "--encoder=random:L-1_H-32_A-2",
        "--segment_length=128",
        env={"LONGBERT_TF_CACHE": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cells = [json.loads(line) for line in results.read_text().splitlines()]
    variants = [(cell["label_attention"], cell["requested_dtype"]) for cell in cells]
    assert variants == [(a, d) for a in ("dense", "chunked") for d in ("float32", "bfloat16")]
    for cell in cells:
        assert cell["status"] == "ok" and cell["step_seconds"] > 0 and cell["num_labels"] == 50
        assert f"| 50 | 256 | 1 | {cell['label_attention']} | {cell['requested_dtype']} |" in (
            result.stdout
        )


def test_the_torch_side_by_side_times_this_package_and_names_why_the_peer_failed(tmp_path):
    """With a peer environment that lacks torch (this suite never installs it), the package's
    cases are measured and each peer case says why it could not run."""
    venv_dir = tmp_path / "peer"
    (venv_dir / "bin").mkdir(parents=True)
    (venv_dir / "bin" / "python").symlink_to(sys.executable)
    (venv_dir / "longbert_requirements.txt").write_text("torch transformers")
    results_file = tmp_path / "results.jsonl"
    result = run_script(
        "benchmarks/torch_peer.py",
        f"--venv_dir={venv_dir}",
        "--num_labels=20",
        "--seq_len=512",
        "--steps=1",
        "--warmup=0",
        f"--results_file={results_file}",
        env={"LONGBERT_TF_CACHE": str(tmp_path), "PYTHONNOUSERSITE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| longbert-tf, auto",
        "| longbert-tf, float32",
        "| PyTorch + transformers, float32",
        "| PyTorch + transformers, bfloat16 autocast",
    ]
    assert all(" s | " in row and " GB |" in row for row in rows[:2])
    assert all("failed: ModuleNotFoundError: No module named 'torch'" in row for row in rows[2:])
    assert "autocast:" not in result.stdout  # no ratio without both cases
    records = [json.loads(line) for line in results_file.read_text().splitlines()]
    assert [record["case"] for record in records] == ["longbert-tf, auto", "longbert-tf, float32"]


def test_the_label_attention_profile_times_the_pass_and_its_products():
    result = run_script(
        "benchmarks/label_attention_profile.py",
        "--num_labels=300",
        "--seq_len=512",
        "--hidden_size=32",
        "--chunk_size=128",
        "--trials=1",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert [row["dtype"] for row in rows] == ["float32", "bfloat16"]
    for row in rows:
        assert row["whole_seconds"] > 0 and row["products_seconds"] > 0
        assert row["products_share"] == pytest.approx(
            row["products_seconds"] / row["whole_seconds"]
        )
        # 3 products of [2 x 128 codes, 32] by [512 tokens, 32] per chunk; 3 chunks (300 padded)
        flops = row["products_gflops_per_second"] * 1e9 * row["products_seconds"]
        assert flops == pytest.approx(3 * 2 * (2 * 128 * 3) * 512 * 32, rel=1e-6)


def test_review_latency_times_the_page_and_the_api(review_export, tmp_path):
    notes_dir = tmp_path / "notes"
    notes_dir.mkdir()
    (notes_dir / "a.txt").write_text("Ongoing syncope. Acute esophagitis noted. " * 40)
    result = run_script(
        "benchmarks/review_latency.py",
        f"--export_dir={review_export[0]}",
        f"--notes_dir={notes_dir}",
        "--tokens=200",
        "--notes=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "notes: 2 of 200 tokens" in result.stdout
    page = float(result.stdout.split("paste to codes shown: median ")[1].split(" s")[0])
    assert page > 0


def test_review_saves_times_a_save_at_each_file_size():
    result = run_script("benchmarks/review_saves.py", "--sizes=0,300", "--saves=3")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("cpu: ")
    assert lines[1].lstrip().startswith("0 records") and lines[2].lstrip().startswith("300 records")
    assert all("save median" in line for line in lines[1:])
