"""The best CodiEsp row from the raw release folder: prepare, pretrain, train, evaluate.

    python benchmarks/codiesp_best.py --codiesp_dir=../shared/data/codiesp --work_dir=runs/best

Runs, from the repository root, the commands it prints: `data_prep.codiesp`
(train to fit, dev to pick the checkpoint and threshold; the release's
`test/` when present, else a fifth of train held out; `--language`: the
Spanish originals with the annotators' evidence, or the English translation),
then `experiments.run --dataset=codiesp_dx` with the preset's recipe (MiniLM,
description-conditioned label attention, fine-tuning schedule; see
`presets.PRESETS`) on the notes `--model_language` names: by default, with
Spanish notes, the model reads the organisers' English translation of each
(prepared too), whose MiniLM ranks better than on the Spanish text, while the
dictionary matches the Spanish original; the export then takes both
(`coder.TranslationCoder`). In-domain masked-LM pretraining of MiniLM on the training
notes and the release's unannotated `background/` cases comes first when
`--pretrain_steps` is above 0 (it lowered dev micro F1 in
`benchmarks/codiesp_table.py`, so the best row does not pretrain). Then
`experiments.fuse` fuses the run's codes with lexical code matching (code-book
terms, variants mined from the training notes and, in Spanish, the dictionary
of the annotators' mentions), fitted on dev: its dev figures are
cross-validated over dev's notes (`--nofusion` skips it), the dictionary of
each dev fold mined from train and the other folds. Ends by printing `dev
micro F1: X` and `dev MAP: X` and, when the release has `test/`, the same two
lines for test; `experiments.codiesp_score` writes the CodiEsp-D run files of
those splits and prints their scores by the shared task's rules; then each
part's minutes, and with `--export_dir`, the serving export (raw text in; the
fused coder) is written last, as the next version of that model base folder
(or as the version it names; see `experiments.export`). Steps already done in
`--work_dir` are reused.

By default (`--final`) that run only selects: the final model then trains on train
and dev (the CodiEsp protocol allows it) for the selection run's best step
count, and carries its fusion weights and threshold. Dev lines stay the
selection run's (cross-validated); test lines, and the export, are the final
model's.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from data_prep import codiesp
from longbert_tf import run_folder
from longbert_tf.lexical import fitting

FLAGS = flags.FLAGS
flags.DEFINE_string("codiesp_dir", "../shared/data/codiesp", "CodiEsp release folder.")
flags.DEFINE_string("work_dir", "runs/codiesp_best", "Data, encoder and run folders go here.")
flags.DEFINE_integer(
    "pretrain_steps", 0, "Masked-LM steps (16 windows of 128 positions each) first; 0: none."
)
flags.DEFINE_enum(
    "label_space", "train", ["train", "icd10cm"], "data_prep.codiesp's --label_space."
)
flags.DEFINE_enum(
    "language",
    "es",
    ["es", "en"],
    "data_prep.codiesp's --language: the Spanish originals with the annotators' evidence, or "
    "the English translation.",
)
flags.DEFINE_enum(
    "model_language",
    "en",
    ["es", "en"],
    "What the model reads: the English translation (en) or the notes of --language; with "
    "--language=es and en, the fusion matches the Spanish and the export takes both texts.",
)
flags.DEFINE_multi_string(
    "run_flag",
    [],
    "Passed on to experiments.run (e.g. --run_flag=--train_steps=500) after the preset's recipe.",
)
flags.DEFINE_bool("fusion", True, "Fuse the run's codes with term matching (experiments.fuse).")
flags.DEFINE_integer("folds", 5, "experiments.fuse's --folds: cross-validation folds over dev.")
flags.DEFINE_bool(
    "final",
    True,
    "Then train the final model on train and dev (data_prep.codiesp --dev_trains) for the "
    "selection run's best step count, with its fusion and threshold; it is scored on test and "
    "exported. --nofinal: the selection run is the final model.",
)
flags.DEFINE_string(
    "export_dir",
    None,
    "If set, the best run's serving export (raw text in) becomes the next version of this folder.",
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


MINUTES = {}


def run(*arguments: str) -> None:
    """Runs `python -m ...` from the repository root, or exits with its status; its minutes
    go to `MINUTES`."""
    command = [sys.executable, "-m", *arguments]
    print("$", " ".join(command), flush=True)
    started = time.time()
    status = subprocess.run(command, cwd=ROOT).returncode
    if status:
        raise SystemExit(f"{arguments[0]} failed with exit status {status}")
    MINUTES[arguments[0]] = MINUTES.get(arguments[0], 0) + (time.time() - started) / 60


def fusion_file(model_dir: str) -> str:
    return os.path.join(model_dir, run_folder.FUSION_DIR, run_folder.FUSION_FILE)


def needs_fusion(model_dir: str) -> bool:
    """Whether the run has no fusion, or one fitted on another checkpoint than its best."""
    return not os.path.exists(fusion_file(model_dir)) or bool(fitting.stale_fusion(model_dir))


def prepared(codiesp_dir: str, work_dir: str, language: str, final: bool = False) -> str:
    """The data folder of `data_prep.codiesp` in `language` (`final`: with dev joined to
    train, `--dev_trains`), prepared once."""
    data_dir = os.path.join(work_dir, f"data_{FLAGS.label_space}_{language}")
    data_dir += "_final" if final else ""
    if not os.path.exists(os.path.join(data_dir, "codiesp_dx", "descriptions.tsv")):
        run(
            "data_prep.codiesp",
            f"--codiesp_dir={codiesp_dir}",
            f"--out_dir={data_dir}",
            f"--label_space={FLAGS.label_space}",
            f"--language={language}",
            *(["--dev_trains"] if final else []),
        )
    return data_dir


def match_flags(codiesp_dir: str, work_dir: str, final: bool = False) -> list:
    """`experiments.fuse`'s `--match_data_dir` when the model reads a translation."""
    if FLAGS.model_language == FLAGS.language:
        return []
    match_dir = prepared(codiesp_dir, work_dir, FLAGS.language, final)
    return [f"--match_data_dir={os.path.join(match_dir, 'codiesp_dx')}"]


