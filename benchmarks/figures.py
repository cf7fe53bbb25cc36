"""Draws the figures of docs/ from results files, each PNG with the numbers it shows (.json).

    python benchmarks/figures.py --dataset_dir=data/synthetic \
        --reproduce_dir=runs/reproduce_synthetic \
        --sweep_results=benchmarks/results/train_step_sweep.jsonl --out_dir=docs/figures

- `token_lengths.png`: the CDF of WordPiece tokens per note of `--dataset_dir`
  (as `python -m data_prep.plot_lengths`).
- `dev_f1_by_seq_len.png`: dev micro F1 against training step for every LongBERT row of an
  `experiments.reproduce` folder, read from the rows' TensorBoard events (`ROW/dev`).
- `step_time_sweep.png`: training step time against codes, one line per tokens x label
  attention x dtype, from `benchmarks/train_step.py --sweep --results_file` (batch 1 cells).

Each input is optional; only the figures of the inputs given are drawn.
"""

import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import matplotlib  # noqa: E402
from absl import app, flags  # noqa: E402

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

from data_prep import plot_lengths  # noqa: E402
from longbert_tf import files, presets  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset_dir", None, "A prepared dataset folder: token-length CDF.")
flags.DEFINE_string("encoder", presets.RANDOM_ENCODER, "Whose vocabulary counts the tokens.")
flags.DEFINE_string("reproduce_dir", None, "An experiments.reproduce --out_dir: dev F1 curves.")
flags.DEFINE_string("sweep_results", None, "JSON lines of train_step.py --sweep --results_file.")
flags.DEFINE_string("out_dir", "docs/figures", "Folder of the PNGs and their .json numbers.")


def dev_f1_curves(reproduce_dir: str) -> dict:
    """`{seq_len: [(step, dev micro F1), ...]}` of the LongBERT rows of a reproduce folder."""
    curves = {}
    for row_dir in sorted(glob.glob(os.path.join(reproduce_dir, "*"))):
        row = os.path.basename(row_dir)
        if not row.isdigit() or not os.path.isdir(os.path.join(row_dir, "dev")):
            continue
        events = event_accumulator.EventAccumulator(
            os.path.join(row_dir, "dev"), size_guidance={event_accumulator.TENSORS: 0}
        )
        events.Reload()
        points = {
            event.step: float(tensor_util.make_ndarray(event.tensor_proto))
            for event in events.Tensors("micro_f1")
        }
        curves[int(row)] = sorted(points.items())
    if not curves:
        raise FileNotFoundError(f"{reproduce_dir} holds no LongBERT row with dev summaries")
    return dict(sorted(curves.items()))


def sweep_cells(path: str) -> list:
    """The measured batch-1 cells of a sweep's JSON lines."""
    with open(path) as results:
        cells = [json.loads(line) for line in results if line.strip()]
    return [cell for cell in cells if cell["status"] == "ok" and cell["batch_size"] == 1]


def save(figure, path: str, numbers) -> None:
    """Writes the figure atomically, and the numbers it shows beside it."""
    plot_lengths.save_figure(figure, path)
    files.write_json(path.removesuffix(".png") + ".json", numbers)


def draw_dev_f1(curves: dict, title: str, path: str) -> None:
    figure, axes = pyplot.subplots(figsize=(6, 4), dpi=120)
    for seq_len, points in curves.items():
        steps, f1 = zip(*points)
        axes.plot(steps, f1, marker="o", label=f"{seq_len:,} tokens")
    axes.set_xlabel("training step")
    axes.set_ylabel("dev micro F1 (threshold tuned on dev)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    save(figure, path, {str(seq_len): points for seq_len, points in curves.items()})


def draw_sweep(cells: list, path: str) -> None:
    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=120)
    lines = {}
    for cell in cells:
        key = (cell["seq_len"], cell["label_attention"], cell["compute_dtype"])
        lines.setdefault(key, []).append((cell["num_labels"], cell["step_seconds"]))
    colors = dict(
        zip(
            sorted({cell["seq_len"] for cell in cells}),
            pyplot.rcParams["axes.prop_cycle"].by_key()["color"],
        )
    )
    for (seq_len, attention, dtype), points in sorted(lines.items()):
        codes, seconds = zip(*sorted(points))
        style = "-" if attention == "chunked" else "--"
        marker = "o" if dtype == "bfloat16" else "s"
        label = f"{seq_len:,} tokens, {attention}, {dtype}"
        axes.plot(codes, seconds, style, marker=marker, color=colors[seq_len], label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("codes")
    axes.set_ylabel("training step time, batch 1 (s)")
    axes.set_title(cells[0]["cpu"].split(";")[0][:70], fontsize=9)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=6, ncol=2)
    shown = ("num_labels", "seq_len", "label_attention", "compute_dtype", "step_seconds")
    numbers = [{name: cell[name] for name in (*shown, "peak_memory_gb", "cpu")} for cell in cells]
    save(figure, path, numbers)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    if FLAGS.dataset_dir:
        out = os.path.join(FLAGS.out_dir, "token_lengths.png")
        plot_lengths.draw(FLAGS.dataset_dir.rstrip("/"), FLAGS.encoder, out)
        print(f"wrote {out}")
    if FLAGS.reproduce_dir:
        out = os.path.join(FLAGS.out_dir, "dev_f1_by_seq_len.png")
        title = f"dev micro F1 by input length ({os.path.basename(FLAGS.reproduce_dir)})"
        draw_dev_f1(dev_f1_curves(FLAGS.reproduce_dir), title, out)
        print(f"wrote {out}")
    if FLAGS.sweep_results:
        cells = sweep_cells(FLAGS.sweep_results)
        if not cells:
            raise SystemExit(f"{FLAGS.sweep_results} holds no measured batch-1 cell")
        out = os.path.join(FLAGS.out_dir, "step_time_sweep.png")
        draw_sweep(cells, out)
        print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
