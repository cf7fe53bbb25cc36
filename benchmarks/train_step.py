"""Training-step time, throughput and peak memory of LongBERT on synthetic inputs.

    python benchmarks/train_step.py --num_labels=72748 --seq_len=8192 --batch_size=1 \\
        --label_attention=chunked --compute_dtype=bfloat16
    python benchmarks/train_step.py --sweep   # every configuration, each in its own process

The model is the paper's by default (L-2/H-256/A-4 encoder, randomly initialised,
512-token segments, label attention over all tokens, Adam); `--encoder` and
`--segment_length` time any encoder (e.g. `--encoder=minilm --segment_length=128`;
achieved GFLOP/s need the architecture, which a TF-Hub handle does not say). The
batch is random token ids with
every position real and about 15 codes per note. One run prints `step time`
(mean of `--steps` timed steps after `--warmup`), note tokens per second, the
achieved GFLOP/s (model FLOPs of forward and backward) and the process's peak
resident memory. `--sweep` measures the matmul peak of this machine once, then
runs every configuration of `--sweep_labels` x `--sweep_seq_lens` x
`--sweep_batches` for dense and chunked label attention in float32 and
bfloat16, each in a fresh process (so peak memory is that configuration's),
and prints them side by side. Configurations whose
dense label attention would need more than `--memory_limit_gb` are skipped.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

from longbert_tf import configs, hardware
from longbert_tf.framework import keras, tf
from longbert_tf.modeling import bert, encoder_specs, encoders, longbert
from longbert_tf.training import optimization
from longbert_tf.training.loss_scale import loss_scale_for
from longbert_tf.training.trainer import Trainer

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_labels", 8921, "Codes.")
flags.DEFINE_string(
    "encoder",
    None,
    "Any experiments.run --encoder spec (random:L-6_H-384_A-12, minilm, a folder, a TF-Hub "
    "handle); default: the paper's L-2/H-256/A-4, randomly initialised.",
)
flags.DEFINE_integer("segment_length", 512, "Positions per segment, [CLS] and [SEP] included.")
flags.DEFINE_integer("seq_len", 4096, "Tokens per note (a multiple of --segment_length).")
flags.DEFINE_integer("batch_size", 1, "Notes per step.")
flags.DEFINE_enum("label_attention", "chunked", sorted(configs.LABEL_ATTENTION_CHUNK_SIZES), "")
flags.DEFINE_enum(
    "compute_dtype",
    "auto",
    list(configs.COMPUTE_DTYPES),
    "The encoder's and label attention's products; auto as in experiments.run.",
)
flags.DEFINE_integer(
    "chunk_size", None, "Codes per chunk of chunked label attention (default 1,024)."
)
flags.DEFINE_integer(
    "trained_codes",
    None,
    "Description-conditioned label attention in which only this many codes have training notes "
    "(the others are scored, not trained); default: the paper's layer, every code trained.",
)
flags.DEFINE_integer("steps", 3, "Timed steps.")
flags.DEFINE_integer("warmup", 1, "Untimed steps first (tracing, allocation).")
flags.DEFINE_bool("xla", False, "Compile the training step with XLA.")
flags.DEFINE_bool("json", False, "Print one JSON line instead of text.")
flags.DEFINE_bool("sweep", False, "Run every configuration, each in its own process.")
flags.DEFINE_string(
    "results_file",
    None,
    "With --sweep: also append every cell as a JSON line here (what benchmarks/figures.py draws).",
)
flags.DEFINE_list("sweep_labels", ["50", "8921", "72748"], "Codes of the sweep.")
flags.DEFINE_list("sweep_seq_lens", ["512", "2048", "8192"], "Tokens of the sweep.")
flags.DEFINE_list("sweep_batches", ["1", "2", "4"], "Batches of the sweep.")
flags.DEFINE_float(
    "memory_limit_gb", 22.0, "Skip dense configurations estimated to need more memory than this."
)

PAPER_ARCH = bert.BertArchitecture()
CODES_PER_NOTE = 15


def random_encoder(arch: bert.BertArchitecture) -> str:
    """A randomly initialised encoder of `arch` in the TF-Hub format (a made-up vocabulary),
    built once into the cache."""
    path = os.path.join(encoder_specs.cache_root(), "benchmark", f"random-{arch.name}")
    if not os.path.exists(path):
        tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tokens += [f"w{i}" for i in range(arch.vocab_size - len(tokens))]
        encoder_specs.build_random_encoder(arch, tokens, path, seed=0)
    return path


def benchmark_encoder() -> str:
    """The handle of `--encoder`: random specs are built on a made-up vocabulary (no notes)."""
    spec = FLAGS.encoder or f"{encoder_specs.RANDOM_PREFIX}{PAPER_ARCH.name}"
    if spec.startswith(encoder_specs.RANDOM_PREFIX):
        return random_encoder(bert.BertArchitecture.from_name(spec))
    return encoder_specs.resolve(spec, dataset_dir=None)


def model_flops(arch, num_labels: int, seq_len: int, batch_size: int) -> float | None:
    """FLOPs of one training step (forward + backward = 3 x forward); None when the encoder's
    architecture is unknown (a TF-Hub handle)."""
    if arch is None:
        return None
    hidden, inner, segment = arch.hidden_size, arch.intermediate_size, FLAGS.segment_length
    tokens = batch_size * seq_len
    per_token_layer = 2 * (4 * hidden * hidden + 2 * hidden * inner) + 4 * segment * hidden
    encoder = tokens * arch.num_layers * per_token_layer
    label_attention = 2 * 2 * tokens * num_labels * hidden  # scores and context products
    return 3.0 * (encoder + label_attention)


def random_batch(vocab_size: int) -> tuple:
    """One batch of full notes of random tokens, `CODES_PER_NOTE` random codes each."""
    rng = np.random.default_rng(0)
    shape = [FLAGS.batch_size, FLAGS.seq_len // FLAGS.segment_length, FLAGS.segment_length]
    features = dict(
        input_word_ids=tf.constant(rng.integers(5, vocab_size, shape), tf.int32),
        input_mask=tf.ones(shape, tf.int32),
    )
    labels = np.zeros([FLAGS.batch_size, FLAGS.num_labels], np.float32)
    for row in labels:
        row[rng.choice(FLAGS.num_labels, min(CODES_PER_NOTE, FLAGS.num_labels), replace=False)] = 1
    return features, tf.constant(labels)


def run_one() -> dict:
    """Times the training step of the configuration in FLAGS."""
    keras.utils.set_random_seed(0)
    compute_dtype, _ = hardware.compute_dtype(FLAGS.compute_dtype, "auto")
    handle = encoder_specs.with_compute_dtype(benchmark_encoder(), compute_dtype)
    encoder = encoders.load(handle, FLAGS.segment_length)
    chunk_size = configs.LABEL_ATTENTION_CHUNK_SIZES[FLAGS.label_attention]
    if chunk_size and FLAGS.chunk_size:
        chunk_size = FLAGS.chunk_size
    described = FLAGS.trained_codes is not None
    model = longbert.LongBERT(
        encoder.layer,
        FLAGS.num_labels,
        label_attention_args=dict(
            chunk_size=chunk_size, matmul_dtype=compute_dtype, described=described
        ),
    )
    features, labels = random_batch(len(encoder.vocab.tokens))
    model(features)  # creates the weights
    if described:
        rng = np.random.default_rng(0)
        descriptions = rng.normal(size=model.label_attention.label_queries.shape)
        descriptions /= np.linalg.norm(descriptions, axis=1, keepdims=True)
        model.label_attention.set_descriptions(
            descriptions, np.arange(FLAGS.num_labels) < FLAGS.trained_codes
        )
    batches = iter(tf.data.Dataset.from_tensors((features, labels)).repeat())
    step = Trainer(
        model,
        [optimization.OptimizerGroup(keras.optimizers.Adam(2e-4), model.trainable_variables)],
        tf.distribute.get_strategy(),
        FLAGS.batch_size,
        jit_compile=FLAGS.xla,
        loss_scale=loss_scale_for(compute_dtype),
    )
    for _ in range(FLAGS.warmup):
        step(batches)["loss"].numpy()
    started = time.perf_counter()
    for _ in range(FLAGS.steps):
        step(batches)["loss"].numpy()
    seconds = (time.perf_counter() - started) / FLAGS.steps
    arch = bert.read_architecture(handle) if os.path.isdir(handle) else None
    flops = model_flops(
        arch, FLAGS.trained_codes or FLAGS.num_labels, FLAGS.seq_len, FLAGS.batch_size
    )
    gpu_peak = None
    if tf.config.list_physical_devices("GPU"):
        gpu_peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    return dict(
        num_labels=FLAGS.num_labels,
        trained_codes=FLAGS.trained_codes,
        seq_len=FLAGS.seq_len,
        batch_size=FLAGS.batch_size,
        label_attention=FLAGS.label_attention,
        compute_dtype=compute_dtype,
        xla=FLAGS.xla,
        step_seconds=seconds,
        tokens_per_second=FLAGS.batch_size * FLAGS.seq_len / seconds,
        encoder=FLAGS.encoder or PAPER_ARCH.name,
        segment_length=FLAGS.segment_length,
        gflops_per_second=None if flops is None else flops / seconds / 1e9,
        peak_memory_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        peak_gpu_memory_gb=gpu_peak,
    )


def dense_memory_gb(num_labels: int, seq_len: int, batch_size: int) -> float:
    """Peak memory of dense label attention: about nine float32 `[batch, codes, tokens]` tensors.

    (Measured: 22.3 GB at 72,748 codes x 8,192 tokens, batch 1.)
    """
    return 9 * 4 * batch_size * num_labels * seq_len / 2**30


def failure(done: subprocess.CompletedProcess) -> str:
    """Why a configuration's process failed, in a few words."""
    if done.returncode == -signal.SIGKILL:
        return "killed (out of memory)"
    lines = [line for line in done.stderr.splitlines() if "Error" in line]
    return (lines or done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]


