"""Data behind the evaluation report page: loading and checking evaluation JSON, finding the available files,
the data-split audit from ``split.csv``, the training curves from ``history.json``, and the safety figures:
the refer-or-abstain (coverage) curve with the model's "unsure" threshold from ``metadata.json``, the
out-of-distribution gate's rates (``extras["ood"]``) and the test-time augmentation benchmark
(``benchmarks/results/safety.json``).

Every loader raises :class:`ReportError` with a message that names the file and the problem, so the page
can show it instead of crashing. No model is run here: the numbers come from the files.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skin_model.config import PROJECT_ROOT, display_path
from skin_model.labels import CLASSES, CODES, NUM_CLASSES, class_index
from skin_model.metrics import (REFERRAL_TARGET_SENSITIVITY, EvaluationReport, choose_unsure_threshold,
                                coverage_curve, referral_rates)
from skin_model.model import ModelMetadata
from skin_model.ood import GOALS as OOD_GOALS
from skin_model.published import PUBLISHED_RESULTS, PublishedResult

#: Files train.py writes into the weights folder, in the order the page offers them.
TRAINING_REPORTS = ("evaluation_test.json", "evaluation_val.json")
#: Environment variable naming a folder of further evaluation JSON (default WEIGHTS/evaluations).
REPORTS_DIR_ENV = "SKIN_REPORTS_DIR"
DEFAULT_REPORTS_SUBDIR = "evaluations"
SPLIT_FILE = "split.csv"
HISTORY_FILE = "history.json"
STAGES = ("head", "finetune")
CURVE_METRICS = ("loss", "accuracy", "balanced_accuracy")


class ReportError(ValueError):
    """A report, split or history file is missing or malformed; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path.name} ({display_path(self.path)}): {problem}")


# ---------------------------------------------------------------------------------------------- evaluation files
@dataclass(frozen=True)
class EvaluationFile:
    """An evaluation JSON the page can show, and where it came from."""

    path: Path
    origin: str  # "training run" or "evaluations folder"

    @property
    def label(self) -> str:
        return f"{self.path.name} ({self.origin})"


