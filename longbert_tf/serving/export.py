"""Serving SavedModels of finished runs: `export(model_dir, export_dir, inputs)` saves a
`coder.TextCoder` (`inputs="text"`; a `coder.TranslationCoder`, which takes the note and
its translation, for a run whose fusion matched another copy of its notes) or
`coder.Coder` (`"token_ids"`) with its signatures.

Folders follow TensorFlow Serving's layout: `export_dir` named by a number
(`exports/coder/3`) is that version; any other `export_dir` is a model base
folder, and the export becomes its next version (`exports/coder/1`, `2`, ...).
Nothing but an earlier export of this package at the same version is ever
replaced (`EXPORT_INFO` marks one).
"""

import os
import tempfile

from longbert_tf import files
from longbert_tf.data import dataset, descriptions
from longbert_tf.framework import tf
from longbert_tf.serving.coder import (
    MAX_CODES,
    Coder,
    TextCoder,
    TrainedModel,
    TranslationCoder,
    load_trained,
)

# Beside the SavedModel files: what was exported from which run (marks an export of this package).
EXPORT_INFO = "longbert_tf_export.json"


def _attach_code_files(module: tf.Module, trained: TrainedModel, scratch: str) -> None:
    """Gives the export its label list (`labels.txt`, the order of `probabilities`) and the
    dataset's descriptions of those codes (`descriptions.tsv`, when it has them) as assets, and
    the classification of its codes (`code_system`, "" when they are made up)."""
    labels_path = os.path.join(scratch, dataset.LABELS_FILE)
    files.write_text(labels_path, "".join(f"{code}\n" for code in trained.labels))
    module.labels_file = tf.saved_model.Asset(labels_path)
    dataset_descriptions = os.path.join(trained.config.dataset_dir, descriptions.DESCRIPTIONS_FILE)
    if os.path.exists(dataset_descriptions):
        known = descriptions.read_descriptions(dataset_descriptions)
        descriptions.write_descriptions(
            scratch, {code: known[code] for code in trained.labels if code in known}
        )
        module.descriptions_file = tf.saved_model.Asset(
            os.path.join(scratch, descriptions.DESCRIPTIONS_FILE)
        )
    module.code_system = tf.Variable(trained.config.preset.code_system, trainable=False)


def code_descriptions(loaded) -> tuple:
    """`({code: description}, code_system)` of a loaded export (empty for exports made before
    they carried them)."""
    code_system = loaded.code_system.numpy().decode() if hasattr(loaded, "code_system") else ""
    if not hasattr(loaded, "descriptions_file"):
        return {}, code_system
    path = loaded.descriptions_file.asset_path.numpy().decode()
    return descriptions.read_descriptions(path), code_system


def version_dir(export_dir: str) -> str:
    """The folder an export to `export_dir` writes: `export_dir` itself when its name is a
    version number, else the next version below it, a model base folder that must hold
    nothing but versions."""
    if os.path.basename(os.path.normpath(export_dir)).isdigit():
        return export_dir
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise FileExistsError(f"--export_dir={export_dir} is a file, not a folder")
    entries = os.listdir(export_dir) if os.path.isdir(export_dir) else []
    # Hidden entries are the temporaries of exports under way (see files.atomic_dir).
    foreign = sorted(entry for entry in entries if not entry.isdigit() and entry[:1] != ".")
    if foreign:
        raise FileExistsError(
            f"--export_dir={export_dir} holds {', '.join(foreign[:5])}: it is not a model base "
            "folder (version folders 1, 2, ... only), so nothing is written there; name a new "
            "or empty folder, or a version folder"
        )
    versions = [int(entry) for entry in entries if entry.isdigit()]
    return os.path.join(export_dir, str(max(versions, default=0) + 1))


def latest_version(export_dir: str) -> str:
    """The SavedModel folder of `export_dir`: itself when it holds one, else its highest
    version (as TensorFlow Serving picks)."""
    if os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        return export_dir
    versions = []
    if os.path.isdir(export_dir):
        versions = [
            int(entry)
            for entry in os.listdir(export_dir)
            if entry.isdigit() and os.path.exists(os.path.join(export_dir, entry, "saved_model.pb"))
        ]
    if not versions:
        raise FileNotFoundError(
            f"{export_dir} holds no SavedModel, neither itself nor in a version folder "
            "(1, 2, ...): pass a folder experiments.export wrote"
        )
    return os.path.join(export_dir, str(max(versions)))


def export(
    model_dir: str,
    export_dir: str,
    inputs: str = "text",
    max_codes: int = MAX_CODES,
    compute_dtype: str | None = None,
    with_fusion: bool = True,
) -> str:
    """Writes the serving SavedModel of a finished run (atomically) as a version of
    `export_dir` (`version_dir`) and returns the version's folder. Its products run in the
    run's compute dtype, or in `compute_dtype` (e.g. float32 for servers without bfloat16).
    A run's lexical fusion (`experiments.fuse`) is served with it unless `with_fusion` is
    False."""
    if inputs not in ("text", "token_ids"):
        raise ValueError(f"inputs={inputs!r}: choose text or token_ids")
    target = version_dir(export_dir)
    if os.path.isdir(target) and os.listdir(target):
        if not os.path.exists(os.path.join(target, EXPORT_INFO)):
            raise FileExistsError(
                f"{target} is not empty and not an export of this package: it is not replaced"
            )
    trained = load_trained(model_dir, compute_dtype, with_fusion)
    text_coder = TranslationCoder if trained.reads_translation else TextCoder
    module = (text_coder if inputs == "text" else Coder)(trained, max_codes)
    with (
        tempfile.TemporaryDirectory() as scratch,
        files.atomic_dir(target, (*files.SAVED_MODEL_ENTRIES, EXPORT_INFO)) as temporary,
    ):
        _attach_code_files(module, trained, scratch)
        tf.saved_model.save(module, temporary, signatures=module.signatures())
        info = dict(
            model_dir=os.path.abspath(model_dir),
            inputs=inputs,
            max_codes=max_codes,
            compute_dtype=trained.config.compute_dtype,
            fusion=trained.fusion is not None,
            translation=trained.reads_translation,
        )
        files.write_json(os.path.join(temporary, EXPORT_INFO), info)
    return target
