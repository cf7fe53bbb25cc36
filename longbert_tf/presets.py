"""Dataset presets: each dataset's default encoder, input length, schedule and recipe."""

import dataclasses

PAPER_ENCODER = "https://tfhub.dev/tensorflow/small_bert/bert_en_uncased_L-2_H-256_A-4/2"
RANDOM_ENCODER = "random:L-2_H-256_A-4"


@dataclasses.dataclass(frozen=True)
class DatasetPreset:
    """Defaults of one dataset.

    Attributes:
      num_labels: codes in the paper's Table 1 (None where the paper has no
        such dataset); a prepared `labels.txt` always takes precedence.
      learning_rate: Adam's; the paper's 2e-4 except where a randomly
        initialised encoder must learn within a CPU budget.
      recipe: other `ExperimentConfig` fields of this dataset's default run
        (e.g. a fine-tuning schedule); flags given on the command line win.
      code_system: the classification its codes come from (`ICD10CM`,
        `ICD9CM`; "" for made-up codes): whose titles may describe them.
    """

    name: str
    num_labels: int | None
    seq_len: int
    encoder: str
    train_steps: int
    eval_every: int
    learning_rate: float = 2e-4
    recipe: dict = dataclasses.field(default_factory=dict)
    code_system: str = ""


ICD9CM, ICD10CM = "ICD-9-CM", "ICD-10-CM"
# The paper's recipe on MIMIC (the paper's encoder, 4,096 tokens, 1M steps).
MIMIC = dict(
    seq_len=4096,
    encoder=PAPER_ENCODER,
    train_steps=1_000_000,
    eval_every=10_000,
)
PRESETS = {
    preset.name: preset
    for preset in [
        DatasetPreset(
            name="synthetic",
            num_labels=50,
            seq_len=2048,
            encoder=RANDOM_ENCODER,
            train_steps=400,
            eval_every=100,
            learning_rate=1e-3,
        ),
        DatasetPreset(name="mimic3_full", num_labels=8921, code_system=ICD9CM, **MIMIC),
        DatasetPreset(name="mimic3_50", num_labels=50, code_system=ICD9CM, **MIMIC),
        DatasetPreset(name="mimic4_dx", num_labels=72748, code_system=ICD10CM, **MIMIC),
        # The best row of benchmarks/codiesp_table.py: pretrained MiniLM, each code's label
        # attention conditioned on its ICD-10-CM title, a separate encoder rate with warmup
        # and linear decay.
        DatasetPreset(
            name="codiesp_dx",
            num_labels=None,
            seq_len=1024,
            encoder="minilm",
            train_steps=2000,
            eval_every=250,
            learning_rate=1e-3,
            recipe=dict(
                segment_length=128,
                encoder_learning_rate=1e-4,
                warmup_steps=100,
                lr_schedule="linear",
                label_init="descriptions",
                attend_special_tokens=False,
            ),
            code_system=ICD10CM,
        ),
    ]
}