def reports_dir(weights_dir: Path) -> Path:
    """Folder of extra evaluation JSON: ``SKIN_REPORTS_DIR`` (read now) or ``weights_dir/evaluations``."""
    return Path(os.environ.get(REPORTS_DIR_ENV) or Path(weights_dir) / DEFAULT_REPORTS_SUBDIR)


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

    Raises ReportError naming the file and the problem: missing, unreadable, not JSON, missing or unknown
    fields, or values of the wrong type or out of range.
    """
    path = Path(path)
    data = read_json(path)
    try:
        report = EvaluationReport(**data)
    except TypeError:
        raise ReportError(path, _field_problem(data)) from None
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
    return "; ".join(parts) + " — is this an evaluation report written by train.py or skin_model.evaluate?"


def _is_rate(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0.0 <= value <= 1.0


def check_report(report: EvaluationReport, path: Path) -> None:
    """Raise ReportError for values the page cannot plot or that contradict each other."""
    problems: list[str] = []
    if not isinstance(report.dataset, dict):
        problems.append("'dataset' must be an object")
    if not isinstance(report.model, dict):
        problems.append("'model' must be an object")
    if not isinstance(report.n_images, int) or report.n_images < 1:
        problems.append(f"'n_images' must be a positive integer, found {report.n_images!r}")
    problems += [f"'{name}' must be a number between 0 and 1, found {getattr(report, name)!r}"
                 for name in _RATES if not _is_rate(getattr(report, name))]
    optional = {name: getattr(report, name) for name in _OPTIONAL_RATES}
    problems += [f"'{name}' must be a number between 0 and 1 or null, found {value!r}"
                 for name, value in optional.items() if value is not None and not _is_rate(value)]
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
        raise ReportError(path, "; ".join(problems))


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


# ---------------------------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Headline:
    """One headline figure, formatted, with a one-line meaning."""

    key: str
    label: str
    value: float | None
    meaning: str
    percent: bool = True

    @property
    def text(self) -> str:
        if self.value is None:
            return "n/a"
        return f"{self.value:.1%}" if self.percent else f"{self.value:.3f}"


HEADLINE_MEANINGS: dict[str, tuple[str, str, bool]] = {
    "balanced_accuracy": ("Balanced accuracy", "Mean of the 7 per-class recalls: every diagnosis counts "
                          "equally, however rare.", True),
    "accuracy": ("Accuracy", "Share of all images classified correctly; dominated by the common naevus class.",
                 True),
    "macro_auc": ("Macro AUC", "Mean one-vs-rest ROC AUC: how well each class's probability ranks its cases "
                  "above the rest (0.5 = chance, 1 = perfect).", False),
    "melanoma_sensitivity": ("Melanoma sensitivity", "Share of melanomas whose top prediction is melanoma "
                             "(missed melanomas lower it).", True),
    "melanoma_specificity": ("Melanoma specificity", "Share of non-melanomas not called melanoma "
                             "(false alarms lower it).", True),
    "ece": ("Calibration error (ECE)", "Expected calibration error after temperature scaling: average gap "
            "between stated confidence and actual accuracy (0 = perfectly calibrated).", False),
}


def headlines(report: EvaluationReport) -> list[Headline]:
    """The six headline figures of the report with their meanings."""
    return [Headline(key, label, getattr(report, key), meaning, percent)
            for key, (label, meaning, percent) in HEADLINE_MEANINGS.items()]


def dataset_description(report: EvaluationReport) -> str:
    """Which test set and split produced the report, from its ``dataset`` and ``model`` dicts (markdown)."""
    data, model = report.dataset, report.model
    name = str(data.get("name", "unnamed data set"))
    parts = [f"**{name}**"]
    description = str(data.get("description") or "")
    if description.startswith(name):  # "HAM10000 test split (held out...)": say the name once
        description = description[len(name):].strip().removeprefix("(").removesuffix(")").strip()
    if description:
        parts.append(description)
    split = data.get("split_method")
    if split:
        parts.append(f"split: {split}" + (f" (seed {data['seed']})" if data.get("seed") is not None else ""))
    counts = f"{report.n_images:,} images"
    if data.get("n_lesions"):
        counts += f" of {int(data['n_lesions']):,} lesions"
    parts.append(counts)
    if model.get("version"):
        parts.append(f"model {model['version']}")
    return " · ".join(parts)


def per_class_frame(report: EvaluationReport) -> pd.DataFrame:
    """One row per class: code, name, malignant, precision, recall, F1, AUC, average precision, support."""
    rows = []
    for c in CLASSES:
        m = report.per_class[c.code]
        rows.append({"Code": c.code, "Diagnosis": c.name, "Malignant": c.malignant,
                     "Precision": m["precision"], "Recall": m["recall"], "F1": m["f1"], "AUC": m["auc"],
                     "Average precision": m.get("average_precision"), "Support": int(m["support"])})
    return pd.DataFrame(rows)


def confusion_frames(report: EvaluationReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts, row-normalised) confusion matrices, rows = true class, columns = predicted class.

    A class with no images has a row of zeros in both.
    """
    counts = pd.DataFrame(report.confusion_matrix, index=list(CODES), columns=list(CODES))
    totals = counts.sum(axis=1).replace(0, 1)
    return counts, counts.div(totals, axis=0)


