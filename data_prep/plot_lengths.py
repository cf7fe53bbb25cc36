"""The paper's Figure 2: the cumulative distribution of WordPiece tokens per note.

    python -m data_prep.plot_lengths --dataset_dir=data/mimic3_full
    python -m data_prep.plot_lengths --dataset_dir=data/mimic3_full \\
        --encoder=https://tfhub.dev/tensorflow/small_bert/bert_en_uncased_L-2_H-256_A-4/2

Notes are tokenized with the encoder's vocabulary through the same cache as
training (so the counts are what the model reads). Writes the figure as a PNG
(default `DATASET_DIR/token_lengths.png`) and the percentiles and the share of
notes that fit each sequence length to `token_lengths.json` beside it.
"""

import os

import matplotlib
import numpy as np
from absl import app, flags

from longbert_tf import files, presets
from longbert_tf.data import dataset, token_cache, tokenization
from longbert_tf.data.dataset_summary import PERCENTILES
from longbert_tf.modeling import encoder_specs

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402

SEQUENCE_LENGTHS = (512, 1024, 2048, 4096, 8192)


def length_report(lengths: np.ndarray) -> dict:
    """Percentiles and, per sequence length, the share of notes whose tokens all fit."""
    return dict(
        notes=int(len(lengths)),
        percentiles={str(q): float(np.percentile(lengths, q)) for q in PERCENTILES},
        share_within={
            str(length): float(np.mean(lengths <= length)) for length in SEQUENCE_LENGTHS
        },
    )


def plot(lengths: np.ndarray, title: str, path: str) -> None:
    """Draws the CDF of `lengths` with the paper's sequence lengths marked."""
    figure, axes = pyplot.subplots(figsize=(6, 4), dpi=120)
    ordered = np.sort(lengths)
    axes.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), color="tab:blue")
    for length in SEQUENCE_LENGTHS:
        share = np.mean(lengths <= length)
        axes.axvline(length, color="grey", linestyle=":", linewidth=1)
        axes.annotate(f"{share:.0%}", (length, share), textcoords="offset points", xytext=(3, -12))
    axes.set_xscale("log", base=2)
    axes.set_xticks(SEQUENCE_LENGTHS, [f"{length:,}" for length in SEQUENCE_LENGTHS])
    axes.set_xlabel("WordPiece tokens per note")
    axes.set_ylabel("share of notes")
    axes.set_ylim(0, 1.02)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    save_figure(figure, path)


def save_figure(figure, path: str) -> None:
    """Writes a figure to `path` (PNG) atomically and closes it."""
    figure.tight_layout()
    temporary = f"{path}.tmp.png"
    figure.savefig(temporary)
    pyplot.close(figure)
    os.replace(temporary, path)


def note_lengths(dataset_dir: str, encoder: str) -> np.ndarray:
    """WordPiece tokens of every note of every split, by `encoder`'s vocabulary (token caches)."""
    vocab = tokenization.load_vocab(encoder_specs.resolve(encoder, dataset_dir))
    return np.concatenate(
        [
            token_cache.token_lengths(token_cache.build(dataset_dir, split, vocab))
            for split in dataset.SPLITS
        ]
    )


def draw(dataset_dir: str, encoder: str, out: str) -> dict:
    """Draws the CDF of a dataset's note lengths to `out` and writes its `length_report` beside
    it (`.json`); returns the report."""
    lengths = note_lengths(dataset_dir, encoder)
    plot(lengths, f"{os.path.basename(dataset_dir)}: {len(lengths):,} notes", out)
    report = length_report(lengths)
    files.write_json(out.removesuffix(".png") + ".json", report)
    return report


def main(argv):
    del argv
    dataset_dir = flags.FLAGS.dataset_dir.rstrip("/")
    out = flags.FLAGS.out or os.path.join(dataset_dir, "token_lengths.png")
    report = draw(dataset_dir, flags.FLAGS.encoder, out)
    print(f"{out}: median {report['percentiles']['50']:,.0f} tokens; notes that fit:")
    for length, share in report["share_within"].items():
        print(f"  {length:>5} tokens: {share:.1%}")


if __name__ == "__main__":
    flags.DEFINE_string("dataset_dir", None, "A prepared dataset folder.", required=True)
    flags.DEFINE_string(
        "encoder",
        presets.RANDOM_ENCODER,
        "Whose vocabulary counts the tokens (see experiments.run --encoder); the default learns "
        "one from the training notes.",
    )
    flags.DEFINE_string("out", None, "PNG path; default DATASET_DIR/token_lengths.png.")
    app.run(main)
