"""LongBERT's training step here and in PyTorch + transformers, side by side in one run.

    python benchmarks/torch_peer.py                      # 72,748 codes x 8,192 tokens, batch 1
    python benchmarks/torch_peer.py --requirements="torch==2.13.0+cpu transformers==5.18.0"

Installs the peer (`--requirements`, from the package index) into its own
virtual environment, `--venv_dir`, once; torch and transformers never become
dependencies of longbert-tf. Then times, each in a fresh process so its peak
memory is its own: this package's step (`train_step.py`) with the default
dtype (`auto`) and in float32, and the peer (`torch_peer_step.py`: the same
model written as PLM-ICD-style code writes it, dense label attention) in
float32 and with bfloat16 autocast. Prints the CPU, the matmul peaks, one
line per case (step time, GFLOP/s and share of the peak of its dtype, peak
memory) and the ratio of this package's default step to the peer's autocast
step.
"""

import json
import os
import subprocess
import sys
import venv

from absl import app, flags

from longbert_tf import hardware
from longbert_tf.modeling import encoder_specs

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_labels", 72748, "Codes.")
flags.DEFINE_integer("seq_len", 8192, "Tokens per note.")
flags.DEFINE_integer("batch_size", 1, "Notes per step.")
flags.DEFINE_integer("steps", 3, "Timed steps.")
flags.DEFINE_integer("warmup", 1, "Untimed steps first.")
flags.DEFINE_string(
    "venv_dir", None, "The peer's virtual environment (default: under $LONGBERT_TF_CACHE)."
)
flags.DEFINE_string(
    "requirements",
    "torch transformers",
    "What pip installs into the peer's environment (e.g. a CPU-only torch wheel).",
)
flags.DEFINE_string("results_file", None, "Also append every case as a JSON line here.")

HERE = os.path.dirname(os.path.abspath(__file__))


def peer_python() -> str:
    """The Python of the peer's environment, created and filled with `--requirements` when it
    does not hold them yet (a marker file names what was installed)."""
    venv_dir = FLAGS.venv_dir or os.path.join(encoder_specs.cache_root(), "torch_peer_venv")
    python = os.path.join(venv_dir, "bin", "python")
    marker = os.path.join(venv_dir, "longbert_requirements.txt")
    if os.path.exists(marker):
        with open(marker) as installed:
            if installed.read() == FLAGS.requirements:
                return python
    print(f"installing {FLAGS.requirements} into {venv_dir}", flush=True)
    venv.create(venv_dir, with_pip=True, clear=True)
    subprocess.run([python, "-m", "pip", "install", *FLAGS.requirements.split()], check=True)
    with open(marker, "w") as installed:
        installed.write(FLAGS.requirements)
    return python


def measure(command: list) -> dict:
    """The JSON line a benchmark process prints last, or the reason it failed."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return dict(failed=reason)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    python = peer_python()
    shape = [
        f"--num_labels={FLAGS.num_labels}",
        f"--seq_len={FLAGS.seq_len}",
        f"--batch_size={FLAGS.batch_size}",
        f"--steps={FLAGS.steps}",
        f"--warmup={FLAGS.warmup}",
    ]
    ours = [sys.executable, os.path.join(HERE, "train_step.py"), "--json", *shape]
    peer = [python, os.path.join(HERE, "torch_peer_step.py"), *shape]
    print(f"CPU: {hardware.cpu_summary()}")
    peaks = {dtype: hardware.matmul_peak(dtype) for dtype in ("float32", "bfloat16")}
    print(f"matmul peak: {peaks['float32']:.0f} GFLOP/s float32, {peaks['bfloat16']:.0f} bfloat16")
    print(f"{FLAGS.num_labels:,} codes x {FLAGS.seq_len:,} tokens, batch {FLAGS.batch_size}")
    cases = [
        ("longbert-tf, auto", ours, None),
        ("longbert-tf, float32", ours + ["--compute_dtype=float32"], "float32"),
        ("PyTorch + transformers, float32", peer + ["--autocast=none"], "float32"),
        ("PyTorch + transformers, bfloat16 autocast", peer + ["--autocast=bfloat16"], "bfloat16"),
    ]
    print("| case | step time | GFLOP/s (% of the dtype's peak) | peak memory |")
    print("|---|---|---|---|")
    results, flops = {}, None
    for name, command, dtype in cases:
        result = measure(command)
        results[name] = result
        if "failed" in result:
            print(f"| {name} | failed: {result['failed']} | | |", flush=True)
            continue
        if flops is None and result.get("gflops_per_second"):
            flops = result["gflops_per_second"] * 1e9 * result["step_seconds"]
        dtype = dtype or result["compute_dtype"]
        achieved = "n/a"
        if flops:
            gflops = flops / result["step_seconds"] / 1e9
            achieved = f"{gflops:.0f} ({100 * gflops / peaks[dtype]:.0f}%)"
        print(
            f"| {name} | {result['step_seconds']:.2f} s | {achieved} | "
            f"{result['peak_memory_gb']:.2f} GB |",
            flush=True,
        )
        if FLAGS.results_file:
            with open(FLAGS.results_file, "a") as out:
                record = dict(result, case=name, cpu=hardware.cpu_summary(), peaks=peaks)
                out.write(json.dumps(record) + "\n")
    ours_auto = results["longbert-tf, auto"]
    peer_bf16 = results["PyTorch + transformers, bfloat16 autocast"]
    if "failed" not in ours_auto and "failed" not in peer_bf16:
        ratio = ours_auto["step_seconds"] / peer_bf16["step_seconds"]
        print(f"longbert-tf auto / PyTorch bfloat16 autocast: {ratio:.2f}x")


if __name__ == "__main__":
    app.run(main)
