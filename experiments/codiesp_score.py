"""A fused CodiEsp run scored as the shared task scores it: CodiEsp-D run files and the
official rules (`longbert_tf.evaluation.codiesp_scoring`).

    python -m experiments.codiesp_score --model_dir=runs/codiesp_dx \
        --codiesp_dir=../shared/data/codiesp

Reads the run's fused rankings (`MODEL_DIR/fusion/rankings.jsonl.gz`, written
by `experiments.fuse`: dev's out-of-fold, test's from the fusion fitted on dev)
and writes, per split, `MODEL_DIR/fusion/codiesp/<split>D_run.tsv`: every case,
its codes most likely first, lower-cased (`n44.8`), as deep as MAP reads
(1,000 codes or the label space). F1, P and R count the codes at or above the
fusion's threshold (tuned on dev). Gold codes are the release's `<split>D.tsv`
lines of the split's cases (the held-out fifth of train reads `trainD.tsv`).
Valid codes: `--valid_codes` (the official `codiesp-D_codes.tsv`), else every
ICD-10-CM code CodiEsp can take (`data_prep.codiesp.icd10cm_space`) and every
code its annotators wrote (B20, R99 and others that the `simple-icd-10-cm`
edition lacks).

Prints, per split, the official MAP (over every case of the run: a case
without a gold diagnosis code scores 0) and micro F1, P, R; and MAP over the
cases with gold codes, the cases `metrics.json`'s MAP averages over.
"""

import glob
import gzip
import json
import os

from absl import app, flags

from data_prep import codiesp
from longbert_tf import run_folder
from longbert_tf.evaluation import codiesp_scoring
from longbert_tf.lexical import fusion

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Folder of a fused experiments.run.", required=True)
flags.DEFINE_string("codiesp_dir", "../shared/data/codiesp", "CodiEsp release folder (gold).")
flags.DEFINE_string(
    "valid_codes", None, "The official valid-code list; default: every ICD-10-CM code."
)
flags.DEFINE_list("splits", None, "The splits to score; default: every split of the rankings.")
RUN_FOLDER = "codiesp"


def read_rankings(path: str) -> dict:
    """`{split: {case_id: [(code, probability), ...]}}`, most likely first."""
    rankings = {}
    with gzip.open(path, "rt", encoding="utf-8") as rankings_file:
        for line in rankings_file:
            note = json.loads(line)
            rankings.setdefault(note["split"], {})[note["note_id"]] = note["top_codes"]
    return rankings


def release_gold(codiesp_dir: str) -> dict:
    """`{case_id: [code, ...]}` of every `<split>D.tsv` of the release."""
    gold = {}
    for path in sorted(glob.glob(os.path.join(codiesp_dir, "*", "*D.tsv"))):
        gold.update(codiesp_scoring.read_gold(path))
    return gold


def score(rankings: dict, gold: dict, valid_codes: set, threshold: float) -> dict:
    """The official scores of one split's `rankings` (`read_rankings`)."""
    ranked = {case: [code for code, _ in codes] for case, codes in rankings.items()}
    predicted = {
        case: [code for code, probability in codes if probability >= threshold]
        for case, codes in rankings.items()
    }
    split_gold = {case: gold[case] for case in rankings if case in gold}
    precision, recall, f1 = codiesp_scoring.micro_scores(split_gold, predicted, valid_codes)
    coded = {case: codes for case, codes in ranked.items() if case in split_gold}
    return dict(
        map=codiesp_scoring.mean_average_precision(split_gold, ranked, valid_codes),
        micro_f1=f1,
        micro_precision=precision,
        micro_recall=recall,
        map_of_coded_cases=codiesp_scoring.mean_average_precision(split_gold, coded, valid_codes),
        cases=len(ranked),
        cases_without_gold=len(ranked) - len(coded),
    )


def main(argv):
    del argv
    fusion_dir = os.path.join(FLAGS.model_dir, run_folder.FUSION_DIR)
    rankings_path = os.path.join(fusion_dir, run_folder.RANKINGS_FILE)
    if not os.path.exists(rankings_path):
        raise app.UsageError(f"{rankings_path} is missing: fuse the run first (experiments.fuse)")
    threshold = fusion.Fusion.load(os.path.join(fusion_dir, run_folder.FUSION_FILE)).threshold
    gold = release_gold(FLAGS.codiesp_dir)
    if FLAGS.valid_codes:
        valid_codes = codiesp_scoring.read_valid_codes(FLAGS.valid_codes)
    else:
        written = [code for codes in gold.values() for code in codes]
        valid_codes = {code.lower() for code in [*codiesp.icd10cm_space(), *written]}
    os.makedirs(os.path.join(fusion_dir, RUN_FOLDER), exist_ok=True)
    rankings = read_rankings(rankings_path)
    for split in FLAGS.splits or list(rankings):
        if split not in rankings:
            raise app.UsageError(f"{rankings_path} ranks {sorted(rankings)}, not {split}")
        split_rankings = rankings[split]
        run_path = os.path.join(fusion_dir, RUN_FOLDER, f"{split}D_run.tsv")
        codiesp_scoring.write_run(
            run_path, {case: [code for code, _ in codes] for case, codes in split_rankings.items()}
        )
        scores = score(split_rankings, gold, valid_codes, threshold)
        print(
            f"{split} (official rules, {scores['cases']} cases): MAP {scores['map']:.4f}, "
            f"micro F1 {scores['micro_f1']:.4f} (P {scores['micro_precision']:.3f}, "
            f"R {scores['micro_recall']:.3f}); MAP of the "
            f"{scores['cases'] - scores['cases_without_gold']} cases with gold codes "
            f"{scores['map_of_coded_cases']:.4f}; run file {run_path}"
        )


if __name__ == "__main__":
    app.run(main)
