"""Evaluation reports of a bundle: which files the page offers (train.py's, then the evaluations folder), and
loading one with every value checked, so the page can name a broken file's problem instead of crashing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from skin_model.bundle import TRAINING_REPORTS, BundleFileError, is_rate, read_json
from skin_model.config import reports_dir
from skin_model.labels import CODES, NUM_CLASSES
from skin_model.evaluation.metrics import EvaluationReport


# ---------------------------------------------------------------------------------------------- evaluation files
@dataclass(frozen=True)
class EvaluationFile:
    """An evaluation JSON the page can show, and where it came from."""

    path: Path
    origin: str  # "training run" or "evaluations folder"

    @property
    def label(self) -> str:
        return f"{self.path.name} ({self.origin})"


def list_evaluation_files(weights_dir: Path, extra_dir: Path | None = None) -> list[EvaluationFile]:
    """train.py's test and validation reports (when present), then every ``*.json`` in ``extra_dir``."""
    weights_dir = Path(weights_dir)
    extra_dir = reports_dir(weights_dir) if extra_dir is None else Path(extra_dir)
    found = [EvaluationFile(weights_dir / name, "training run") for name in TRAINING_REPORTS
             if (weights_dir / name).is_file()]
    if extra_dir.is_dir():
        found += [EvaluationFile(path, "evaluations folder") for path in sorted(extra_dir.glob("*.json"))
                  if path.is_file()]
    return found


# ---------------------------------------------------------------------------------------------- loading
_OPTIONAL_FIELDS = {f.name for f in fields(EvaluationReport) if f.name in ("predictions", "extras")}
_REQUIRED_FIELDS = [f.name for f in fields(EvaluationReport) if f.name not in _OPTIONAL_FIELDS]
_RATES = ("balanced_accuracy", "accuracy", "ece")
_OPTIONAL_RATES = ("macro_auc", "ece_uncalibrated", "melanoma_sensitivity", "melanoma_specificity",
                   "malignant_sensitivity", "malignant_specificity", "malignant_auc")
_PER_CLASS_KEYS = ("precision", "recall", "f1", "auc", "support")


def load_report(path: Path) -> EvaluationReport:
    """Read an EvaluationReport JSON (``EvaluationReport.from_json``) and check it is complete and sane.

    Raises BundleFileError naming the file and the problem: missing, unreadable, not JSON, missing or unknown
    fields, or values of the wrong type or out of range.
    """
    path = Path(path)
    data = read_json(path)
    try:
        report = EvaluationReport(**data)
    except TypeError:
        raise BundleFileError(path, _field_problem(data)) from None
    check_report(report, path)
    return report


def _field_problem(data: Any) -> str:
    """Why ``EvaluationReport(**data)`` failed: not an object, or missing / unknown fields."""
    if not isinstance(data, dict):
        return f"expected a JSON object with the evaluation fields, found a {type(data).__name__}"
    missing = [name for name in _REQUIRED_FIELDS if name not in data]
    unknown = sorted(set(data) - {f.name for f in fields(EvaluationReport)})
    parts = []
    if missing:
        parts.append(f"missing field(s) {', '.join(missing)}")
    if unknown:
        parts.append(f"unknown field(s) {', '.join(unknown)}")
    if not parts:
        parts.append("its fields do not match the EvaluationReport format")
    return "; ".join(parts) + " — is this an evaluation report written by train.py or skin_model.evaluation.evaluate?"


