"""Trains and evaluates LongBERT (BERT-baseline at --seq_len=512) or CAML on one dataset.

    python -m experiments.run                      # synthetic demo, no network needed
    python -m experiments.run --dataset=mimic3_full --seq_len=4096
    python -m experiments.run --dataset=mimic3_50 --model=caml
    python -m experiments.run --dataset=mimic4_dx --dry_run   # Table 1 parameter counts

Unset flags take the dataset preset's value (`longbert_tf.presets.PRESETS`).
"""

import os
import sys

from absl import app, flags, logging

from experiments import datasets
from longbert_tf import configs, distribute, presets
from longbert_tf.data import dataset
from longbert_tf.evaluation import report
from longbert_tf.modeling import encoders, longbert
from longbert_tf.training import loop

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "synthetic", sorted(presets.PRESETS), "Dataset preset.")
flags.DEFINE_enum(
    "model", "longbert", list(configs.MODELS), "longbert (BERT-baseline at one segment) or caml."
)
flags.DEFINE_integer(
    "seq_len", None, "Encoder positions per note (multiple of --segment_length); preset default."
)
flags.DEFINE_integer(
    "segment_length",
    512,
    "Positions per segment, [CLS] and [SEP] included; at most the encoder's position limit.",
)
flags.DEFINE_integer(
    "segment_stride",
    None,
    "Note tokens between segment starts, 1 to segment_length - 2; "
    "smaller values overlap segments. Default: segment_length - 2 (no overlap).",
)
flags.DEFINE_string("data_dir", "data", "Folder holding prepared datasets (DATA_DIR/DATASET).")
flags.DEFINE_string("model_dir", None, "Run folder; default runs/DATASET_seqSEQ_LEN.")
flags.DEFINE_string(
    "encoder",
    None,
    "TF-Hub handle, local TF-Hub-format SavedModel folder, or random:L-*_H-*_A-*; preset default.",
)
flags.DEFINE_integer(
    "encoder_layers",
    None,
    "Keep only the first N transformer blocks of the encoder (Hugging Face folders, random:, "
    "and SavedModels this package built); default all.",
)
flags.DEFINE_string(
    "encoder_vocab",
    None,
    "With a random: encoder: take this encoder's WordPiece vocabulary and lower-casing (any "
    "--encoder spec) instead of learning one from the notes, to compare like with like.",
)
flags.DEFINE_integer("train_steps", None, "Training steps; preset default.")
flags.DEFINE_integer("eval_every", None, "Steps between validations; preset default.")
flags.DEFINE_integer("log_every", 20, "Steps between log lines and TensorBoard training scalars.")
flags.DEFINE_integer(
    "checkpoint_every", None, "Steps between checkpoints of the latest state; default --eval_every."
)
flags.DEFINE_integer("batch_size", None, "Notes per batch; default 4, or 2 at seq_len >= 8192.")
flags.DEFINE_float(
    "learning_rate", None, "Adam learning rate; preset default (the paper's 2e-4 for MIMIC)."
)
flags.DEFINE_float(
    "encoder_learning_rate",
    None,
    "The encoder's own peak learning rate (everything but label attention); default: "
    "--learning_rate for all.",
)
flags.DEFINE_enum(
    "lr_schedule",
    "constant",
    list(configs.LR_SCHEDULES),
    "After --warmup_steps: constant (the paper's), or linear / cosine decay to 0 at --train_steps.",
)
flags.DEFINE_integer(
    "warmup_steps", 0, "Steps of linear warmup to the peak rates (0 to --train_steps)."
)
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (AdamW) when above 0.")
flags.DEFINE_enum(
    "label_init",
    "random",
    list(configs.LABEL_INITS),
    "descriptions: start every code's label query and classifier from its description as the "
    "encoder reads it (DATA_DIR/DATASET/descriptions.tsv), through parameters shared by all codes, "
    "so codes without training notes can be predicted; random: the paper's.",
)
flags.DEFINE_bool(
    "normalize_tokens",
    False,
    "Standardise every token vector (zero mean, unit variance) before label attention.",
)
flags.DEFINE_bool(
    "attend_special_tokens",
    True,
    "Let label attention read every segment's [CLS] and [SEP] (the paper's); "
    "--noattend_special_tokens excludes them.",
)
flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling and the random encoder.")
flags.DEFINE_enum(
    "label_attention",
    "chunked",
    sorted(configs.LABEL_ATTENTION_CHUNK_SIZES),
    "dense: all codes' scores at once ([batch, codes, tokens]); chunked: 1,024 codes at a time, "
    "their gradients computed in the same pass (same results, far less memory).",
)
flags.DEFINE_enum(
    "compute_dtype",
    "auto",
    list(configs.COMPUTE_DTYPES),
    "dtype of the matrix products of the encoder (those this package built or converted; "
    "variables stay float32) and of label attention; softmax and layer-norm statistics and the "
    "loss stay float32. "
    "auto: bfloat16 where the hardware multiplies it natively (TPU, GPU of compute capability "
    ">= 8.0, CPU with AVX512_BF16 or AMX-BF16), float16 with loss scaling on GPUs of compute "
    "capability 7.x, else float32; the choice is logged and saved.",
)
flags.DEFINE_enum(
    "strategy",
    "auto",
    list(distribute.STRATEGIES),
    "auto: multi_worker when TF_CONFIG lists several workers, mirrored with several GPUs, else "
    "one device. --batch_size is the global batch over all replicas.",
)
flags.DEFINE_string("tpu", None, "Cloud TPU name or grpc:// address, with --strategy=tpu.")
flags.DEFINE_integer(
    "grad_accum_steps",
    1,
    "Accumulate gradients over N micro-batches of batch_size / N notes (e.g. the paper's batch "
    "4 at 8,192 tokens as 4 x 1 on a small GPU); must divide --batch_size.",
)
flags.DEFINE_integer(
    "max_words", configs.CAML_MAX_WORDS, "CAML: words read per note (Mullenbach et al.: 2,500)."
)
flags.DEFINE_integer(
    "max_notes", None, "Use only the first N notes of every split (to shrink a run for a CPU)."
)
flags.DEFINE_string(
    "predictions_file",
    None,
    "Also write every dev and test note's 15 most probable codes (JSON lines) here; a finished "
    "run is not evaluated again (delete its metrics.json first).",
)
flags.DEFINE_bool("dry_run", False, "Print the parameter breakdown and exit; needs no data.")


