"""Converts a Hugging Face BERT folder into a TF-Hub-format encoder SavedModel.

    python -m experiments.convert --hf_dir=PATH --out_dir=PATH [--num_layers=N]

See `longbert_tf.modeling.convert`; `experiments.run --encoder=HF_FOLDER` does
this once by itself and caches the result.
"""

from absl import app, flags

from longbert_tf.modeling import convert

flags.DEFINE_string(
    "hf_dir",
    None,
    "Hugging Face BERT folder (config.json, model.safetensors, vocab.txt).",
    required=True,
)
flags.DEFINE_string("out_dir", None, "Folder that receives the SavedModel.", required=True)
flags.DEFINE_integer("num_layers", None, "Keep only the first N transformer blocks; default all.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    out_dir = convert.convert(flags.FLAGS.hf_dir, flags.FLAGS.out_dir, flags.FLAGS.num_layers)
    print(f"Wrote {out_dir} (TF-Hub BERT encoder format)")


if __name__ == "__main__":
    app.run(main)
