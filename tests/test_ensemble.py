"""`benchmarks/ensemble.py`: a member alone reproduces its run's own evaluation, an ensemble of
one run with itself is that run, and runs on other notes are refused."""

import json
import os

import pytest

from tests.entry_points import run_main
from tests.test_run import TINY_FLAGS, run_experiment

pytestmark = pytest.mark.slow  # trains three tiny runs


@pytest.fixture(scope="module")
def tiny_runs(tiny_data_dir, tmp_path_factory):
    """Two runs on the same notes that differ in length and seed, and one on fewer notes."""
    root = tmp_path_factory.mktemp("ensemble")
    variants = {"long": [], "short": ["--seq_len=128", "--seed=1"], "fewer": ["--max_notes=6"]}
    for name, flags in variants.items():
        result = run_experiment(
            f"--data_dir={tiny_data_dir}", f"--model_dir={root / name}", *TINY_FLAGS, *flags
        )
        assert result.returncode == 0, result.stderr[-3000:]
    return {name: str(root / name) for name in variants}


def ensemble(*model_dirs):
    return run_main("benchmarks.ensemble", *(f"--model_dir={d}" for d in model_dirs))


def row(results: dict) -> str:
    return ", ".join(
        f"{split} micro F1 {results[split]['micro_f1']:.4f} MAP {results[split]['map']:.4f}"
        for split in ("dev", "test")
    )


def test_members_reproduce_their_runs_and_a_run_with_itself_is_the_run(tiny_runs):
    long, short = tiny_runs["long"], tiny_runs["short"]
    result = ensemble(long, short, long)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 7  # 3 alone, 3 pairs, 1 triple
    for model_dir in (long, short):
        with open(os.path.join(model_dir, "metrics.json")) as metrics_file:
            assert f"{model_dir}: {row(json.load(metrics_file))}" in lines
    alone = lines[0].split(": ", 1)[1]
    assert f"{long} + {long}: {alone}" in lines


def test_runs_on_other_notes_are_refused(tiny_runs):
    result = ensemble(tiny_runs["long"], tiny_runs["fewer"])
    assert result.returncode != 0
    assert f"{tiny_runs['fewer']} was trained or scored on other notes" in result.stderr
