"""Writes the synthetic dataset (see `longbert_tf.data.synthetic`): the embedded default.

python -m data_prep.synthetic --out_dir=data
"""

from absl import app, flags

from longbert_tf.data import synthetic

flags.DEFINE_string("out_dir", "data", "Folder that receives synthetic/.")
flags.DEFINE_integer("seed", 0, "Seed of the generator; equal seeds give identical files.")
flags.DEFINE_integer("num_codes", synthetic.SyntheticConfig.num_codes, "Number of distinct codes.")
flags.DEFINE_integer("num_train", synthetic.SyntheticConfig.num_train, "Number of training notes.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = synthetic.SyntheticConfig(
        num_codes=FLAGS.num_codes, num_train=FLAGS.num_train, seed=FLAGS.seed
    )
    synthetic.prepare(FLAGS.out_dir, config)


if __name__ == "__main__":
    app.run(main)
