"""An evaluation report as the page shows it: headline figures, per-class and confusion tables, the comparison
with published results, the project's targets, the referral cue and the refer-or-abstain (coverage) curve.
Nothing is read here: the input is an ``EvaluationReport`` already loaded and checked.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skin_model.bundle import BundleFileError, is_rate
from skin_model.labels import CLASSES, CODES, NUM_CLASSES
from skin_model.evaluation.metrics import (REFERRAL_TARGET_SENSITIVITY, EvaluationReport, choose_unsure_threshold,
                                coverage_curve)
from skin_model.evaluation.published import PUBLISHED_RESULTS, PublishedResult


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
def referral_frame(entries: list[tuple[str, EvaluationReport]], served_threshold: float) -> pd.DataFrame:
    """One row per evaluation with per-image predictions: what "refer when the malignant roll-up reaches the
    threshold" does there (sensitivity, specificity, share referred), computed from the stored probabilities
    (no model is run). The threshold is the one of the model that made the report when it records one (a
    held-out-source run has its own), else the served model's."""
    rows = []
    for name, report in entries:
        rates = report.referral(served_threshold)
        if rates is None:
            continue
        rows.append({"Evaluation": name, "Images": report.n_images, "Threshold": rates.threshold,
                     "Malignant images": rates.n_malignant, "Malignant sensitivity": rates.sensitivity,
                     "Specificity": rates.specificity, "Referred": rates.referred})
    return pd.DataFrame(rows, columns=["Evaluation", "Images", "Threshold", "Malignant images",
                                       "Malignant sensitivity", "Specificity", "Referred"])


def referral_rule() -> str:
    """How ``metrics.choose_referral_threshold`` (as train.py calls it) picks the threshold, in one sentence."""
    return (f"the highest threshold on the malignant roll-up (0.00 to 0.99 in steps of 0.01) at which at least "
            f"{REFERRAL_TARGET_SENSITIVITY:.0%} of the malignant validation images (as served) reach it")


# ---------------------------------------------------------------------------------------------- refer or abstain
_UNSURE_DEFAULTS = inspect.signature(choose_unsure_threshold).parameters
#: The defaults of ``choose_unsure_threshold``, which train.py uses to set ``ModelMetadata.unsure_threshold``.
UNSURE_TARGET_ACCURACY = float(_UNSURE_DEFAULTS["target_accuracy"].default)
UNSURE_MAX_REFERRED = float(_UNSURE_DEFAULTS["max_referred"].default)
COVERAGE_COLUMNS = ("threshold", "coverage", "accuracy", "balanced_accuracy")


def unsure_rule() -> str:
    """How ``skin_model.evaluation.metrics.choose_unsure_threshold`` (default arguments, as train.py calls it) picks
    the threshold on the validation split, in one sentence."""
    return (f"the lowest threshold (0.00 to 0.95 in steps of 0.01) at which the kept validation cases reach "
            f"{UNSURE_TARGET_ACCURACY:.0%} accuracy (plain, not balanced) while at most "
            f"{UNSURE_MAX_REFERRED:.0%} of the cases are referred; if no threshold does both, the highest one "
            f"that refers at most {UNSURE_MAX_REFERRED:.0%}")


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
        raise BundleFileError(path, "'coverage' must be a non-empty list of rows with "
                                f"{', '.join(COVERAGE_COLUMNS)}")
    for i, row in enumerate(rows):
        bad = [k for k in ("threshold", "coverage") if not is_rate(row[k])]
        bad += [k for k in ("accuracy", "balanced_accuracy") if row[k] is not None and not is_rate(row[k])]
        if bad:
            raise BundleFileError(path, f"'coverage' row {i}: {', '.join(bad)} must be between 0 and 1")
    frame = pd.DataFrame([{k: row[k] for k in COVERAGE_COLUMNS} for row in rows]).astype(float)
    frame = frame.sort_values("threshold", kind="stable").reset_index(drop=True)
    frame.insert(2, "referred", 1.0 - frame["coverage"])
    return frame


def operating_point(report: EvaluationReport, threshold: float, path: Path) -> OperatingPoint | None:
    """Coverage and kept-case (balanced) accuracy at ``threshold``, computed with
    ``skin_model.evaluation.metrics.coverage_curve`` from the per-image probabilities stored in the report (no model is
    run); None when the report stores no per-image predictions."""
    if not report.predictions:
        return None
    try:
        labels, probs = report.labels_and_probs()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleFileError(path, "'predictions' must be rows with a class code 'label' and 'probs' "
                                f"({type(exc).__name__}: {exc})") from None
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
        raise BundleFileError(path, f"'predictions' probs must have {NUM_CLASSES} values per image")
    (row,) = coverage_curve(labels, probs, np.array([threshold]))
    return OperatingPoint(**row)
