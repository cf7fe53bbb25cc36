"""The benchmark scripts run and print their figures (their numbers are reported, not tested)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts the benchmark scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*arguments, env=None):
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": ROOT, **(env or {})},
    )


def test_train_step_benchmark_reports_one_configuration(tmp_path):
    result = run_script(
        "benchmarks/train_step.py", "--num_labels=50", "--seq_len=1024", "--batch_size=2",
        "--compute_dtype=bfloat16", "--steps=1", "--warmup=1", "--json",
        env={"LONGBERT_TF_CACHE": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["tokens_per_second"] > 0 and figures["peak_memory_gb"] > 0.1
    assert figures["label_attention"] == "chunked" and figures["batch_size"] == 2


def test_pipeline_benchmark_reports_throughput_and_padding(tiny_dataset_dir, tiny_encoder_dir):
    result = run_script(
        "benchmarks/pipeline.py", f"--dataset_dir={tiny_dataset_dir}",
        f"--encoder={tiny_encoder_dir}", "--seq_len=256", "--segment_length=128", "--batches=20",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note tokens/s" in result.stdout and "padding waste, training batches" in result.stdout
