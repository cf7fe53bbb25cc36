"""A text export loaded once, answering batches of notes with suggested codes, the codes just
under the threshold, and the evidence of each: what `experiments.predict` prints and the review
page (`experiments.review`) shows.

Evidence offsets are UTF-8 byte ranges, as the export returns them (the review page's API turns
them into code points: `review.server.note_for_api`). An export that reads each note's
translation too (`coder.TranslationCoder`) takes both: its matched terms are in the note, its
attention's tokens in the translation.
"""

import dataclasses

from longbert_tf.data import descriptions, tokenization
from longbert_tf.framework import tf
from longbert_tf.serving import coder, export

# Near misses: the most probable codes under the threshold, at least this fraction of it.
NEAR_MISS_FRACTION = 0.5
MAX_NEAR_MISSES = 5
# Notes per call of the export: a batch pads every note to the longest one.
BATCH_NOTES = 16


@dataclasses.dataclass
class Suggestion:
    """One code for one note. `byte_spans` `[(start, end)]`, strongest first, with
    `weights` (its label attention's share, 0-1), in the note or, when the export reads one,
    its translation; `matched_span` the byte range in the note of its longest matched term
    (fused exports), else None."""

    code: str
    probability: float
    description: str
    byte_spans: list
    weights: list
    matched_span: tuple | None


@dataclasses.dataclass
class NoteSuggestions:
    """A note's `codes` (reaching the threshold, most probable first) and `near_misses`
    (under it); `utf8` is the note as the export read it, `translation` its translation
    (UTF-8) when the export reads one, else None."""

    utf8: bytes
    codes: list
    near_misses: list
    translation: bytes | None = None


class Suggester:
    """A text-input export of `experiments.export` (a version folder or a model base folder,
    its highest version), with its codes' descriptions (`extra_descriptions` add or override
    some, see `descriptions.describe`)."""

    def __init__(self, export_dir: str, extra_descriptions: dict | None = None):
        self.path = export.latest_version(export_dir)
        self._loaded = tf.saved_model.load(self.path)
        signatures = self._loaded.signatures
        inputs = signatures["serving_default"].structured_input_signature[1]
        if "text" not in inputs:
            raise ValueError(
                f"{export_dir} takes token ids: predict and review need a text-input export "
                "(experiments.export --inputs=text)"
            )
        if coder.CODES_FROM not in signatures:
            raise ValueError(
                f"{self.path} was exported by an older version of longbert_tf, without the "
                f"{coder.CODES_FROM} signature that gives the near misses: export the run again "
                "(python -m experiments.export)"
            )
        self._codes_from = signatures[coder.CODES_FROM]
        # A TranslationCoder: the model reads each note's translation, the matcher the note.
        self.reads_translation = "translation" in inputs
        self.code_descriptions, self.code_system = export.code_descriptions(self._loaded)
        self.code_descriptions.update(extra_descriptions or {})
        self.labels = [code.decode() for code in self._loaded.labels.numpy()]
        self.threshold = self._loaded.threshold.numpy()  # float32, as the export compares
        self.vocab = tokenization.Vocab(
            self._loaded.vocab_file.asset_path.numpy().decode(),
            bool(self._loaded.do_lower_case.numpy()),
        )
        self.fingerprint = tf.saved_model.experimental.read_fingerprint(self.path).singleprint()
        # The export returns codes (and their evidence) down to the near misses; `codes` keeps
        # those reaching the stored threshold, as serving_default serves them.
        self._min_probability = tf.constant(self.threshold * NEAR_MISS_FRACTION, tf.float32)

    def describe(self, code: str) -> str:
        return descriptions.describe(code, self.code_descriptions, self.code_system)

    def suggest(self, notes: list, translations: list | None = None) -> list:
        """`NoteSuggestions` of each note (bytes or str; invalid UTF-8 is replaced, as the
        export does), `BATCH_NOTES` notes per call of the export. `translations`, one per
        note, are for an export that reads them (`reads_translation`), and only for it."""
        if self.reads_translation != (translations is not None):
            raise ValueError(
                f"{self.path} reads each note's translation too: give one per note"
                if self.reads_translation
                else f"{self.path} reads the notes alone: it takes no translations"
            )
        if translations is not None and len(translations) != len(notes):
            raise ValueError(f"{len(notes)} notes but {len(translations)} translations")
        utf8 = [valid_utf8(note) for note in notes]
        translated = [valid_utf8(text) for text in translations or []]
        found = []
        for first in range(0, len(utf8), BATCH_NOTES):
            batch = utf8[first : first + BATCH_NOTES]
            inputs = dict(text=tf.constant(batch))
            if translated:
                inputs["translation"] = tf.constant(translated[first : first + BATCH_NOTES])
            outputs = self._codes_from(**inputs, min_probability=self._min_probability)
            outputs = {key: value.numpy() for key, value in outputs.items()}
            for row, text in enumerate(batch):
                translation = translated[first + row] if translated else None
                found.append(self._note(outputs, row, text, translation))
        return found

    def _note(self, outputs: dict, row: int, text: bytes, translation) -> NoteSuggestions:
        codes, near_misses = [], []
        for k in range(outputs["num_codes"][row]):
            probability = outputs["code_probabilities"][row, k]
            found = [
                ((int(start), int(end)), float(weight))
                for start, end, weight in zip(
                    outputs["evidence_start"][row, k],
                    outputs["evidence_end"][row, k],
                    outputs["evidence_weight"][row, k],
                )
                if start >= 0
            ]
            matched = None
            if "match_start" in outputs and outputs["match_start"][row, k] >= 0:
                matched = (int(outputs["match_start"][row, k]), int(outputs["match_end"][row, k]))
            code = outputs["codes"][row, k].decode("utf-8")
            suggestion = Suggestion(
                code=code,
                probability=float(probability),
                description=self.describe(code),
                byte_spans=[span for span, _ in found],
                weights=[weight for _, weight in found],
                matched_span=matched,
            )
            if probability >= self.threshold:
                codes.append(suggestion)
            elif len(near_misses) < MAX_NEAR_MISSES:
                near_misses.append(suggestion)
        return NoteSuggestions(text, codes, near_misses, translation)


def valid_utf8(note) -> bytes:
    """`note` (bytes or str) as UTF-8 with invalid bytes replaced (U+FFFD), as exports read it."""
    raw = note if isinstance(note, bytes) else note.encode("utf-8")
    return raw.decode("utf-8", errors="replace").encode("utf-8")