def comparison_frame(report: EvaluationReport,
                     published: tuple[PublishedResult, ...] = PUBLISHED_RESULTS) -> pd.DataFrame:
    """Our model's row (from the report) followed by the published results, each with test set and split."""
    ours = {"Model": f"This model ({report.model.get('version', 'unknown version')})",
            "Test set": f"{report.dataset.get('name', 'unnamed')} ({report.n_images:,} images)",
            "Split": report.dataset.get("split_method", "not recorded"),
            "Accuracy": report.accuracy, "Balanced accuracy": report.balanced_accuracy,
            "Macro AUC": report.macro_auc, "Status": "this evaluation file", "Source": "evaluation JSON"}
    rows = [ours] + [{"Model": p.model, "Test set": p.test_set, "Split": p.split_method, "Accuracy": p.accuracy,
                      "Balanced accuracy": p.balanced_accuracy, "Macro AUC": p.macro_auc, "Status": p.status,
                      "Source": p.citation + (f" — {p.note}" if p.note else "")} for p in published]
    return pd.DataFrame(rows)


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


# ---------------------------------------------------------------------------------------------- project targets
@dataclass(frozen=True)
class Target:
    """One of the project's own goals for the test split."""

    key: str
    label: str
    goal: float
    percent: bool = True

    def text(self, value: float) -> str:
        return f"{value:.1%}" if self.percent else f"{value:.3f}"


PROJECT_TARGETS: tuple[Target, ...] = (
    Target("balanced_accuracy", "Balanced accuracy", 0.75),
    Target("macro_auc", "Macro AUC", 0.93, percent=False),
    Target("melanoma_sensitivity", "Melanoma recall", 0.70),
)


def target_lines(figures: dict[str, Any]) -> list[tuple[str, bool | None]]:
    """For each project target, a sentence and whether it is met (None when the figure is missing);
    ``figures`` maps metric names to values (an EvaluationReport's headline or a metadata metrics row)."""
    lines = []
    for target in PROJECT_TARGETS:
        value = figures.get(target.key)
        if not isinstance(value, (int, float)):
            lines.append((f"{target.label} ≥ {target.text(target.goal)}: not measured", None))
            continue
        met = value >= target.goal
        lines.append((f"{target.label} {target.text(value)} against the target ≥ {target.text(target.goal)}: "
                      f"**{'met' if met else 'not met'}**", met))
    return lines


# ---------------------------------------------------------------------------------------------- referral cue
def referral_frame(entries: list[tuple[str, EvaluationReport]], threshold: float) -> pd.DataFrame:
    """One row per evaluation with per-image predictions: what "refer when the malignant roll-up reaches
    ``threshold``" does there (sensitivity, specificity, share referred), computed from the stored
    probabilities (no model is run)."""
    rows = []
    for name, report in entries:
        if not report.predictions:
            continue
        labels = np.array([class_index(p["label"]) for p in report.predictions])
        probs = np.array([p["probs"] for p in report.predictions], dtype=float)
        rates = referral_rates(labels, probs, threshold)
        rows.append({"Evaluation": name, "Images": len(labels), "Malignant images": rates.n_malignant,
                     "Malignant sensitivity": rates.sensitivity, "Specificity": rates.specificity,
                     "Referred": rates.referred})
    return pd.DataFrame(rows, columns=["Evaluation", "Images", "Malignant images", "Malignant sensitivity",
                                       "Specificity", "Referred"])


def referral_rule() -> str:
    """How ``metrics.choose_referral_threshold`` (as train.py calls it) picks the threshold, in one sentence."""
    return (f"the highest threshold on the malignant roll-up (0.00 to 0.99 in steps of 0.01) at which at least "
            f"{REFERRAL_TARGET_SENSITIVITY:.0%} of the malignant validation images (as served) reach it")


# ---------------------------------------------------------------------------------------------- localisation
@dataclass(frozen=True)
class LocalisationSummary:
    """The Grad-CAM localisation figures stored by ``python -m skin_model.localisation``."""

    share_inside: dict[str, float]
    chance_rate: float
    n_images: int
    method: str
    box_source: str
    box_limits: str
    split: str
    seconds_per_image: float | None


