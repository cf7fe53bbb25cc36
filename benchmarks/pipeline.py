"""Input pipeline throughput and the padding that sorting notes by length saves.

    python benchmarks/pipeline.py --dataset_dir=data/synthetic --seq_len=2048
    python benchmarks/pipeline.py --dataset_dir=data/codiesp_dx --seq_len=1024 --segment_length=128

Runs the training pipeline alone (note order -> token cache -> segments -> batches)
for `--batches` batches and prints the note tokens per second it delivers, to
compare with the training step's (`experiments.run` logs it). Padding waste is
the share of encoder positions that hold no note token ([CLS], [SEP] and
padding count as waste): measured on the training batches (notes sorted by
length within windows, see `pipeline.epoch_batches`), and computed from
the notes' lengths for batches of random notes padded to their longest note
and for padding every note to `seq_len`.
"""

import time

import numpy as np
from absl import app, flags

from longbert_tf import configs, presets
from longbert_tf.data import dataset, pipeline, segmentation, token_cache, tokenization
from longbert_tf.modeling import encoder_specs

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset_dir", "data/synthetic", "A prepared dataset folder.")
flags.DEFINE_string("encoder", presets.RANDOM_ENCODER, "Whose vocabulary tokenizes the notes.")
flags.DEFINE_integer("seq_len", 2048, "Encoder positions per note.")
flags.DEFINE_integer("segment_length", 512, "Positions per segment.")
flags.DEFINE_integer("batch_size", 4, "Notes per batch.")
flags.DEFINE_integer("batches", 400, "Batches to time.")


def main(argv):
    del argv
    segments = configs.SegmentConfig(FLAGS.seq_len, FLAGS.segment_length)
    vocab = tokenization.load_vocab(encoder_specs.resolve(FLAGS.encoder, FLAGS.dataset_dir))
    cache_path = token_cache.build(FLAGS.dataset_dir, "train", vocab)
    batches = pipeline.training_dataset(
        cache_path,
        segmentation.bert_segmenter(segments, vocab),
        segments.max_note_tokens,
        num_labels=len(dataset.read_labels(FLAGS.dataset_dir)),
        batch_size=FLAGS.batch_size,
        seed=0,
    )
    iterator = iter(batches)
    next(iterator)  # tracing is not timed
    note_tokens = positions = 0
    started = time.perf_counter()
    for _ in range(FLAGS.batches):
        features, _ = next(iterator)
        mask = features["input_mask"].numpy()
        note_tokens += int(mask.sum()) - 2 * int((mask[:, :, 0] == 1).sum())  # minus [CLS], [SEP]
        positions += mask.size
    seconds = time.perf_counter() - started

    lengths = np.minimum(token_cache.token_lengths(cache_path), segments.max_note_tokens)
    needed = [
        int(segmentation.segment_layout(int(length), segments)[1].shape[0])
        for length in np.unique(lengths)
    ]
    segments_of = dict(zip(np.unique(lengths).tolist(), needed))
    rng = np.random.default_rng(0)
    random_positions = 0
    for _ in range(FLAGS.batches):
        batch = rng.choice(lengths, FLAGS.batch_size)
        longest = max(segments_of[int(n)] for n in batch)
        width = FLAGS.segment_length if longest > 1 else int(batch.max()) + 2
        random_positions += FLAGS.batch_size * longest * width
    random_tokens = FLAGS.batches * FLAGS.batch_size * lengths.mean()

    print(f"{FLAGS.dataset_dir}, seq_len {FLAGS.seq_len}, batch {FLAGS.batch_size}:")
    print(f"  pipeline alone: {note_tokens / seconds:,.0f} note tokens/s ({FLAGS.batches} batches)")
    print(f"  padding waste, training batches (measured): {1 - note_tokens / positions:.1%}")
    print(
        f"  padding waste, random batches (computed):   {1 - random_tokens / random_positions:.1%}"
    )
    print(f"  padding waste, every note at seq_len:       {1 - lengths.mean() / FLAGS.seq_len:.1%}")


if __name__ == "__main__":
    app.run(main)
