"""Results in the format of the paper's tables (Seq. length, micro F1, P, R, PR-AUC, ROC-AUC),
with the mean per-note average precision (MAP, CodiEsp's ranking metric) beside them."""

from longbert_tf.configs import ExperimentConfig

COLUMNS = ("Model", "Seq. length", "Micro F1", "Precision", "Recall", "PR-AUC", "ROC-AUC", "MAP")
METRICS = ("micro_f1", "micro_precision", "micro_recall", "micro_pr_auc", "micro_roc_auc", "map")


def model_name(config: ExperimentConfig) -> str:
    """CAML, BERT-baseline (one segment) or LongBERT, as the paper names its rows."""
    if config.model == "caml":
        return "CAML"
    return "BERT-baseline" if config.segments.max_segments == 1 else "LongBERT"


def header() -> list:
    return ["| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]


def row(name: str, input_length: int | str | None, test: dict) -> str:
    """A Markdown row from test metrics (fractions, three decimals; missing ones as '-').

    `input_length` is tokens or words, or a description ("entire note"); None prints as '-'.
    """
    values = [f"{test[key]:.3f}" if test.get(key) is not None else "-" for key in METRICS]
    length = "-" if input_length is None else input_length
    return f"| {name} | {length} | " + " | ".join(values) + " |"


def table(config: ExperimentConfig, results: dict) -> str:
    """The one-row table of a finished run."""
    return "\n".join(header() + [row(model_name(config), config.input_length, results["test"])])
