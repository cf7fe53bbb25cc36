"""What the term matcher knows of a note's language: its stop words, its plural endings,
whether accents are folded, and its negation and uncertainty cues with their scopes.

A forward cue (`sin` fiebre, `no` hematuria, `possible` pneumonia) covers up to
`term_matcher.CUE_SCOPE` following words, a backward cue (VIH `negativo`,
hepatitis `descartada`, fever `absent`) as many preceding words; a word may be
both (`negativo para` VIH). A scope ends at a sentence break or a terminator
(`pero`, `aunque`, `but`, `however`), as in NegEx and ConText. Cues are
written as the matcher sees words: lower case and, where the language folds
accents, without them (`descartandose`).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Language:
    """`plural`: an RE2 pattern whose group 1 is the word's singular form, or stem;
    `fold_accents`: á é í ó ú ü (and their grave, circumflex forms) become a e i o u, while
    ñ stays (año is not ano)."""

    name: str
    stop_words: frozenset
    forward_cues: frozenset
    backward_cues: frozenset
    terminators: frozenset
    plural: str
    fold_accents: bool


def _words(text: str) -> frozenset:
    return frozenset(text.split())


ENGLISH = Language(
    name="en",
    stop_words=_words(
        """a an and are as at be been by due elsewhere for from has have in into is its nec nos
        not of on or other site specified than that the their this to type unspecified was were
        which with"""
    ),
    forward_cues=_words(
        """absence absent denied denies excluded free negative no none ruled without possible
        probable suspected"""
    ),
    backward_cues=_words("absent excluded negative ruled unlikely"),
    terminators=_words("although but except however though yet"),
    # fractures -> fracture; not -ss, -is, -us: abscess, sepsis, humerus.
    plural=r"^(.{2,}[^isu])s$",
    fold_accents=False,
)

SPANISH = Language(
    name="es",
    stop_words=_words(
        """a al con de del e el en la las le lo los o para por que se su sus un una uno unos
        unas y tipo otro otra otros otras especificado especificada"""
    ),
    forward_cues=_words(
        """no sin ni niega niegan negaba nego negativo negativa negativos negativas ausencia
        descarta descartan descartar descartandose descartarse posible probable sospecha"""
    ),
    backward_cues=_words(
        """negativo negativa negativos negativas descarta descartado descartada descartados
        descartadas descartandose ausente ausentes negado negada"""
    ),
    terminators=_words("aunque embargo excepto pero salvo sino"),
    # Singular and plural meet at a stem without -es, -e or -s: lesion(es) -> lesion, fiebre(s)
    # -> fiebr, fractura(s) -> fractura; words of 3 letters stay (tos, mes).
    plural=r"^(.{3,}?)(?:es|e|s)$",
    fold_accents=True,
)

LANGUAGES = {language.name: language for language in (ENGLISH, SPANISH)}


def named(name: str) -> Language:
    """The language `name` (`LANGUAGES`), or a ValueError that lists them."""
    if name not in LANGUAGES:
        raise ValueError(f"language {name!r}: the term matcher knows {sorted(LANGUAGES)}")
    return LANGUAGES[name]
