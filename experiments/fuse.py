"""Fuses a finished run's codes with lexical code matching, fitted on dev (see
`longbert_tf.training.lexical_fusion`).

    python -m experiments.fuse --model_dir=runs/codiesp_dx

Writes `MODEL_DIR/fusion/` (the term index and the fitted fusion with its
metrics), which `experiments.export` then serves. Dev metrics are
cross-validated over dev's notes (`--folds`); test is scored by the fusion
fitted on all of dev, at the threshold tuned on dev.
"""

from absl import app, flags

from longbert_tf.training import lexical_fusion

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Folder of a finished experiments.run.", required=True)
flags.DEFINE_integer("folds", 5, "Cross-validation folds over dev's notes (at least 2).")


def main(argv):
    del argv
    results = lexical_fusion.fit_run_fusion(FLAGS.model_dir, FLAGS.folds)
    for split in ("dev", "test"):
        scores = results[split]
        print(
            f"{split}: micro F1 {scores['micro_f1']:.4f} (P {scores['micro_precision']:.3f}, "
            f"R {scores['micro_recall']:.3f}), MAP {scores['map']:.4f}, unseen-code recall "
            f"{scores.get('unseen_code_recall', float('nan')):.3f}"
        )
    print(f"Fusion in {FLAGS.model_dir}/{lexical_fusion.FUSION_DIR}; dev is {FLAGS.folds}-fold "
          "cross-validated, test scored at dev's threshold")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
