"""What this machine multiplies natively: the CPU's name and whether bfloat16 products are fast.

`compute_dtype="auto"` takes bfloat16 products (the encoder's and label
attention's) only where the hardware multiplies bfloat16 natively: a TPU,
GPUs of compute capability 8.0 or later, or a CPU with AVX512_BF16 or
AMX-BF16. Elsewhere bfloat16 is emulated and slower than float32 (measured on
an AVX-512 CPU without AVX512_BF16: 35.6 s against 10.9 s per step at 72,748
codes and 8,192 tokens).
"""

import os
import re
import time

from longbert_tf.configs import COMPUTE_DTYPES
from longbert_tf.framework import tf

BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = "/proc/cpuinfo"


def _cpuinfo() -> str:
    try:
        with open(CPUINFO) as cpuinfo:
            return cpuinfo.read()
    except OSError:  # not Linux: nothing known
        return ""


def cpu_name() -> str:
    """The CPU's model name and core count, e.g. "AMD EPYC, 2 cores"."""
    model = re.search(r"model name\s*:\s*(.*)", _cpuinfo())
    return f"{model.group(1).strip() if model else 'unknown CPU'}, {os.cpu_count()} cores"


def cpu_bfloat16_flags() -> list:
    """The CPU's bfloat16 instruction sets among `BFLOAT16_CPU_FLAGS` (empty: emulated)."""
    flags = re.search(r"^flags\s*:\s*(.*)$", _cpuinfo(), flags=re.MULTILINE)
    present = set(flags.group(1).split()) if flags else set()
    return [flag for flag in BFLOAT16_CPU_FLAGS if flag in present]


def cpu_summary() -> str:
    """What a benchmark prints about the CPU: its name and its bfloat16 instructions."""
    instructions = ", ".join(flag.upper() for flag in cpu_bfloat16_flags()) or "none (emulated)"
    return f"{cpu_name()}; bfloat16 instructions: {instructions}"


def native_bfloat16(strategy: str) -> str | None:
    """Where bfloat16 products would run natively under `strategy` (a phrase), or None."""
    if strategy == "tpu":
        return "TPU"
    gpus = tf.config.list_physical_devices("GPU")  # leaves the runtime uninitialised
    if gpus:
        capabilities = [
            tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            for gpu in gpus
        ]
        oldest = min(capabilities)
        return f"GPU of compute capability {oldest[0]}.{oldest[1]}" if oldest >= (8, 0) else None
    flags = cpu_bfloat16_flags()
    return f"CPU with {' and '.join(flag.upper() for flag in flags)}" if flags else None


def compute_dtype(requested: str, strategy: str) -> tuple:
    """`(dtype, reason)`: `requested`, or for "auto" bfloat16 where it is native, else float32."""
    if requested not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype={requested!r}: choose from {COMPUTE_DTYPES}")
    if requested != "auto":
        return requested, "as requested"
    native = native_bfloat16(strategy)
    if native:
        return "bfloat16", f"auto: bfloat16 is native on this {native}"
    return "float32", f"auto: no native bfloat16 on this machine ({cpu_name()})"


def matmul_peak(dtype: str, sizes=(1024, 2048, 4096), trials: int = 5) -> float:
    """This machine's matrix-product peak in `dtype` ("float32", "bfloat16"), GFLOP/s: the best
    of `trials` timings at each of `sizes` (square products, each timed over at least 0.2 s after
    one warm-up). The best of many, so a timing slowed by another process does not lower it."""
    product = tf.function(tf.matmul, reduce_retracing=True)
    best = 0.0
    for size in sizes:
        a = tf.cast(tf.random.stateless_normal([size, size], seed=[0, size]), dtype)
        product(a, a).numpy()
        for _ in range(trials):
            started, repeats = time.perf_counter(), 0
            while time.perf_counter() - started < 0.2 or repeats == 0:
                product(a, a).numpy()
                repeats += 1
            best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9)
    return best
