"""What this machine multiplies natively: the CPU's name and which 16-bit products are fast.

`compute_dtype="auto"` takes bfloat16 products (the encoder's and label
attention's) only where the hardware multiplies bfloat16 natively: a TPU,
GPUs of compute capability 8.0 or later, or a CPU with AVX512_BF16 or
AMX-BF16. Elsewhere bfloat16 is emulated and slower than float32 (measured on
an AVX-512 CPU without AVX512_BF16: 35.6 s against 10.9 s per step at 72,748
codes and 8,192 tokens). GPUs of compute capability 7.x (V100, T4) have
float16 tensor cores but no bfloat16: there auto takes float16, which
training pairs with loss scaling (`training.loss_scale`).
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


def oldest_gpu() -> tuple | None:
    """The lowest compute capability among the visible GPUs, e.g. (7, 5); None without GPUs."""
    gpus = tf.config.list_physical_devices("GPU")  # leaves the runtime uninitialised
    if not gpus:
        return None
    return min(
        tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))
        for gpu in gpus
    )


def fast_dtype(strategy: str) -> tuple:
    """`(dtype, device)`: the fastest products under `strategy` and the phrase naming why:
    bfloat16 (TPU, GPU >= 8.0, CPU with its instructions), float16 (GPU 7.x), else float32."""
    if strategy == "tpu":
        return "bfloat16", "TPU"
    gpu = oldest_gpu()
    if gpu is not None:
        device = f"GPU of compute capability {gpu[0]}.{gpu[1]}"
        return ("bfloat16" if gpu >= (8, 0) else "float16" if gpu >= (7, 0) else "float32"), device
    flags = cpu_bfloat16_flags()
    if flags:
        return "bfloat16", f"CPU with {' and '.join(flag.upper() for flag in flags)}"
    return "float32", cpu_name()


def compute_dtype(requested: str, strategy: str) -> tuple:
    """`(dtype, reason)`: `requested`, or for "auto" the fastest dtype here (`fast_dtype`)."""
    if requested not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype={requested!r}: choose from {COMPUTE_DTYPES}")
    if requested != "auto":
        return requested, "as requested"
    dtype, device = fast_dtype(strategy)
    if dtype == "float32":
        return "float32", f"auto: no fast 16-bit products on this machine ({device})"
    return dtype, f"auto: {dtype} products are native on this {device}"


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
