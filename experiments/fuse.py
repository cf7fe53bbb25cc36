"""Fuses a finished run's codes with lexical code matching, fitted on dev (see
`longbert_tf.lexical.fitting`).

    python -m experiments.fuse --model_dir=runs/codiesp_dx

Writes `MODEL_DIR/fusion/` (the term index, the fitted fusion with its
metrics and the evidence dictionary's, and the fused rankings), which
`experiments.export` then serves. Dev metrics are
cross-validated over dev's notes (`--folds`); test is scored by the fusion
fitted on all of dev, at the threshold tuned on dev.

    python -m experiments.fuse --model_dir=runs/codiesp_en --match_data_dir=data_es/codiesp_dx

matches and mines another dataset's copy of the run's notes (the same note ids):
here the Spanish originals with the annotators' evidence, for a run on the
English translation. That fusion is measured, not exported (an export reads one
text).

    python -m experiments.fuse --model_dir=runs/final --selection_dir=runs/codiesp_dx

gives a final run, whose dev notes trained (`data_prep.codiesp --dev_trains`),
the fusion weights and threshold of the fused run that held dev out, over the
final run's own term index; only test is scored.
"""

from absl import app, flags

from longbert_tf import run_folder
from longbert_tf.lexical import fitting

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Folder of a finished experiments.run.", required=True)
flags.DEFINE_integer("folds", 5, "Cross-validation folds over dev's notes (at least 2).")
flags.DEFINE_string(
    "match_data_dir",
    None,
    "A dataset of the run's notes in another form (e.g. the Spanish originals with their "
    "evidence, for a run on the English translation): its texts are matched and its training "
    "notes mined for the dictionary. Default: the run's dataset.",
)
flags.DEFINE_string(
    "selection_dir",
    None,
    "A fused run that held dev out: its weights and threshold are carried to --model_dir "
    "(whose dev trained) instead of fitting on dev.",
)


def main(argv):
    del argv
    if FLAGS.selection_dir:
        results = fitting.carry_fusion(FLAGS.model_dir, FLAGS.selection_dir, FLAGS.match_data_dir)
        results["dev"] = results["selection_dev"]
    else:
        results = fitting.fit_run_fusion(FLAGS.model_dir, FLAGS.folds, FLAGS.match_data_dir)
    rows = [("", results)]
    if "dictionary" in results:
        rows.append(("evidence dictionary alone, ", results["dictionary"]))
    for name, row in rows:
        for split in ("dev", "test"):
            scores = row[split]
            print(
                f"{name}{split}: micro F1 {scores['micro_f1']:.4f} (P "
                f"{scores['micro_precision']:.3f}, R {scores['micro_recall']:.3f}), MAP "
                f"{scores['map']:.4f}, unseen-code recall "
                f"{scores.get('unseen_code_recall', float('nan')):.3f}"
            )
    dev = f"dev is {FLAGS.folds}-fold cross-validated"
    if FLAGS.selection_dir:
        dev = f"dev is {FLAGS.selection_dir}'s, cross-validated"
    print(
        f"Fusion in {FLAGS.model_dir}/{run_folder.FUSION_DIR}; {dev}, test scored at "
        "dev's threshold"
    )


if __name__ == "__main__":
    app.run(main)