# Flags that are settings of the run; those given on the command line go to `configs.from_preset`.
CONFIG_FLAGS = (
    "encoder",
    "encoder_layers",
    "encoder_vocab",
    "segment_length",
    "segment_stride",
    "train_steps",
    "eval_every",
    "log_every",
    "checkpoint_every",
    "batch_size",
    "learning_rate",
    "encoder_learning_rate",
    "lr_schedule",
    "warmup_steps",
    "weight_decay",
    "label_init",
    "normalize_tokens",
    "attend_special_tokens",
    "seed",
    "label_attention",
    "compute_dtype",
    "strategy",
    "tpu",
    "grad_accum_steps",
    "max_words",
    "max_notes",
)


def resolve_config() -> configs.ExperimentConfig:
    """The flags given, filled from the dataset preset (`configs.from_preset`)."""
    given = {name: FLAGS[name].value for name in CONFIG_FLAGS if FLAGS[name].present}
    return configs.from_preset(
        FLAGS.dataset,
        model=FLAGS.model,
        seq_len=FLAGS.seq_len,
        data_dir=FLAGS.data_dir,
        model_dir=FLAGS.model_dir,
        **given,
    )


def dry_run(config: configs.ExperimentConfig) -> str:
    """The paper's Table 1 breakdown for this dataset and encoder, as text."""
    if config.model != "longbert":
        raise SystemExit("--dry_run prints the paper's Table 1, which is for --model=longbert")
    labels_path = os.path.join(config.dataset_dir, dataset.LABELS_FILE)
    if os.path.exists(labels_path):
        num_labels, label_source = len(dataset.read_labels(config.dataset_dir)), labels_path
    else:
        num_labels, label_source = config.preset.num_labels, "the preset's label count"
    if num_labels is None:
        raise SystemExit(f"{config.dataset} is not prepared, so its number of codes is unknown")
    encoder_parameters, hidden_size, encoder_source = encoders.count_parameters(
        config.encoder,
        config.dataset_dir,
        config.segments.segment_length,
        config.seed,
        config.encoder_layers,
        config.encoder_vocab,
    )
    rows = longbert.parameter_breakdown(encoder_parameters, hidden_size, num_labels)
    lines = [
        f"{config.dataset}: {num_labels:,} codes ({label_source}), encoder {encoder_source}",
        *(f"  {name:<22}{count:>12,}" for name, count in rows.items()),
    ]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = resolve_config()
    if FLAGS.dry_run:
        print(dry_run(config))
        return
    datasets.ensure_prepared(config)
    logging.info("Config: %s", config)
    results = loop.train_and_evaluate(config, FLAGS.predictions_file)
    print(
        f"dev micro F1 {results['dev']['micro_f1']:.4f}, test micro F1 "
        f"{results['test']['micro_f1']:.4f} (threshold {results['dev']['threshold']:.2f}, "
        f"best step {results['best_step']}); metrics in {config.model_dir}/metrics.json"
    )
    print(report.table(config, results))
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
