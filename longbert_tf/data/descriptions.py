"""Codes as text: each code's description, as a dataset folder holds it.

A prepared dataset may hold `descriptions.tsv` beside `labels.txt`: one code
a line, a tab, then its description (e.g. `R50.9<TAB>Fever, unspecified`).
The `data_prep` modules write it (ICD-10-CM titles from `simple-icd-10-cm`,
MIMIC-III's own ICD-9 titles, the synthetic phrases). `--label_init=descriptions`
embeds them with the note encoder (`modeling.description_embeddings`).
"""

import importlib
import os

from longbert_tf import presets

DESCRIPTIONS_FILE = "descriptions.tsv"
# Embeddings already computed (`modeling.description_embeddings`), in a dataset folder.
EMBEDDING_CACHE_DIR = "description_cache"


def icd10cm():
    """`simple_icd_10_cm`, imported on first use: it parses the whole classification (2 s)."""
    return importlib.import_module("simple_icd_10_cm")


def read_descriptions(path: str) -> dict:
    """`{code: description}` from a tab-separated file (code, description; no header)."""
    descriptions = {}
    with open(path, encoding="utf-8") as descriptions_file:
        for line_number, line in enumerate(descriptions_file, start=1):
            code, tab, description = line.rstrip("\n").partition("\t")
            if not tab or not code.strip():
                raise ValueError(
                    f"{path}, line {line_number}: expected 'code<TAB>description', got {line!r:.80}"
                )
            descriptions[code.strip()] = description.strip()
    return descriptions


def describe(code: str, descriptions: dict, code_system: str) -> str:
    """A code's description: from `descriptions`, else, for an ICD-10-CM code (`code_system`,
    see `presets.DatasetPreset`), its title, else ''. ICD-9 codes such as V29.0 are valid
    ICD-10-CM syntax with another meaning: they never get ICD-10-CM titles."""
    if code in descriptions:
        return descriptions[code]
    if code_system == presets.ICD10CM and icd10cm().is_valid_item(code):
        return icd10cm().get_description(code)
    return ""


def title_code(code: str) -> str:
    """The ICD-10-CM code whose title describes `code`: a six-character code without its
    seventh character is titled by the code before its placeholder X's (S39.94X -> S39.94)."""
    return code.rstrip("X").rstrip(".") if len(code.replace(".", "")) == 6 else code


def icd10cm_terms(code: str) -> list:
    """The ICD-10-CM title, inclusion terms and "includes" notes of `code` (`title_code`),
    [] when unknown."""
    classification, item = icd10cm(), title_code(code)
    if not classification.is_valid_item(item):
        return []
    return [
        classification.get_description(item),
        *classification.get_inclusion_term(item),
        *classification.get_includes(item),
    ]


# What `icd10cm_code_text` can put in a code's description, in this order.
CODE_TEXT_PARTS = ("title", "category", "block", "inclusion")


def icd10cm_code_text(code: str, parts=("title",)) -> str:
    """A code's description from the ICD-10-CM code book: its `title`, its `category`'s
    title (when it is not one itself), its `block`'s title (e.g. "Hypertensive diseases") and
    its `inclusion` terms and includes notes, joined by "; " ("" when unknown)."""
    unknown = sorted(set(parts) - set(CODE_TEXT_PARTS))
    if unknown:
        raise ValueError(f"code text parts {unknown}: choose from {list(CODE_TEXT_PARTS)}")
    classification, item = icd10cm(), title_code(code)
    if not classification.is_valid_item(item):
        return ""
    ancestors = classification.get_ancestors(item)
    texts = dict(
        title=[classification.get_description(item)],
        category=[
            classification.get_description(a) for a in ancestors if classification.is_category(a)
        ],
        block=[
            classification.get_description(a).rsplit(" (", 1)[0]
            for a in ancestors
            if classification.is_block(a)
        ][:1],
        inclusion=icd10cm_terms(code)[1:],
    )
    return "; ".join(text for part in CODE_TEXT_PARTS if part in parts for text in texts[part])


def icd10cm_titles(codes) -> dict:
    """ICD-10-CM titles of the codes `simple-icd-10-cm` knows (the others are left out)."""
    classification = icd10cm()
    return {
        code: classification.get_description(code)
        for code in codes
        if classification.is_valid_item(code)
    }


def write_descriptions(dataset_dir: str, descriptions: dict) -> None:
    """Writes `descriptions.tsv` of a dataset folder (tabs and newlines in titles become spaces)."""
    lines = []
    for code, description in sorted(descriptions.items()):
        description = " ".join(description.split())
        if description:
            lines.append(f"{code}\t{description}\n")
    with open(os.path.join(dataset_dir, DESCRIPTIONS_FILE), "w", encoding="utf-8") as out:
        out.writelines(lines)


def code_descriptions(dataset_dir: str, labels: list) -> list:
    """The description of every code of `labels` ('' when there is none), in label order.

    Raises FileNotFoundError when the dataset has no `descriptions.tsv`, and
    ValueError when none of the codes has a description.
    """
    path = os.path.join(dataset_dir, DESCRIPTIONS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: label_init=descriptions needs the codes' descriptions; "
            "prepare the dataset again with its data_prep module (which writes them)"
        )
    descriptions = read_descriptions(path)
    texts = [descriptions.get(code, "") for code in labels]
    if not any(texts):
        raise ValueError(f"{path} describes none of the {len(labels)} codes of {dataset_dir}")
    return texts
