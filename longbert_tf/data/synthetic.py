"""Synthetic long clinical notes with ICD-9-style codes: the embedded default dataset.

Every code has an evidence phrase: a condition ("pancreatitis"), or for some
conditions two codes told apart by a qualifier ("acute pancreatitis" versus
"chronic pancreatitis", look-alikes of each other). A note assigned a code
mentions its phrase one to three times, each at a uniformly random position,
in a positive context ("treated for ..."). Notes also carry distractors:
negated mentions ("no evidence of ...") and family history mentions of codes
they do not have. Because evidence can sit anywhere, reading more of a note
pays off.

Lengths are long-tailed like MIMIC-III discharge summaries (lognormal, median
about 1,500 WordPiece tokens, about 12% beyond 4,096); codes are Zipf-distributed
with 5 to 15 per note. Everything is determined by the seed.

"""

import dataclasses

import numpy as np
import pandas as pd
from absl import logging

from longbert_tf.data import dataset, dataset_summary

CONDITIONS = (
    "pneumonia sepsis hypertension cardiomyopathy pancreatitis cholecystitis appendicitis "
    "diverticulitis cirrhosis hepatitis nephrolithiasis pyelonephritis cellulitis osteomyelitis "
    "endocarditis pericarditis myocarditis meningitis encephalopathy neuropathy retinopathy "
    "hypothyroidism hyperthyroidism hyponatremia hypernatremia hypokalemia hyperkalemia "
    "hypoglycemia anemia thrombocytopenia leukocytosis neutropenia coagulopathy hypotension "
    "tachycardia bradycardia syncope delirium dementia depression schizophrenia alcoholism "
    "obesity malnutrition dehydration hypoxia atelectasis emphysema bronchitis asthma "
    "pneumothorax ascites pancytopenia lymphoma leukemia melanoma sarcoidosis gout "
    "osteoporosis arthritis scoliosis hematuria proteinuria incontinence hydronephrosis "
    "glaucoma cataract dysphagia gastroparesis esophagitis gastritis colitis cholangitis "
    "peritonitis ileus psoriasis dermatitis urticaria anaphylaxis hypothermia rhabdomyolysis "
    "acidosis alkalosis uremia hyperlipidemia atherosclerosis aneurysm embolism thrombosis "
    "vasculitis angina migraine epilepsy parkinsonism myasthenia sinusitis pharyngitis "
    "tonsillitis otitis conjunctivitis keratitis uveitis"
).split()
PAIRED_QUALIFIERS = ("acute", "chronic")
POSITIVE_CONTEXTS = (
    "diagnosed with",
    "treated for",
    "consistent with",
    "found to have",
    "admitted with",
    "managed for",
    "course complicated by",
    "ongoing",
)
NEGATED_CONTEXTS = ("no evidence of", "negative for", "denies", "ruled out", "without")
FAMILY_CONTEXTS = ("family history of", "mother with", "father had", "sister with")
FILLER_WORDS = (
    "patient was seen on the ward and remained stable overnight with good oral intake "
    "vital signs were reviewed medications continued as before labs showed values within "
    "expected range plan discussed with team nursing notes reviewed pain controlled with "
    "analgesia ambulating independently tolerating diet follow up arranged in clinic next "
    "week blood pressure heart rate temperature oxygen saturation on room air chest clear "
    "abdomen soft nontender extremities warm imaging obtained results pending repeat "
    "morning physical therapy consulted social work involved discharge planning started "
    "home services daily weight monitored fluid balance even electrolytes repleted as "
    "needed wound clean dry intact dressing changed mobility improving appetite fair sleep "
    "adequate mood calm family updated at bedside questions answered consent obtained"
).split()


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Sizes of the synthetic dataset; lengths are in WordPiece tokens (about one per word)."""

    num_codes: int = 50
    num_train: int = 1600
    num_dev: int = 200
    num_test: int = 200
    median_tokens: int = 1500
    length_sigma: float = 0.85
    min_tokens: int = 80
    max_tokens: int = 12000
    min_codes_per_note: int = 5
    max_codes_per_note: int = 15
    zipf_exponent: float = 1.0
    paired_share: float = 0.3
    distractors_per_note: float = 4.0
    seed: int = 0

    def __post_init__(self):
        max_codes = len(CONDITIONS)
        if not self.max_codes_per_note <= self.num_codes <= max_codes:
            raise ValueError(
                f"num_codes={self.num_codes} must be between max_codes_per_note="
                f"{self.max_codes_per_note} and {max_codes}"
            )


@dataclasses.dataclass(frozen=True)
class CodeTable:
    """Codes (label order), their evidence phrases and Zipf sampling weights (summing to 1)."""

    codes: list
    phrases: dict
    frequencies: np.ndarray


def _icd9_style_code(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.15:
        return f"V{rng.integers(1, 90):02d}.{rng.integers(0, 10)}"
    if kind < 0.22:
        return f"E{rng.integers(800, 1000)}.{rng.integers(0, 10)}"
    category = f"{rng.integers(1, 1000):03d}"
    digits = rng.integers(1, 3)
    return f"{category}.{rng.integers(0, 10**digits):0{digits}d}"


def make_code_table(config: SyntheticConfig) -> CodeTable:
    """Draws the codes: a `paired_share` of them come as acute/chronic pairs of one condition."""
    rng = np.random.default_rng([config.seed, 0])
    conditions = iter([CONDITIONS[i] for i in rng.permutation(len(CONDITIONS))])
    num_paired = int(config.num_codes * config.paired_share) // 2 * 2
    phrases = []
    for _ in range(num_paired // 2):
        condition = next(conditions)
        phrases += [f"{qualifier} {condition}" for qualifier in PAIRED_QUALIFIERS]
    phrases += [next(conditions) for _ in range(config.num_codes - num_paired)]
    codes = []
    while len(codes) < config.num_codes:
        code = _icd9_style_code(rng)
        if code not in codes:
            codes.append(code)
    ranks = rng.permutation(config.num_codes) + 1
    weights = 1.0 / ranks.astype(np.float64) ** config.zipf_exponent
    order = np.argsort(codes)
    return CodeTable(
        codes=[codes[i] for i in order],
        phrases={codes[i]: phrases[i] for i in order},
        frequencies=(weights / weights.sum())[order],
    )


def _filler_sentence(rng: np.random.Generator) -> str:
    words = rng.choice(FILLER_WORDS, size=rng.integers(6, 19))
    if rng.random() < 0.15:
        words = np.append(words, [f"{rng.integers(90, 180)}/{rng.integers(50, 100)}"])
    return " ".join(words).capitalize() + "."


def _mention(rng: np.random.Generator, contexts, phrase: str) -> str:
    return f"{contexts[rng.integers(len(contexts))]} {phrase}".capitalize() + "."


def make_note(rng: np.random.Generator, table: CodeTable, config: SyntheticConfig):
    """Returns (text, codes) for one note."""
    num_tokens = int(
        np.clip(
            rng.lognormal(np.log(config.median_tokens), config.length_sigma),
            config.min_tokens,
            config.max_tokens,
        )
    )
    num_codes = rng.integers(config.min_codes_per_note, config.max_codes_per_note + 1)
    codes = sorted(
        rng.choice(table.codes, size=num_codes, replace=False, p=table.frequencies).tolist()
    )
    mentions = []
    for code in codes:
        for _ in range(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])):
            mentions.append(_mention(rng, POSITIVE_CONTEXTS, table.phrases[code]))
    unassigned = sorted(set(table.codes) - set(codes))
    for _ in range(rng.poisson(config.distractors_per_note)):
        code = unassigned[rng.integers(len(unassigned))]
        contexts = NEGATED_CONTEXTS if rng.random() < 0.67 else FAMILY_CONTEXTS
        mentions.append(_mention(rng, contexts, table.phrases[code]))
    sentences = []
    length = sum(len(m.split()) + 1 for m in mentions)
    while length < num_tokens:
        sentences.append(_filler_sentence(rng))
        length += len(sentences[-1].split()) + 1
    # Each mention goes to a uniformly random place between sentences.
    for mention in mentions:
        sentences.insert(rng.integers(len(sentences) + 1), mention)
    return " ".join(sentences), codes


def generate(config: SyntheticConfig):
    """Returns ({split: notes DataFrame}, labels) in the dataset format of `longbert_tf.data`."""
    table = make_code_table(config)
    sizes = {"train": config.num_train, "dev": config.num_dev, "test": config.num_test}
    splits = {}
    first_note, first_subject = 100000, 10000
    for split_index, (split, size) in enumerate(sizes.items()):
        rng = np.random.default_rng([config.seed, 1 + split_index])
        rows = []
        for index in range(size):
            text, codes = make_note(rng, table, config)
            # Three notes per patient; patients never cross splits.
            rows.append(
                dict(
                    note_id=str(first_note + index),
                    subject_id=str(first_subject + index // 3),
                    text=text,
                    codes=codes,
                )
            )
        splits[split] = pd.DataFrame(rows, columns=list(dataset.NOTE_COLUMNS))
        first_note += size
        first_subject += (size + 2) // 3
    return splits, table.codes


def prepare(out_dir: str, config: SyntheticConfig = SyntheticConfig()) -> str:
    """Writes the synthetic dataset to `out_dir/synthetic` and returns that folder.

    Each code's description is its evidence phrase; `summary.json` is written beside.
    """
    splits, labels = generate(config)
    phrases = make_code_table(config).phrases
    dataset_dir = dataset.write_dataset(f"{out_dir}/synthetic", splits, labels, phrases)
    result = dataset_summary.summarize(dataset_dir, dict(generator=dataclasses.asdict(config)))
    logging.info("%s", dataset_summary.format_summary(dataset_dir, result))
    return dataset_dir
