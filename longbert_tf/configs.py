"""Experiment configuration: frozen dataclasses, and `from_preset`, the one path from a dataset
preset and the settings a user gave to an `ExperimentConfig`."""

import dataclasses
import os

from longbert_tf.presets import PRESETS, DatasetPreset

MODELS = ("longbert", "caml")
LR_SCHEDULES = ("constant", "linear", "cosine")
LABEL_INITS = ("random", "descriptions")
# Encoder and label attention products: "auto" is bfloat16 where the hardware has it (`hardware`).
MATMUL_DTYPES = ("float32", "bfloat16", "float16")
COMPUTE_DTYPES = ("auto", *MATMUL_DTYPES)
# Set when a run starts, not chosen: what a run's weights belong to (see `runs.bind_run`).
RUN_BINDING = ("vocab_fingerprint", "labels_fingerprint")
# How and where a run runs, not what it computes: a resumed run may change them.
RUNTIME_FIELDS = ("model_dir", "data_dir", "log_every", "checkpoint_every", "strategy", "tpu")
# Codes per chunk of label attention: None computes all codes at once.
LABEL_ATTENTION_CHUNK_SIZES = {"dense": None, "chunked": 1024}
CAML_MAX_WORDS = 2500
CAML_LEARNING_RATE = 1e-4  # Mullenbach et al.'s, for MIMIC-III full and top-50
CAML_BATCH_SIZE = 16


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    """How a note's WordPiece tokens become encoder segments.

    Each segment is one BERT input of `segment_length` positions:
    `[CLS]`, up to `segment_length - 2` note tokens, `[SEP]`, then padding.
    `seq_len` counts encoder positions, so a note is read through at most
    `seq_len // segment_length` segments. Consecutive segments start
    `segment_stride` note tokens apart; a stride below `segment_length - 2`
    makes them overlap.
    """

    seq_len: int
    segment_length: int = 512
    segment_stride: int | None = None

    def __post_init__(self):
        if self.segment_length < 3:
            raise ValueError(f"segment_length={self.segment_length} leaves no room for tokens")
        if self.seq_len < self.segment_length or self.seq_len % self.segment_length:
            multiple = max(1, round(self.seq_len / self.segment_length)) * self.segment_length
            raise ValueError(
                f"seq_len={self.seq_len} is not a positive multiple of segment_length="
                f"{self.segment_length}; use e.g. seq_len={multiple}"
            )
        if not 1 <= self.stride <= self.content_length:
            raise ValueError(
                f"segment_stride={self.segment_stride} must be between 1 and "
                f"segment_length - 2 = {self.content_length}"
            )

    @property
    def content_length(self) -> int:
        """Note tokens per segment (the rest is `[CLS]` and `[SEP]`)."""
        return self.segment_length - 2

    @property
    def stride(self) -> int:
        return self.segment_stride or self.content_length

    @property
    def max_segments(self) -> int:
        return self.seq_len // self.segment_length

    @property
    def max_note_tokens(self) -> int:
        """Leading note tokens that can be read; the rest of a note is cut off."""
        return (self.max_segments - 1) * self.stride + self.content_length


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything one training and evaluation run depends on.

    `model` is `longbert` (which needs `encoder` and `segments`) or `caml`
    (which needs `max_words` and ignores both). `encoder_vocab` gives a
    `random:` encoder another encoder's vocabulary (see `encoder_specs.resolve`).
    `max_notes` keeps only the first notes of every split, to shrink a run for
    a CPU. The latest state is checkpointed every `checkpoint_every` steps
    (default: every evaluation).
    `label_attention` (dense or chunked) and `compute_dtype` (of the matrix
    products of label attention and of an encoder this package built or
    converted; "auto" is resolved when the run starts, see `hardware`) choose
    how the model is computed; results are the same up to floating point
    (see `label_attention.LabelAttention`). `strategy` (see
    `distribute`) spreads each global batch of `batch_size` notes over the
    replicas, in `grad_accum_steps` micro-batches each. The label head learns at
    `learning_rate`, the encoder at `encoder_learning_rate` (default: the same),
    both on `lr_schedule` after `warmup_steps`, with decoupled `weight_decay`
    (see `optimization`); the defaults are the paper's constant Adam.
    `label_init="descriptions"` conditions every code's label attention on
    its description (see `label_attention.LabelAttention`); `normalize_tokens` and
    `attend_special_tokens=False` change what label attention reads (see
    `longbert.LongBERT`). The defaults are the paper's model.
    `vocab_fingerprint` and `labels_fingerprint` are set when a run starts
    (see `runs.bind_run`): the tokenization and the label order its
    weights belong to, which resuming and exporting insist on.
    """

    dataset: str
    data_dir: str
    model_dir: str
    encoder: str | None
    segments: SegmentConfig | None
    batch_size: int
    learning_rate: float
    train_steps: int
    eval_every: int
    seed: int = 0
    encoder_layers: int | None = None
    encoder_vocab: str | None = None
    model: str = "longbert"
    max_words: int | None = None
    max_notes: int | None = None
    checkpoint_every: int | None = None
    label_attention: str = "chunked"
    compute_dtype: str = "auto"
    strategy: str = "auto"
    tpu: str | None = None
    grad_accum_steps: int = 1
    log_every: int = 20
    encoder_learning_rate: float | None = None
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    label_init: str = "random"
    normalize_tokens: bool = False
    attend_special_tokens: bool = True
    vocab_fingerprint: str | None = None
    labels_fingerprint: str | None = None

    def __post_init__(self):
        """Checks every field: training settings here, the model's in `_check_model`."""
        if self.dataset not in PRESETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {sorted(PRESETS)}")
        for name in ("batch_size", "train_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be positive")
        if self.encoder_learning_rate is not None and not self.encoder_learning_rate > 0:
            raise ValueError(f"encoder_learning_rate={self.encoder_learning_rate} must be positive")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r}: choose from {LR_SCHEDULES}")
        if not 0 <= self.warmup_steps <= self.train_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} must be between 0 and train_steps="
                f"{self.train_steps}"
            )
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be at least 0")
        if self.encoder_layers is not None and self.encoder_layers < 1:
            raise ValueError(f"encoder_layers={self.encoder_layers} must be at least 1")
        if self.grad_accum_steps < 1 or self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"grad_accum_steps={self.grad_accum_steps} must be at least 1 and divide "
                f"batch_size={self.batch_size}"
            )
        for name in ("max_notes", "checkpoint_every", "log_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        self._check_model()

    def _check_model(self):
        """The model, its input and its label-attention options fit together."""
        if self.model == "longbert" and (self.encoder is None or self.segments is None):
            raise ValueError("model longbert needs an encoder and a segment configuration")
        if self.model == "caml" and not (self.max_words or 0) >= 1:
            raise ValueError(f"model caml needs max_words >= 1, got {self.max_words}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {MODELS}")
        if self.label_attention not in LABEL_ATTENTION_CHUNK_SIZES:
            choices = sorted(LABEL_ATTENTION_CHUNK_SIZES)
            raise ValueError(f"label_attention={self.label_attention!r}: choose from {choices}")
        if self.label_init not in LABEL_INITS:
            raise ValueError(f"label_init={self.label_init!r}: choose from {LABEL_INITS}")
        longbert_options = dict(
            label_init=self.label_init != "random",
            normalize_tokens=self.normalize_tokens,
            attend_special_tokens=not self.attend_special_tokens,
        )
        if self.model == "caml" and any(longbert_options.values()):
            chosen = [name for name, value in longbert_options.items() if value]
            raise ValueError(f"{', '.join(chosen)}: LongBERT options, not for model caml")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype={self.compute_dtype!r}: choose from {COMPUTE_DTYPES}")

    @property
    def matmul_dtype(self) -> str:
        """The resolved `compute_dtype`, one of `MATMUL_DTYPES`; "auto" is refused."""
        if self.compute_dtype == "auto":
            raise ValueError(
                "compute_dtype=auto is resolved when a run starts: see runs.resolve_compute_dtype"
            )
        return self.compute_dtype

    @property
    def label_attention_args(self) -> dict:
        return dict(
            chunk_size=LABEL_ATTENTION_CHUNK_SIZES[self.label_attention],
            matmul_dtype=self.matmul_dtype,
            described=self.label_init == "descriptions",
        )

    @property
    def input_length(self) -> int:
        """What a note is cut to: encoder positions (LongBERT) or words (CAML)."""
        return self.max_words if self.model == "caml" else self.segments.seq_len

    @property
    def preset(self) -> DatasetPreset:
        return PRESETS[self.dataset]

    @property
    def dataset_dir(self) -> str:
        return os.path.join(self.data_dir, self.dataset)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ExperimentConfig":
        values = dict(values)
        if values.get("segments") is not None:
            values["segments"] = SegmentConfig(**values["segments"])
        return cls(**values)


def paper_batch_size(seq_len: int) -> int:
    """The paper's batch size: 4 notes, 2 at 8,192 tokens."""
    return 2 if seq_len >= 8192 else 4


SEGMENT_FIELDS = ("segment_length", "segment_stride")
# What CAML does not read: settings of LongBERT's encoder and segments.
CAML_IGNORES = ("encoder", "encoder_layers", "encoder_vocab", *SEGMENT_FIELDS)


def from_preset(
    dataset: str,
    *,
    model: str = "longbert",
    seq_len: int | None = None,
    data_dir: str = "data",
    model_dir: str | None = None,
    **given,
) -> ExperimentConfig:
    """The config of one run of a dataset preset (`presets.PRESETS`).

    Every field comes from, in this order: `given` (`ExperimentConfig` fields
    and `segment_length`/`segment_stride`; None counts as not given), the
    preset's recipe (LongBERT only), the model's defaults (CAML: Mullenbach et
    al.'s batch 16, Adam 1e-4, 2,500 words; LongBERT: the preset's encoder and
    learning rate, the paper's batch), the preset's schedule, the dataclass
    defaults. `seq_len` defaults to the preset's; `model_dir` to
    `runs/DATASET_seqN` (CAML: `runs/DATASET_camlW`).
    """
    if dataset not in PRESETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[dataset]
    given = {name: value for name, value in given.items() if value is not None}
    fields = {field.name for field in dataclasses.fields(ExperimentConfig)}
    unknown = sorted(set(given) - fields - set(SEGMENT_FIELDS))
    if unknown or {"dataset", "model", "segments", "data_dir", "model_dir"} & set(given):
        raise ValueError(f"{unknown or sorted(given)}: not settings from_preset takes")
    if model == "caml":
        values = dict(
            batch_size=CAML_BATCH_SIZE, learning_rate=CAML_LEARNING_RATE, max_words=CAML_MAX_WORDS
        )
        values.update({name: value for name, value in given.items() if name not in CAML_IGNORES})
        values.update(encoder=None, segments=None)
        length_name = f"caml{values['max_words']}"
    else:
        seq_len = seq_len or preset.seq_len
        values = dict(
            encoder=preset.encoder,
            learning_rate=preset.learning_rate,
            batch_size=paper_batch_size(seq_len),
            **preset.recipe,
        )
        values.update(given)
        values.pop("max_words", None)
        segment_length = values.pop("segment_length", SegmentConfig.segment_length)
        values["segments"] = SegmentConfig(
            seq_len, segment_length, values.pop("segment_stride", None)
        )
        length_name = f"seq{seq_len}"
    values.setdefault("train_steps", preset.train_steps)
    values.setdefault("eval_every", preset.eval_every)
    model_dir = model_dir or os.path.join("runs", f"{dataset}_{length_name}")
    return ExperimentConfig(
        dataset=dataset, data_dir=data_dir, model_dir=model_dir, model=model, **values
    )
