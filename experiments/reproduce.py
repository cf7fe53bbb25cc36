"""Reproduces the paper's results tables: CAML, BERT-baseline and LongBERT rows, one command.

    python -m experiments.reproduce --dataset=mimic3_full
    python -m experiments.reproduce --dataset=synthetic --rows=caml,512,2048 --train_steps=400

Rows (`--rows`, default all): `caml` (CAML on 2,500 words, Mullenbach et al.'s
settings: kernel 10, 50 filters, dropout 0.2, Adam 1e-4, batch 16),
`512` (BERT-baseline) and `1024`, `2048`, `4096`, `8192` (LongBERT; batch 4, 2 at
8,192; the preset's recipe). Each row is the `experiments.run` configuration of that row, in
`--out_dir/ROW`: finished rows are read back, interrupted ones resume from their
checkpoint. Writes `table.md` and `table.json` to `--out_dir`: our test metrics
per row and, beneath, published numbers where `published_results.json` has them.
"""

import json
import os

from absl import app, flags, logging

from experiments import datasets
from longbert_tf import configs, files, presets
from longbert_tf.evaluation import report
from longbert_tf.training import loop

ROWS = ("caml", "512", "1024", "2048", "4096", "8192")
PUBLISHED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "published_results.json")

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "synthetic", sorted(presets.PRESETS), "Dataset preset.")
flags.DEFINE_list("rows", list(ROWS), f"Rows to run, of {', '.join(ROWS)}.")
flags.DEFINE_string("data_dir", "data", "Folder holding prepared datasets.")
flags.DEFINE_string(
    "out_dir", None, "Folder of the rows and tables; default runs/reproduce_DATASET."
)
flags.DEFINE_string("encoder", None, "Encoder of the BERT rows; preset default.")
flags.DEFINE_integer("train_steps", None, "Training steps of every row; preset default.")
flags.DEFINE_integer("eval_every", None, "Steps between validations; preset default.")
flags.DEFINE_integer("max_notes", None, "Use only the first N notes of every split.")
flags.DEFINE_float("learning_rate", None, "Adam learning rate of the BERT rows; preset default.")
flags.DEFINE_integer(
    "batch_size", None, "Batch of the BERT rows; default the paper's 4 (2 at 8,192 tokens)."
)
flags.DEFINE_integer("seed", 0, "Seed of every row.")
flags.DEFINE_enum(
    "compute_dtype",
    "auto",
    list(configs.COMPUTE_DTYPES),
    "dtype of the encoder's and label attention's matrix products in the BERT rows; auto as "
    "in experiments.run (bfloat16 where native, float16 on GPUs of compute capability 7.x).",
)


# Flags that are settings of every row, and those that only the BERT rows take.
ROW_FLAGS = ("train_steps", "eval_every", "max_notes", "seed", "compute_dtype")
BERT_ROW_FLAGS = ("encoder", "learning_rate", "batch_size")


def row_config(row: str, out_dir: str) -> configs.ExperimentConfig:
    """The `experiments.run` configuration of one row (`configs.from_preset`: the flags given,
    then the preset's recipe and settings), in `out_dir/ROW`."""
    if row not in ROWS:
        raise ValueError(f"unknown row {row!r}; choose from {ROWS}")
    names = ROW_FLAGS if row == "caml" else ROW_FLAGS + BERT_ROW_FLAGS
    given = {name: FLAGS[name].value for name in names if FLAGS[name].present}
    return configs.from_preset(
        FLAGS.dataset,
        model="caml" if row == "caml" else "longbert",
        seq_len=None if row == "caml" else int(row),
        data_dir=FLAGS.data_dir,
        model_dir=os.path.join(out_dir, row),
        **given,
    )


def published_rows(dataset: str) -> list:
    """`(name, input length, metrics and source)` of published results for the dataset.

    `published_results.json` maps a dataset to its rows in table order, each a dict with `model`,
    `input_length` (an int, a description such as "entire note", or null), `source`, and the
    metrics the source reports; `report.row` prints absent metrics as '-'.
    """
    with open(PUBLISHED) as published_file:
        rows = json.load(published_file).get(dataset, [])
    published = []
    for entry in rows:
        values = dict(entry)
        model, length = values.pop("model"), values.pop("input_length", None)
        published.append((f"{model} (published: {values['source']})", length, values))
    return published


def main(argv):
    del argv
    out_dir = FLAGS.out_dir or os.path.join("runs", f"reproduce_{FLAGS.dataset}")
    row_configs = [row_config(row, out_dir) for row in FLAGS.rows]
    lines, rows = report.header(), []
    for config in row_configs:
        datasets.ensure_prepared(config)
        logging.info("Row %s -> %s", config.model_dir, config)
        results = loop.train_and_evaluate(config)
        name = report.model_name(config)
        lines.append(report.row(name, config.input_length, results["test"]))
        rows.append(dict(results, name=name))
    published = published_rows(FLAGS.dataset)
    lines += [report.row(name, length, values) for name, length, values in published]
    files.write_json(
        os.path.join(out_dir, "table.json"),
        dict(
            dataset=FLAGS.dataset,
            rows=rows,
            published=[
                values | {"model": name, "input_length": length}
                for name, length, values in published
            ],
        ),
    )
    table = "\n".join(lines) + "\n"
    heading = f"Test split of {FLAGS.dataset}, threshold tuned on dev.\n\n"
    files.write_text(os.path.join(out_dir, "table.md"), heading + table)
    print(table)


if __name__ == "__main__":
    app.run(main)
