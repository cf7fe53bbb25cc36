"""Exports a finished run as a serving SavedModel (see `longbert_tf.serving.export`).

python -m experiments.export --model_dir=runs/synthetic_seq2048 --export_dir=exports/coder
python -m experiments.export --model_dir=... --export_dir=... --inputs=token_ids

`exports/coder` is a model base folder, as TensorFlow Serving reads one: each export
becomes its next version (`exports/coder/1`, `2`, ...); `--export_dir=exports/coder/1`
writes (or replaces) that version. A folder holding anything else is refused.

A run fused with the terms of another copy of its notes (`experiments.fuse
--match_data_dir`: a model on CodiEsp's English translation, a dictionary on the
Spanish originals) exports text inputs as a `coder.TranslationCoder`, taking
`text` (the note, matched) and `translation` (read by the model).
"""

import json
import os

from absl import app, flags

from longbert_tf import configs
from longbert_tf.serving import export

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Folder of a finished experiments.run.", required=True)
flags.DEFINE_string(
    "export_dir",
    None,
    "Model base folder (the export becomes its next version) or a version folder (1, 2, ...).",
    required=True,
)
flags.DEFINE_enum(
    "inputs",
    "text",
    ["text", "token_ids"],
    "text: raw notes, tokenized in-graph (needs tensorflow-text ops, as TensorFlow Serving has); "
    "token_ids: WordPiece ids and lengths, core TensorFlow ops only.",
)
flags.DEFINE_integer("max_codes", export.MAX_CODES, "Most codes returned per note.")
flags.DEFINE_enum(
    "compute_dtype",
    None,
    list(configs.MATMUL_DTYPES),
    "dtype of the served model's products; default: the run's own (config.json). float32 for "
    "servers without fast 16-bit products (the variables are float32 either way).",
)

flags.DEFINE_bool(
    "fusion",
    True,
    "Serve the run's codes fused with term matching when the run has a fusion "
    "(experiments.fuse; text inputs only); --nofusion serves the model alone.",
)


def main(argv):
    del argv
    export_dir = export.export(
        FLAGS.model_dir,
        FLAGS.export_dir,
        FLAGS.inputs,
        FLAGS.max_codes,
        FLAGS.compute_dtype,
        FLAGS.fusion,
    )
    with open(os.path.join(export_dir, export.EXPORT_INFO)) as info_file:
        translation = json.load(info_file)["translation"]
    inputs = "text and translation" if translation else FLAGS.inputs
    print(f"Wrote {export_dir}: serving_default takes {inputs}")


if __name__ == "__main__":
    app.run(main)
