"""Where chunked label attention's training time goes: its matrix products or the rest.

    python benchmarks/label_attention_profile.py --num_labels=72748 --seq_len=8192

Times, in float32 and in bfloat16, one forward and backward pass of chunked
label attention (`chunked_attention.chunked_loss` and its gradients) over
random token vectors, and the same pass's matrix products alone (the three
products of every chunk, in the same loop, on the same shapes). The rest is
the elementwise work on the `[batch, chunk, tokens]` scores (softmax, logits,
their gradients: one XLA-fused kernel per chunk), casts and the sums of the
token gradients. Prints each time (best of `--trials`), the products' share,
and the products' GFLOP/s against this machine's matmul peak.
"""

import json
import time

from absl import app, flags

from longbert_tf import hardware
from longbert_tf.framework import tf
from longbert_tf.modeling import chunked_attention

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_labels", 72748, "Codes.")
flags.DEFINE_integer("seq_len", 8192, "Tokens per note.")
flags.DEFINE_integer("batch_size", 1, "Notes.")
flags.DEFINE_integer("hidden_size", 256, "Width of the token vectors.")
flags.DEFINE_integer("chunk_size", 1024, "Codes per chunk.")
flags.DEFINE_integer("trials", 3, "Timings of each pass (after one warm-up); the best is kept.")
flags.DEFINE_bool("json", False, "Print one JSON line instead of text.")


def best_time(function) -> float:
    """The shortest of `--trials` timed calls after one warm-up, seconds."""
    function().numpy()
    times = []
    for _ in range(FLAGS.trials):
        started = time.perf_counter()
        function().numpy()
        times.append(time.perf_counter() - started)
    return min(times)


def profile(dtype: str) -> dict:
    """Seconds of the whole pass and of its products alone, with `dtype` products."""
    batch, length, hidden, codes = (
        FLAGS.batch_size,
        FLAGS.seq_len,
        FLAGS.hidden_size,
        FLAGS.num_labels,
    )
    chunk = FLAGS.chunk_size
    num_chunks = -(-codes // chunk)  # the pass pads the last chunk with zero codes, as here
    tokens = tf.random.stateless_normal([batch, length, hidden], [0, 1])
    mask = tf.ones([batch, length], tf.int32)
    labels = tf.cast(tf.random.stateless_uniform([batch, codes], [0, 2]) < 2e-4, tf.float32)
    queries = 0.05 * tf.random.stateless_normal([codes, hidden], [0, 3])
    classifiers = 0.05 * tf.random.stateless_normal([codes, hidden], [0, 4])
    biases = tf.zeros([codes])

    @tf.function
    def whole_pass():
        variables = [tokens, queries, classifiers, biases]
        with tf.GradientTape() as tape:
            tape.watch(variables)
            loss = chunked_attention.chunked_loss(
                tokens, mask, labels, queries, classifiers, biases, chunk, dtype
            )
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, variables)])

    @tf.function
    def products_alone():
        padded = tf.pad(
            tf.concat([queries, classifiers], 1), [[0, num_chunks * chunk - codes], [0, 0]]
        )
        chunks = tf.reshape(tf.cast(padded, dtype), [num_chunks, 2 * chunk, hidden])
        matmul_tokens = tf.cast(tokens, dtype)

        def body(index, total):
            products = tf.matmul(chunks[index], matmul_tokens, transpose_b=True)  # [b, 2c, t]
            note_grads = tf.matmul(products, matmul_tokens)  # [b, 2c, hidden]
            token_grads = tf.matmul(products, chunks[index], transpose_a=True)  # [b, t, hidden]
            used = note_grads[0, 0, 0] + token_grads[0, 0, 0]
            return index + 1, total + tf.cast(used, tf.float32)

        return tf.while_loop(lambda index, _: index < num_chunks, body, (0, 0.0))[1]

    whole, products = best_time(whole_pass), best_time(products_alone)
    flops = 3 * 2 * batch * (2 * chunk * num_chunks) * length * hidden
    return dict(
        dtype=dtype,
        whole_seconds=whole,
        products_seconds=products,
        products_share=products / whole,
        products_gflops_per_second=flops / products / 1e9,
    )


def main(argv):
    del argv
    results = [profile(dtype) for dtype in ("float32", "bfloat16")]
    if FLAGS.json:
        print(json.dumps(results))
        return
    print(f"CPU: {hardware.cpu_summary()}")
    print(
        f"{FLAGS.num_labels:,} codes x {FLAGS.seq_len:,} tokens, batch {FLAGS.batch_size}, "
        f"hidden {FLAGS.hidden_size}, chunks of {FLAGS.chunk_size:,}"
    )
    print("| products | whole pass | products alone (share) | products' GFLOP/s (% of peak) |")
    print("|---|---|---|---|")
    for result in results:
        peak = hardware.matmul_peak(result["dtype"])
        gflops = result["products_gflops_per_second"]
        print(
            f"| {result['dtype']} | {result['whole_seconds']:.2f} s | "
            f"{result['products_seconds']:.2f} s ({100 * result['products_share']:.0f}%) | "
            f"{gflops:.0f} ({100 * gflops / peak:.0f}%) |"
        )


if __name__ == "__main__":
    app.run(main)