def check_report(report: EvaluationReport, path: Path) -> None:
    """Raise BundleFileError for values the page cannot plot or that contradict each other."""
    problems: list[str] = []
    if not isinstance(report.dataset, dict):
        problems.append("'dataset' must be an object")
    if not isinstance(report.model, dict):
        problems.append("'model' must be an object")
    if not isinstance(report.n_images, int) or report.n_images < 1:
        problems.append(f"'n_images' must be a positive integer, found {report.n_images!r}")
    problems += [f"'{name}' must be a number between 0 and 1, found {getattr(report, name)!r}"
                 for name in _RATES if not is_rate(getattr(report, name))]
    optional = {name: getattr(report, name) for name in _OPTIONAL_RATES}
    problems += [f"'{name}' must be a number between 0 and 1 or null, found {value!r}"
                 for name, value in optional.items() if value is not None and not is_rate(value)]
    problems += _per_class_problems(report.per_class)
    problems += _matrix_problems(report.confusion_matrix, report.n_images)
    for name in ("reliability", "reliability_uncalibrated"):
        bins = getattr(report, name)
        if bins is None and name == "reliability_uncalibrated":
            continue
        if not isinstance(bins, list) or not all(isinstance(b, dict) and {"confidence", "accuracy", "count"} <= set(b)
                                                 for b in bins):
            problems.append(f"'{name}' must be a list of bins with confidence, accuracy and count")
    for name in ("roc_curves", "pr_curves"):
        curves = getattr(report, name)
        if not isinstance(curves, dict) or not all(
                isinstance(c, dict) and isinstance(c.get("x"), list) and isinstance(c.get("y"), list)
                and len(c["x"]) == len(c["y"]) for c in curves.values()):
            problems.append(f"'{name}' must map class codes to {{x: [...], y: [...]}} of equal length")
    if not isinstance(report.extras, dict):
        problems.append("'extras' must be an object")
    if problems:
        raise BundleFileError(path, "; ".join(problems))


def _per_class_problems(per_class: Any) -> list[str]:
    if not isinstance(per_class, dict):
        return ["'per_class' must be an object keyed by class code"]
    missing = [code for code in CODES if code not in per_class]
    if missing:
        return [f"'per_class' lacks class(es) {', '.join(missing)}"]
    problems = []
    for code in CODES:
        row = per_class[code]
        if not isinstance(row, dict) or not set(_PER_CLASS_KEYS) <= set(row):
            problems.append(f"'per_class.{code}' must have {', '.join(_PER_CLASS_KEYS)}")
        elif not isinstance(row["support"], int) or row["support"] < 0:
            problems.append(f"'per_class.{code}.support' must be a count, found {row['support']!r}")
    return problems


def _matrix_problems(matrix: Any, n_images: Any) -> list[str]:
    if not (isinstance(matrix, list) and len(matrix) == NUM_CLASSES and all(
            isinstance(row, list) and len(row) == NUM_CLASSES and all(isinstance(v, int) and v >= 0 for v in row)
            for row in matrix)):
        return [f"'confusion_matrix' must be {NUM_CLASSES}x{NUM_CLASSES} non-negative counts"]
    total = sum(map(sum, matrix))
    if isinstance(n_images, int) and total != n_images:
        return [f"'confusion_matrix' counts {total} images but 'n_images' is {n_images}"]
    return []


# ---------------------------------------------------------------------------------------------- file selection
def view_text(report: EvaluationReport) -> str:
    """How the report's probabilities were predicted: "8-view TTA" or "single view"."""
    return "8-view TTA" if report.model.get("tta") else "single view"


def file_description(file: EvaluationFile, report: EvaluationReport | None) -> str:
    """A selector label: the file, then its split and view when the report could be read."""
    if report is None:
        return file.label
    split = report.dataset.get("split")
    return f"{file.label} · {split + ' split, ' if split else ''}{view_text(report)}"


def served_file_index(reports: list[EvaluationReport | None], served_tta: bool) -> int:
    """Index of the report to open first: the test split predicted as the app serves (TTA or not), else any
    report predicted as served, else the first."""
    def served(report: EvaluationReport | None) -> bool:
        return report is not None and bool(report.model.get("tta")) == served_tta

    for i, report in enumerate(reports):
        if served(report) and report.dataset.get("split") == "test":
            return i
    return next((i for i, report in enumerate(reports) if served(report)), 0)