def train_final(codiesp_dir: str, work_dir: str, selection_dir: str, encoder: list) -> str:
    """Trains the final model on train and dev for the selection run's best step count and
    carries its fusion and threshold (`experiments.fuse --selection_dir`); returns its folder."""
    with open(os.path.join(selection_dir, run_folder.METRICS_FILE)) as metrics_file:
        steps = json.load(metrics_file)["best_step"]
    final_data = prepared(codiesp_dir, work_dir, FLAGS.model_language, final=True)
    final_dir = f"{selection_dir}_final"
    run(
        "experiments.run",
        "--dataset=codiesp_dx",
        f"--data_dir={final_data}",
        f"--model_dir={final_dir}",
        *encoder,
        *FLAGS.run_flag,
        f"--train_steps={steps}",
        f"--eval_every={steps}",
    )
    if needs_fusion(final_dir):
        run(
            "experiments.fuse",
            f"--model_dir={final_dir}",
            f"--selection_dir={selection_dir}",
            *match_flags(codiesp_dir, work_dir, final=True),
        )
    return final_dir


def main(argv):
    del argv
    if FLAGS.final and not FLAGS.fusion:
        raise app.UsageError(
            "--final carries the fused selection run's threshold to the final model: it needs "
            "--fusion (the final model's own dev threshold would be tuned on notes it trained "
            "on); pass --nofinal with --nofusion"
        )
    if FLAGS.language == "en" and FLAGS.model_language == "es":
        raise app.UsageError("--language=en has no Spanish for the model: --model_language=en")
    if FLAGS.model_language != FLAGS.language and not FLAGS.fusion:
        raise app.UsageError(
            "--model_language differs from --language only to fuse the model with the "
            f"dictionary of the original notes: pass --model_language={FLAGS.language} with "
            "--nofusion"
        )
    codiesp_dir = os.path.abspath(FLAGS.codiesp_dir)
    work_dir = os.path.abspath(FLAGS.work_dir)
    name = f"{FLAGS.label_space}_{FLAGS.language}"
    name += "_translation" if FLAGS.model_language != FLAGS.language else ""
    data_dir = prepared(codiesp_dir, work_dir, FLAGS.model_language)
    encoder = []
    background = os.path.join(codiesp_dir, "background", codiesp.TEXT_FOLDERS[FLAGS.model_language])
    if FLAGS.pretrain_steps and os.path.isdir(background):
        pretrain_dir = os.path.join(work_dir, "pretrain")
        encoder_dir = os.path.join(pretrain_dir, "encoder")
        if not os.path.exists(encoder_dir):
            run(
                "experiments.pretrain",
                "--encoder=minilm",
                "--dataset=codiesp_dx",
                f"--data_dir={data_dir}",
                f"--text_dir={background}",
                f"--out_dir={pretrain_dir}",
                f"--train_steps={FLAGS.pretrain_steps}",
            )
        encoder = [f"--encoder={encoder_dir}"]
    model_dir = os.path.join(work_dir, f"run_{name}")
    run(
        "experiments.run",
        "--dataset=codiesp_dx",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        *encoder,
        *FLAGS.run_flag,
    )
    results_file = os.path.join(model_dir, run_folder.METRICS_FILE)
    if FLAGS.fusion:
        results_file = fusion_file(model_dir)
        if needs_fusion(model_dir):
            run(
                "experiments.fuse",
                f"--model_dir={model_dir}",
                f"--folds={FLAGS.folds}",
                *match_flags(codiesp_dir, work_dir),
            )
    with open(results_file) as metrics_file:
        results = json.load(metrics_file)
    selection_dir = model_dir
    if FLAGS.final:
        model_dir = train_final(codiesp_dir, work_dir, model_dir, encoder)
        with open(fusion_file(model_dir)) as metrics_file:
            results["test"] = json.load(metrics_file)["test"]
    splits = ["dev"] + (["test"] if os.path.isdir(os.path.join(codiesp_dir, "test")) else [])
    for split in splits:
        print(f"{split} micro F1: {results[split]['micro_f1']:.4f}")
        print(f"{split} MAP: {results[split]['map']:.4f}")
    if FLAGS.fusion:  # the dev lines' run, and the test lines'
        scored = {selection_dir: ["dev"]}
        scored.setdefault(model_dir, []).extend(splits[1:])
        for scored_dir, scored_splits in scored.items():
            if not scored_splits:
                continue
            run(
                "experiments.codiesp_score",
                f"--model_dir={scored_dir}",
                f"--codiesp_dir={codiesp_dir}",
                f"--splits={','.join(scored_splits)}",
            )
    if FLAGS.export_dir:
        run(
            "experiments.export",
            f"--model_dir={model_dir}",
            f"--export_dir={os.path.abspath(FLAGS.export_dir)}",
        )
    for part, minutes in MINUTES.items():
        print(f"{part}: {minutes:.1f} min")


if __name__ == "__main__":
    app.run(main)