def localisation_summary(report: EvaluationReport, path: Path) -> LocalisationSummary | None:
    """``extras["localisation"]`` as a summary; None when absent; ReportError when malformed."""
    data = report.extras.get("localisation")
    if data is None:
        return None
    try:
        summary = LocalisationSummary(
            share_inside={str(k): float(v) for k, v in data["share_inside"].items()},
            chance_rate=float(data["chance_rate"]), n_images=int(data["n_images"]), method=str(data["method"]),
            box_source=str(data["box_source"]), box_limits=str(data.get("box_limits", "")),
            split=str(data.get("split", "")), seconds_per_image=data.get("seconds_per_image"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportError(path, "extras.localisation is incomplete or malformed "
                                f"({type(exc).__name__}: {exc})") from None
    if not all(0.0 <= v <= 1.0 for v in [*summary.share_inside.values(), summary.chance_rate]):
        raise ReportError(path, "extras.localisation shares must lie between 0 and 1")
    return summary


# ---------------------------------------------------------------------------------------------- split audit
@dataclass(frozen=True)
class SplitAudit:
    """Images and lesions per class per split, and the lesions found in more than one split."""

    images: pd.DataFrame  # index: class code (+ "total"), columns: splits
    lesions: pd.DataFrame
    crossing_lesions: tuple[str, ...]
    n_images: int
    n_lesions: int

    @property
    def passed(self) -> bool:
        """True when no lesion has images in two different splits."""
        return not self.crossing_lesions


def split_audit(split_csv: Path) -> SplitAudit:
    """Count images and lesions per class and split in train.py's ``split.csv`` and check that every
    lesion lies in one split only."""
    split_csv = Path(split_csv)
    if not split_csv.is_file():
        raise ReportError(split_csv, "the file does not exist (train.py writes it next to the model)")
    try:
        table = pd.read_csv(split_csv, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReportError(split_csv, f"not a readable CSV file ({exc})") from None
    missing = {"image_id", "lesion_id", "dx", "split"} - set(table.columns)
    if missing:
        raise ReportError(split_csv, f"missing column(s) {', '.join(sorted(missing))}")
    splits = [s for s in ("train", "val", "test") if s in set(table["split"])] + \
        sorted(set(table["split"]) - {"train", "val", "test"})
    images = _per_class_per_split(table.groupby(["dx", "split"])["image_id"].nunique(), splits)
    lesions = _per_class_per_split(table.groupby(["dx", "split"])["lesion_id"].nunique(), splits)
    images.loc["total"] = table.groupby("split")["image_id"].nunique().reindex(splits, fill_value=0)
    lesions.loc["total"] = table.groupby("split")["lesion_id"].nunique().reindex(splits, fill_value=0)
    per_lesion = table.groupby("lesion_id")["split"].nunique()
    return SplitAudit(images=images, lesions=lesions,
                      crossing_lesions=tuple(sorted(per_lesion[per_lesion > 1].index)),
                      n_images=int(table["image_id"].nunique()), n_lesions=int(table["lesion_id"].nunique()))


def _per_class_per_split(series: pd.Series, splits: list[str]) -> pd.DataFrame:
    frame = series.unstack(fill_value=0).reindex(index=list(CODES), columns=splits, fill_value=0)
    return frame.astype(int)


# ---------------------------------------------------------------------------------------------- training curves
def read_json(path: Path, missing_hint: str = "") -> Any:
    """The parsed content of a JSON file; ReportError naming the file if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(path, "the file does not exist" + (f" ({missing_hint})" if missing_hint else ""))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise ReportError(path, "not a text (UTF-8) file") from None
    except OSError as exc:
        raise ReportError(path, f"cannot be read ({exc.strerror or exc})") from None


def training_curves(history_json: Path) -> pd.DataFrame:
    """train.py's ``history.json`` as a long frame: stage, epoch (running over both stages), stage_epoch,
    metric (loss / accuracy / balanced_accuracy), subset (train / validation), value."""
    history_json = Path(history_json)
    history = read_json(history_json, "train.py writes it after training")
    if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
        raise ReportError(history_json, "expected an object of stage name -> list of per-epoch records")
    rows = []
    epoch = 0
    for stage in [s for s in STAGES if s in history] + [s for s in history if s not in STAGES]:
        for stage_epoch, record in enumerate(history[stage], start=1):
            if not isinstance(record, dict):
                raise ReportError(history_json, f"stage {stage!r} epoch {stage_epoch} is not an object")
            epoch += 1
            for metric in CURVE_METRICS:
                for subset, key in (("train", metric), ("validation", f"val_{metric}")):
                    if isinstance(record.get(key), (int, float)):
                        rows.append({"stage": stage, "epoch": epoch, "stage_epoch": stage_epoch,
                                     "metric": metric, "subset": subset, "value": float(record[key])})
    if not rows:
        raise ReportError(history_json, f"no per-epoch {', '.join(CURVE_METRICS)} values found")
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- refer or abstain
_UNSURE_DEFAULTS = inspect.signature(choose_unsure_threshold).parameters
#: The defaults of ``choose_unsure_threshold``, which train.py uses to set ``ModelMetadata.unsure_threshold``.
UNSURE_TARGET_ACCURACY = float(_UNSURE_DEFAULTS["target_accuracy"].default)
UNSURE_MAX_REFERRED = float(_UNSURE_DEFAULTS["max_referred"].default)
COVERAGE_COLUMNS = ("threshold", "coverage", "accuracy", "balanced_accuracy")


def unsure_rule() -> str:
    """How ``skin_model.metrics.choose_unsure_threshold`` (default arguments, as train.py calls it) picks
    the threshold on the validation split, in one sentence."""
    return (f"the lowest threshold (0.00 to 0.95 in steps of 0.01) at which the kept validation cases reach "
            f"{UNSURE_TARGET_ACCURACY:.0%} accuracy (plain, not balanced) while at most "
            f"{UNSURE_MAX_REFERRED:.0%} of the cases are referred; if no threshold does both, the highest one "
            f"that refers at most {UNSURE_MAX_REFERRED:.0%}")


def served_metadata(metadata_json: Path) -> ModelMetadata:
    """The served model's ``metadata.json``; ReportError naming the problem otherwise."""
    path = Path(metadata_json)
    data = read_json(path, "train.py writes it next to the model")
    try:
        return ModelMetadata(**data)
    except TypeError as exc:
        raise ReportError(path, f"its fields do not match the model metadata format ({exc})") from None


@dataclass(frozen=True)
class UnsureThreshold:
    """The app's "unsure" threshold, read from the served model's ``metadata.json``."""

    value: float
    model_version: str
    source: Path


def unsure_threshold(metadata_json: Path) -> UnsureThreshold:
    """``ModelMetadata.unsure_threshold`` and the model version; ReportError naming the problem otherwise."""
    path = Path(metadata_json)
    metadata = served_metadata(path)
    if not _is_rate(metadata.unsure_threshold):
        raise ReportError(path, "'unsure_threshold' must be a number between 0 and 1, "
                                f"found {metadata.unsure_threshold!r}")
    return UnsureThreshold(float(metadata.unsure_threshold), str(metadata.version), path)


@dataclass(frozen=True)
class OperatingPoint:
    """What one confidence threshold does to a set of images: the share kept and the kept cases' accuracy."""

    threshold: float
    coverage: float  # share of images whose top probability reaches the threshold (kept)
    accuracy: float | None  # None when no image is kept
    balanced_accuracy: float | None

    @property
    def referred(self) -> float:
        """Share of images below the threshold: shown as "unsure" and referred to a clinician."""
        return 1.0 - self.coverage


def coverage_frame(report: EvaluationReport, path: Path) -> pd.DataFrame:
    """The report's coverage curve sorted by threshold: threshold, coverage (share kept), referred
    (1 - coverage), accuracy and balanced_accuracy of the kept cases (NaN when none is kept)."""
    rows = report.coverage
    if not isinstance(rows, list) or not rows or not all(
            isinstance(r, dict) and set(COVERAGE_COLUMNS) <= set(r) for r in rows):
        raise ReportError(path, "'coverage' must be a non-empty list of rows with "
                                f"{', '.join(COVERAGE_COLUMNS)}")
    for i, row in enumerate(rows):
        bad = [k for k in ("threshold", "coverage") if not _is_rate(row[k])]
        bad += [k for k in ("accuracy", "balanced_accuracy") if row[k] is not None and not _is_rate(row[k])]
        if bad:
            raise ReportError(path, f"'coverage' row {i}: {', '.join(bad)} must be between 0 and 1")
    frame = pd.DataFrame([{k: row[k] for k in COVERAGE_COLUMNS} for row in rows]).astype(float)
    frame = frame.sort_values("threshold", kind="stable").reset_index(drop=True)
    frame.insert(2, "referred", 1.0 - frame["coverage"])
    return frame


def operating_point(report: EvaluationReport, threshold: float, path: Path) -> OperatingPoint | None:
    """Coverage and kept-case (balanced) accuracy at ``threshold``, computed with
    ``skin_model.metrics.coverage_curve`` from the per-image probabilities stored in the report (no model is
    run); None when the report stores no per-image predictions."""
    if not report.predictions:
        return None
    try:
        labels = np.array([class_index(p["label"]) for p in report.predictions])
        probs = np.array([p["probs"] for p in report.predictions], dtype=float)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportError(path, "'predictions' must be rows with a class code 'label' and 'probs' "
                                f"({type(exc).__name__}: {exc})") from None
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
        raise ReportError(path, f"'predictions' probs must have {NUM_CLASSES} values per image")
    (row,) = coverage_curve(labels, probs, np.array([threshold]))
    return OperatingPoint(**row)


# ---------------------------------------------------------------------------------------------- OOD gate
OOD_FIT_COMMAND = "python -m skin_model.ood fit"
OOD_MEASURE_COMMAND = "python -m skin_model.ood measure"
#: How ``skin_model.ood_images.non_dermoscopic_images`` builds the set the gate must reject.
NON_DERMOSCOPIC_SET = (
    "generated in memory by `skin_model.ood_images`: photos, textures, graphics, documents and two other "
    "medical images (retina, histology) that ship with scikit-image, plus drawn screenshots, documents, blank "
    "frames, noise, colour gradients, plain skin-tone patches and imitations of a naked-eye close-up of a mole. "
    "It contains no real clinical photos, so it does not show how the gate treats real non-dermoscopic "
    "close-ups")


@dataclass(frozen=True)
class OodCategory:
    """Non-dermoscopic images of one kind and how many of them the gate rejected."""

    name: str
    n: int
    rejected: int

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.n


@dataclass(frozen=True)
class OodSummary:
    """The OOD gate figures stored by ``python -m skin_model.ood measure`` in ``extras["ood"]``."""

    dermoscopic_pass_rate: float
    n_dermoscopic: int
    dermoscopic_split: str
    non_dermoscopic_reject_rate: float
    n_non_dermoscopic: int
    threshold: float
    categories: tuple[OodCategory, ...]
    passed_names: tuple[str, ...]  # non-dermoscopic images the gate let through
    pass_goal: float
    reject_goal: float
    measured: str
    gate: dict[str, Any]

    @property
    def meets_pass_goal(self) -> bool:
        return self.dermoscopic_pass_rate >= self.pass_goal

    @property
    def meets_reject_goal(self) -> bool:
        return self.non_dermoscopic_reject_rate >= self.reject_goal


def ood_summary(report: EvaluationReport, path: Path) -> OodSummary | None:
    """``extras["ood"]`` as a summary; None when absent; ReportError when incomplete or out of range."""
    data = report.extras.get("ood")
    if data is None:
        return None
    try:
        goals = {**OOD_GOALS, **data.get("goals", {})}
        summary = OodSummary(
            dermoscopic_pass_rate=float(data["dermoscopic_pass_rate"]), n_dermoscopic=int(data["n_dermoscopic"]),
            dermoscopic_split=str(data.get("dermoscopic_split", "test")),
            non_dermoscopic_reject_rate=float(data["non_dermoscopic_reject_rate"]),
            n_non_dermoscopic=int(data["n_non_dermoscopic"]), threshold=float(data["threshold"]),
            categories=tuple(OodCategory(str(name), int(row["n"]), int(row["rejected"]))
                             for name, row in data.get("non_dermoscopic_by_category", {}).items()),
            passed_names=tuple(str(name) for name in data.get("non_dermoscopic_passed", [])),
            pass_goal=float(goals["dermoscopic_pass_rate"]), reject_goal=float(goals["non_dermoscopic_reject_rate"]),
            measured=str(data.get("measured", "date not recorded")), gate=dict(data.get("gate") or {}))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportError(path, f"extras.ood is incomplete or malformed ({type(exc).__name__}: {exc})") from None
    rates = [summary.dermoscopic_pass_rate, summary.non_dermoscopic_reject_rate, summary.pass_goal,
             summary.reject_goal]
    if not all(_is_rate(v) for v in rates):
        raise ReportError(path, "extras.ood pass/reject rates and goals must lie between 0 and 1")
    if summary.n_dermoscopic < 1 or summary.n_non_dermoscopic < 1 or not math.isfinite(summary.threshold):
        raise ReportError(path, "extras.ood needs positive image counts and a finite threshold")
    if any(c.n < 1 or not 0 <= c.rejected <= c.n for c in summary.categories):
        raise ReportError(path, "extras.ood.non_dermoscopic_by_category needs 0 <= rejected <= n and n >= 1")
    return summary


def ood_category_frame(summary: OodSummary) -> pd.DataFrame:
    """One row per non-dermoscopic category: category, images, rejected, reject rate (lowest rate first)."""
    frame = pd.DataFrame([{"Category": c.name.replace("_", " "), "Images": c.n, "Rejected": c.rejected,
                           "Reject rate": c.reject_rate} for c in summary.categories],
                         columns=["Category", "Images", "Rejected", "Reject rate"])
    return frame.sort_values(["Reject rate", "Category"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- TTA benchmark
#: Environment variable naming the safety benchmark's results (default benchmarks/results/safety.json).
SAFETY_RESULTS_ENV = "SKIN_SAFETY_RESULTS"
DEFAULT_SAFETY_RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "safety.json"
SAFETY_COMMAND = "python benchmarks/safety_benchmark.py"
_VIEWS = {"single_view": "Single view", "tta_8_views": "8-view TTA"}


def safety_results_path() -> Path:
    """``SKIN_SAFETY_RESULTS`` (read now) or the project's ``benchmarks/results/safety.json``."""
    return Path(os.environ.get(SAFETY_RESULTS_ENV) or DEFAULT_SAFETY_RESULTS)


@dataclass(frozen=True)
class ViewFigures:
    """Validation figures and per-image latency of one way of predicting (single view or TTA)."""

    balanced_accuracy: float
    accuracy: float
    macro_auc: float | None  # None when a class is absent from the (limited) validation sample
    ece: float
    latency_p50_ms: float
    latency_p95_ms: float | None


@dataclass(frozen=True)
class TtaSummary:
    """The ``tta`` block of ``safety.json`` (``benchmarks/safety_benchmark.py``)."""

    single_view: ViewFigures
    tta: ViewFigures
    n_val: int
    split: str
    measured: str
    model_version: str | None
    machine: str


def tta_summary(safety_json: Path) -> TtaSummary:
    """Read the ``tta`` block of the safety benchmark's JSON; ReportError naming the file and the problem
    (missing, not JSON, no ``tta`` block, missing or out-of-range values)."""
    path = Path(safety_json)
    results = read_json(path)
    if not isinstance(results, dict) or not isinstance(results.get("tta"), dict):
        raise ReportError(path, "no 'tta' block (expected the output of benchmarks/safety_benchmark.py)")
    tta = results["tta"]
    try:
        views = {key: _view_figures(tta[key], tta["latency_ms"][key], key) for key in _VIEWS}
        n_val = int(tta["n_val"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportError(path, f"the 'tta' block is incomplete or malformed ({type(exc).__name__}: {exc})") from None
    if n_val < 1:
        raise ReportError(path, f"'tta.n_val' must be a positive count, found {n_val}")
    model = results.get("model") if isinstance(results.get("model"), dict) else {}
    machine = results.get("machine") if isinstance(results.get("machine"), dict) else {}
    machine_text = ", ".join(str(v) for v in (machine.get("platform"),
                                              f"{machine['cpus']} CPUs" if machine.get("cpus") else None) if v)
    return TtaSummary(single_view=views["single_view"], tta=views["tta_8_views"], n_val=n_val,
                      split=str(tta.get("split", "val")), measured=str(results.get("measured", "date not recorded")),
                      model_version=model.get("version"), machine=machine_text or "machine not recorded")


def _view_figures(figures: dict[str, Any], latency: dict[str, Any], key: str) -> ViewFigures:
    """One view's figures; ValueError naming the value that is missing or out of range."""
    for name in ("balanced_accuracy", "accuracy", "ece"):
        if not _is_rate(figures[name]):
            raise ValueError(f"tta.{key}.{name} must be a number between 0 and 1, found {figures[name]!r}")
    if figures.get("macro_auc") is not None and not _is_rate(figures["macro_auc"]):
        raise ValueError(f"tta.{key}.macro_auc must be a number between 0 and 1 or null")
    p50, p95 = latency["p50"], latency.get("p95")
    if not isinstance(p50, (int, float)) or isinstance(p50, bool) or not math.isfinite(p50) or p50 <= 0:
        raise ValueError(f"tta.latency_ms.{key}.p50 must be a positive number of milliseconds, found {p50!r}")
    return ViewFigures(balanced_accuracy=float(figures["balanced_accuracy"]), accuracy=float(figures["accuracy"]),
                       macro_auc=None if figures.get("macro_auc") is None else float(figures["macro_auc"]),
                       ece=float(figures["ece"]), latency_p50_ms=float(p50),
                       latency_p95_ms=float(p95) if isinstance(p95, (int, float)) else None)


def tta_frame(summary: TtaSummary) -> pd.DataFrame:
    """Single view vs 8-view TTA, formatted: balanced accuracy, accuracy, macro AUC, ECE, latency p50."""
    def percent(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    def decimal(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    def points(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or b is None else f"{100 * (b - a):+.1f} points"

    def delta(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or b is None else f"{b - a:+.3f}"

    one, eight = summary.single_view, summary.tta
    rows = [("Balanced accuracy", percent, points, "balanced_accuracy"), ("Accuracy", percent, points, "accuracy"),
            ("Macro AUC", decimal, delta, "macro_auc"), ("Calibration error (ECE)", decimal, delta, "ece")]
    table = [{"Measure": label, "Single view": show(getattr(one, key)), "8-view TTA": show(getattr(eight, key)),
              "Change": change(getattr(one, key), getattr(eight, key))} for label, show, change, key in rows]
    table.append({"Measure": "Latency per image (median)", "Single view": f"{one.latency_p50_ms:.0f} ms",
                  "8-view TTA": f"{eight.latency_p50_ms:.0f} ms",
                  "Change": f"×{eight.latency_p50_ms / one.latency_p50_ms:.1f}"})
    return pd.DataFrame(table)
