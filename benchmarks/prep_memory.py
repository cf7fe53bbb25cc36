"""Peak memory and time of `data_prep.mimic4` on generated tables of MIMIC-IV's size.

    python benchmarks/prep_memory.py                    # full MIMIC-IV scale (~3.5 GB of notes)
    python benchmarks/prep_memory.py --num_notes=20000  # quick

Writes `hosp/diagnoses_icd.csv.gz` and `note/discharge.csv.gz` in MIMIC-IV's
schema (331,793 discharge notes of about 10,500 characters in MIMIC-IV-Note
v2.2; 14 diagnosis rows per admission; 37% of admissions coded in ICD-10,
the rest ICD-9), then runs the preparation in a child process and prints its
peak resident memory and wall time.
"""

import csv
import gzip
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_notes", 331_793, "Discharge notes (one per admission).")
flags.DEFINE_integer("mean_chars", 10_500, "Mean characters per note.")
flags.DEFINE_float("icd10_share", 0.37, "Share of admissions coded in ICD-10.")
flags.DEFINE_integer("codes_per_admission", 14, "Diagnosis rows per admission.")
flags.DEFINE_string("work_dir", None, "Where to write the tables; default a temporary folder.")

WORDS = (
    "patient admitted with chest pain shortness of breath history hypertension diabetes "
    "medications continued labs stable discharged home follow up clinic imaging showed no "
    "acute process vital signs within normal limits plan discussed family"
).split()


def write_tables(mimic_dir: str, rng: np.random.Generator) -> int:
    """Writes the two tables; returns the characters of note text written."""
    os.makedirs(f"{mimic_dir}/hosp", exist_ok=True)
    os.makedirs(f"{mimic_dir}/note", exist_ok=True)
    pool = [
        " ".join(rng.choice(WORDS, size=max(50, int(rng.normal(FLAGS.mean_chars / 7, 300)))))
        for _ in range(500)
    ]
    total_chars = 0
    with (
        gzip.open(f"{mimic_dir}/note/discharge.csv.gz", "wt", compresslevel=1) as notes,
        gzip.open(f"{mimic_dir}/hosp/diagnoses_icd.csv.gz", "wt", compresslevel=1) as codes,
    ):
        note_writer, code_writer = csv.writer(notes), csv.writer(codes)
        note_writer.writerow(
            [
                "note_id",
                "subject_id",
                "hadm_id",
                "note_type",
                "note_seq",
                "charttime",
                "storetime",
                "text",
            ]
        )
        code_writer.writerow(["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"])
        for index in range(FLAGS.num_notes):
            subject_id, hadm_id = 10_000_000 + index // 3, 20_000_000 + index
            text = pool[index % len(pool)]
            total_chars += len(text)
            note_writer.writerow(
                [f"{subject_id}-DS-{index}", subject_id, hadm_id, "DS", 1, "", "", text]
            )
            icd10 = rng.random() < FLAGS.icd10_share
            for seq_num in range(1, FLAGS.codes_per_admission + 1):
                if icd10:
                    code = (
                        f"{'EIJKNRZ'[seq_num % 7]}{rng.integers(0, 100):02d}{rng.integers(0, 10)}"
                    )
                else:
                    code = f"{rng.integers(1, 1000):03d}{rng.integers(0, 10)}"
                code_writer.writerow([subject_id, hadm_id, seq_num, code, 10 if icd10 else 9])
    return total_chars


def main(argv):
    del argv
    with tempfile.TemporaryDirectory(dir=FLAGS.work_dir) as work_dir:
        started = time.time()
        text_chars = write_tables(f"{work_dir}/mimic", np.random.default_rng(0))
        print(
            f"tables: {FLAGS.num_notes:,} notes, {text_chars / 1e9:.2f} GB of note text, "
            f"written in {time.time() - started:.0f} s"
        )
        started = time.time()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "data_prep.mimic4",
                f"--mimic_dir={work_dir}/mimic",
                f"--out_dir={work_dir}/out",
            ],
            cwd=root,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"prepare time: {time.time() - started:.0f} s")
        print(f"peak memory: {peak_kib / 2**20:.2f} GiB")


if __name__ == "__main__":
    app.run(main)
