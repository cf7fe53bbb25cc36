"""How each dataset preset is prepared, and making sure it is before an experiment starts."""

import os

from longbert_tf.configs import ExperimentConfig
from longbert_tf.data import dataset, synthetic

_MIMIC3 = (
    "python -m data_prep.mimic3 --mimic_dir=MIMIC_III --splits_dir=CAML_SPLITS --out_dir=DATA_DIR"
)
# The command that writes each preset's dataset folder; DATA_DIR stands for --data_dir.
PREPARE_COMMANDS = {
    "synthetic": "python -m data_prep.synthetic --out_dir=DATA_DIR",
    "mimic3_full": _MIMIC3,
    "mimic3_50": _MIMIC3,
    "mimic4_dx": "python -m data_prep.mimic4 --mimic_dir=MIMIC_IV --out_dir=DATA_DIR",
    "codiesp_dx": (
        "python -m data_prep.codiesp --codiesp_dir=../shared/data/codiesp --out_dir=DATA_DIR"
    ),
}


def prepare_command(dataset_name: str, data_dir: str) -> str:
    """The command that prepares `dataset_name` under `data_dir`."""
    return PREPARE_COMMANDS[dataset_name].replace("DATA_DIR", data_dir)


def not_prepared(dataset_name: str, data_dir: str) -> SystemExit:
    """The exit for a preset whose dataset folder is missing, naming the command that writes it."""
    where = f"Dataset {dataset_name} is not prepared in {os.path.join(data_dir, dataset_name)}"
    return SystemExit(f"{where}: run\n  {prepare_command(dataset_name, data_dir)}")


def ensure_prepared(config: ExperimentConfig) -> None:
    """Generates the synthetic dataset when missing; for the others, exits naming the command
    that prepares them when the folder is missing or a split holds no note.

    The synthetic notes are `data_prep.synthetic`'s defaults whatever `--seed`
    is: the seed of a run draws its initialisation and order, as for real data,
    and a folder prepared by an earlier run with another seed holds the same notes.
    """
    command = prepare_command(config.dataset, config.data_dir)
    if not os.path.exists(os.path.join(config.dataset_dir, dataset.LABELS_FILE)):
        if config.dataset == "synthetic":
            synthetic.prepare(config.data_dir)  # the notes never follow --seed, see below
        else:
            raise not_prepared(config.dataset, config.data_dir)
    for split in dataset.SPLITS:
        try:
            dataset.require_notes(config.dataset_dir, split, prepared_by=f"({command})")
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(str(error)) from None