def achieved(result: dict, peak: float | None = None) -> str:
    """GFLOP/s of a measured step, and its share of `peak`; n/a for an unknown architecture."""
    if result["gflops_per_second"] is None:
        return "n/a"
    share = f" ({100 * result['gflops_per_second'] / peak:.0f}%)" if peak else ""
    return f"{result['gflops_per_second']:.0f} GFLOP/s{share}"


def record(cell: dict) -> None:
    """Appends one sweep cell to `--results_file` (when given) as a JSON line."""
    if FLAGS.results_file:
        with open(FLAGS.results_file, "a") as results:
            results.write(json.dumps(dict(cell, cpu=hardware.cpu_summary())) + "\n")


def sweep():
    print(f"CPU: {hardware.cpu_summary()}")
    peaks = {dtype: hardware.matmul_peak(dtype) for dtype in ("float32", "bfloat16")}
    print(
        f"matmul peak: {peaks['float32']:.0f} GFLOP/s float32, {peaks['bfloat16']:.0f} GFLOP/s "
        "bfloat16 (best of 1,024 to 4,096 square products, 5 timings each)"
    )
    print(
        "| codes | tokens | batch | label attention | dtype | step time | tokens/s | GFLOP/s "
        "(% of peak) | peak memory |"
    )
    print("|---" * 9 + "|")
    for num_labels in map(int, FLAGS.sweep_labels):
        for seq_len in map(int, FLAGS.sweep_seq_lens):
            for batch_size in map(int, FLAGS.sweep_batches):
                for attention in ("dense", "chunked"):
                    for dtype in ("float32", "bfloat16"):
                        prefix = (
                            f"| {num_labels} | {seq_len} | {batch_size} | {attention} | {dtype} |"
                        )
                        cell = dict(
                            num_labels=num_labels,
                            seq_len=seq_len,
                            batch_size=batch_size,
                            label_attention=attention,
                            requested_dtype=dtype,
                        )
                        needed = dense_memory_gb(num_labels, seq_len, batch_size)
                        if attention == "dense" and needed > FLAGS.memory_limit_gb:
                            print(
                                f"{prefix} skipped: needs about {needed:.0f} GB | | | |", flush=True
                            )
                            record(dict(cell, status=f"skipped: needs about {needed:.0f} GB"))
                            continue
                        command = [
                            sys.executable,
                            __file__,
                            "--json",
                            f"--num_labels={num_labels}",
                            f"--seq_len={seq_len}",
                            f"--batch_size={batch_size}",
                            f"--label_attention={attention}",
                            f"--compute_dtype={dtype}",
                            f"--steps={FLAGS.steps}",
                            f"--warmup={FLAGS.warmup}",
                            f"--xla={FLAGS.xla}",
                            f"--segment_length={FLAGS.segment_length}",
                            *([f"--encoder={FLAGS.encoder}"] if FLAGS.encoder else []),
                        ]
                        done = subprocess.run(command, capture_output=True, text=True)
                        if done.returncode:
                            print(f"{prefix} failed: {failure(done)} | | | |", flush=True)
                            record(dict(cell, status=f"failed: {failure(done)}"))
                            continue
                        result = json.loads(done.stdout.strip().splitlines()[-1])
                        peak = peaks[result["compute_dtype"]]
                        record({**cell, **result, "status": "ok", "peak_gflops_per_second": peak})
                        print(
                            f"{prefix} {result['step_seconds']:.2f} s | "
                            f"{result['tokens_per_second']:,.0f} | "
                            f"{achieved(result, peak)} | "
                            f"{result['peak_memory_gb']:.2f} GB |",
                            flush=True,
                        )


def main(argv):
    del argv
    if FLAGS.sweep:
        sweep()
        return
    result = run_one()
    if FLAGS.json:
        print(json.dumps(result))
        return
    print(f"CPU: {hardware.cpu_summary()}")
    dtype = result["compute_dtype"]
    print(f"compute dtype (encoder, label attention): {dtype} ({FLAGS.compute_dtype})")
    print(f"step time: {result['step_seconds']:.2f} s")
    print(f"tokens/s: {result['tokens_per_second']:,.0f}")
    print(f"achieved: {achieved(result)}")
    print(f"peak memory: {result['peak_memory_gb']:.2f} GB")
    if result["peak_gpu_memory_gb"] is not None:
        print(f"peak GPU memory: {result['peak_gpu_memory_gb']:.2f} GB")


if __name__ == "__main__":
    app.run(main)
