"""Continues masked-LM pretraining of an encoder on a dataset's training notes and extra text.

    python -m experiments.pretrain --encoder=random:L-2_H-384_A-12 --dataset=codiesp_dx \
        --text_dir=../shared/data/codiesp/background/text_files_en --out_dir=runs/pretrain_codiesp
    python -m experiments.run --dataset=codiesp_dx --encoder=runs/pretrain_codiesp/encoder

Reads the dataset's training notes only (never dev or test) and every `*.txt`
file of each `--text_dir`; writes `OUT_DIR/encoder`, a TF-Hub-format encoder.
Running the same command again resumes; a finished run is not repeated.

    python -m experiments.pretrain --encoder=minilm --vocab_size=30522 --dataset=codiesp_dx \
        --data_dir=data_es --text_dir=../shared/data/codiesp/background/text_files \
        --out_dir=runs/pretrain_es

first learns a WordPiece vocabulary of that size from the same texts (here
Spanish) and moves the encoder onto it (`OUT_DIR/start_encoder`: each new
token's embedding is the mean of the encoder's own embeddings of its pieces,
`encoder_specs.with_vocab`), then trains that.
"""

import glob
import hashlib
import os

from absl import app, flags, logging

from experiments import datasets
from longbert_tf import configs, hardware, presets
from longbert_tf.data import dataset, token_cache, tokenization
from longbert_tf.modeling import encoder_specs
from longbert_tf.training import pretraining

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "encoder",
    None,
    "Encoder spec to continue (random:..., Hugging Face or TF-Hub-format folder).",
    required=True,
)
flags.DEFINE_string("encoder_vocab", None, "With random: the vocabulary of this encoder spec.")
flags.DEFINE_integer(
    "vocab_size",
    0,
    "If above 0: learn a WordPiece vocabulary of this many tokens from the texts read and move "
    "the encoder onto it first; 0 keeps the encoder's own.",
)
flags.DEFINE_enum("dataset", "synthetic", sorted(presets.PRESETS), "Whose training notes to read.")
flags.DEFINE_string("data_dir", "data", "Folder holding prepared datasets (DATA_DIR/DATASET).")
flags.DEFINE_multi_string("text_dir", [], "Folders of extra unlabelled *.txt files (UTF-8).")
flags.DEFINE_string(
    "out_dir", None, "Run folder; the encoder lands in OUT_DIR/encoder.", required=True
)
flags.DEFINE_integer("segment_length", 128, "Positions per window, [CLS] and [SEP] included.")
flags.DEFINE_integer("batch_size", 16, "Windows per step.")
flags.DEFINE_float("learning_rate", 1e-4, "Adam's peak rate (linear warmup, then linear decay).")
flags.DEFINE_integer("warmup_steps", 100, "Steps of linear warmup.")
flags.DEFINE_integer("train_steps", 2000, "Training steps.")
flags.DEFINE_integer("checkpoint_every", 200, "Steps between checkpoints.")
flags.DEFINE_integer("log_every", 20, "Steps between log lines and TensorBoard scalars.")
flags.DEFINE_integer("seed", 0, "Seed of the window order, the masking and a random encoder.")
flags.DEFINE_enum(
    "compute_dtype",
    "auto",
    list(configs.COMPUTE_DTYPES),
    "dtype of the encoder's products while it trains (auto as in experiments.run); the encoder "
    "is written back in float32.",
)


def read_texts(text_dir: str) -> list:
    """The texts of every `*.txt` file of a folder, in file-name order."""
    paths = sorted(glob.glob(os.path.join(text_dir, "*.txt")))
    if not paths:
        raise SystemExit(f"--text_dir={text_dir} holds no *.txt files")
    texts = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as text_file:
                texts.append(text_file.read())
        except UnicodeDecodeError as error:
            raise SystemExit(f"{path} is not UTF-8 ({error}); convert it first") from None
    return texts


def text_cache(text_dir: str, vocab, out_dir: str) -> str:
    """A token cache of a folder's texts in `out_dir/texts/`, once per content and vocabulary."""
    texts = read_texts(text_dir)
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:16]
    path = os.path.join(out_dir, "texts", f"{digest}-{vocab.fingerprint}.tfrecord")
    if not os.path.exists(path):
        logging.info("Tokenizing %d texts of %s", len(texts), text_dir)
        token_cache.write(texts, [[] for _ in texts], vocab, path)
    return path


def learned_vocab_encoder(handle: str, dataset_dir: str) -> str:
    """`OUT_DIR/start_encoder`: the encoder moved onto a vocabulary of `--vocab_size` tokens
    learned from the training notes and the `--text_dir` texts (built once)."""
    out_dir = os.path.join(FLAGS.out_dir, "start_encoder")
    if not os.path.exists(out_dir):
        texts = list(dataset.read_notes(dataset_dir, "train").text)
        for text_dir in FLAGS.text_dir:
            texts += read_texts(text_dir)
        lower_case = tokenization.load_vocab(handle).lower_case
        logging.info("Learning a %d-token vocabulary from %d texts", FLAGS.vocab_size, len(texts))
        tokens = tokenization.learn_vocab(texts, FLAGS.vocab_size, lower_case)
        encoder_specs.with_vocab(handle, tokens, out_dir)
    return out_dir


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    dataset_dir = os.path.join(FLAGS.data_dir, FLAGS.dataset)
    if not os.path.exists(dataset.notes_path(dataset_dir, "train")):
        raise datasets.not_prepared(FLAGS.dataset, FLAGS.data_dir)
    handle = encoder_specs.resolve(
        FLAGS.encoder, dataset_dir, FLAGS.seed, vocab_source=FLAGS.encoder_vocab
    )
    if FLAGS.vocab_size:
        handle = learned_vocab_encoder(handle, dataset_dir)
    vocab = tokenization.load_vocab(handle)
    compute_dtype, reason = hardware.compute_dtype(FLAGS.compute_dtype, "auto")
    logging.info("The encoder multiplies in %s (%s)", compute_dtype, reason)
    token_caches = [token_cache.build(dataset_dir, "train", vocab)]
    token_caches += [text_cache(text_dir, vocab, FLAGS.out_dir) for text_dir in FLAGS.text_dir]
    config = pretraining.PretrainConfig(
        encoder=handle,
        token_caches=tuple(token_caches),
        out_dir=FLAGS.out_dir,
        segment_length=FLAGS.segment_length,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate,
        warmup_steps=FLAGS.warmup_steps,
        train_steps=FLAGS.train_steps,
        checkpoint_every=FLAGS.checkpoint_every,
        log_every=FLAGS.log_every,
        seed=FLAGS.seed,
        compute_dtype=compute_dtype,
    )
    results = pretraining.pretrain(config, vocab)
    print(
        f"masked-LM loss {results['loss']:.4f}, accuracy {results['accuracy']:.3f}; "
        f"encoder in {results['encoder']} (use --encoder={results['encoder']})"
    )


if __name__ == "__main__":
    app.run(main)
