"""Evaluation report from labels and probabilities, computed with scikit-learn.

The report is a dataclass written as JSON by ``train.py`` and ``python -m skin_model.cli.evaluate``; the
evaluation page only plots it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score,
                             confusion_matrix, precision_recall_curve, precision_recall_fscore_support,
                             roc_auc_score, roc_curve)

from skin_model.serving.calibration import apply_temperature
from skin_model.serving.verdict import REFERRAL_TARGET_SENSITIVITY  # noqa: F401  (chosen here, shown there)
from skin_model.labels import CODES, MALIGNANT_CODES, MELANOMA, NUM_CLASSES, class_index

ECE_BINS = 15
COVERAGE_GRID = np.round(np.linspace(0.0, 0.95, 20), 3)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: confidence-weighted gap between confidence and accuracy over equal-width bins."""
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in
                     reliability_bins(labels, probs, n_bins)) / max(len(labels), 1))


def reliability_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy and count of the top-1 predictions (non-empty bins)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": int(mask.sum()),
                         "confidence": float(confidence[mask].mean()), "accuracy": float(correct[mask].mean())})
    return bins


def coverage_curve(labels: np.ndarray, probs: np.ndarray, grid: np.ndarray = COVERAGE_GRID) -> list[dict[str, float]]:
    """For each confidence threshold: share of cases kept and the (balanced) accuracy on the kept cases."""
    confidence = probs.max(axis=1)
    preds = probs.argmax(axis=1)
    rows = []
    for t in grid:
        keep = confidence >= t
        row = {"threshold": float(t), "coverage": float(keep.mean()), "accuracy": None, "balanced_accuracy": None}
        if keep.any():
            row["accuracy"] = float((preds[keep] == labels[keep]).mean())
            with warnings.catch_warnings():  # kept cases may lack a class: that is expected here
                warnings.simplefilter("ignore", UserWarning)
                row["balanced_accuracy"] = float(balanced_accuracy_score(labels[keep], preds[keep]))
        rows.append(row)
    return rows


def choose_unsure_threshold(labels: np.ndarray, probs: np.ndarray, target_accuracy: float = 0.85,
                            max_referred: float = 0.35) -> float:
    """Lowest confidence threshold whose kept cases reach ``target_accuracy``, referring at most
    ``max_referred`` of cases (fitted on validation data)."""
    best = 0.0
    for row in coverage_curve(labels, probs, np.round(np.arange(0.0, 0.96, 0.01), 3)):
        if row["coverage"] < 1.0 - max_referred:
            break
        best = row["threshold"]
        if row["accuracy"] is not None and row["accuracy"] >= target_accuracy:
            break
    return float(best)


def malignant_scores(probs: np.ndarray) -> np.ndarray:
    """The malignant roll-up per image: the summed probabilities of ``labels.MALIGNANT_CODES``."""
    return np.asarray(probs, dtype=np.float64)[:, [CODES.index(c) for c in MALIGNANT_CODES]].sum(axis=1)


def is_malignant(labels: np.ndarray) -> np.ndarray:
    """True for the images whose label is a malignant class."""
    return np.isin(np.asarray(labels, dtype=int), [CODES.index(c) for c in MALIGNANT_CODES])


@dataclass(frozen=True)
class ReferralRates:
    """What "refer when the malignant roll-up reaches ``threshold``" does on a labelled image set."""

    threshold: float
    sensitivity: float | None  # share of malignant images referred (None without malignant images)
    specificity: float | None  # share of benign images not referred (None without benign images)
    referred: float  # share of all images referred
    n_malignant: int
    n_benign: int


def referral_rates(labels: np.ndarray, probs: np.ndarray, threshold: float) -> ReferralRates:
    """Sensitivity, specificity and share referred of the referral cue at ``threshold``."""
    truth, refer = is_malignant(labels), malignant_scores(probs) >= threshold
    sensitivity, specificity = _binary_rates(truth, refer)
    return ReferralRates(float(threshold), _none_if_nan(sensitivity), _none_if_nan(specificity),
                         float(refer.mean()) if len(refer) else 0.0, int(truth.sum()), int((~truth).sum()))


def choose_referral_threshold(labels: np.ndarray, probs: np.ndarray,
                              target_sensitivity: float = REFERRAL_TARGET_SENSITIVITY) -> float:
    """Highest threshold on the malignant roll-up (0.00 to 0.99 in steps of 0.01) at which at least
    ``target_sensitivity`` of the malignant cases are referred (fitted on validation data)."""
    truth = is_malignant(labels)
    if not truth.any():
        raise ValueError("No malignant image among the labels: the referral threshold cannot be chosen")
    scores = malignant_scores(probs)[truth]
    best = 0.0
    for t in np.round(np.arange(0.0, 1.0, 0.01), 2):
        if (scores >= t).mean() < target_sensitivity:
            break
        best = float(t)
    return best


def _binary_rates(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Sensitivity and specificity of a boolean prediction."""
    tp = int((truth & predicted).sum())
    tn = int((~truth & ~predicted).sum())
    pos, neg = int(truth.sum()), int((~truth).sum())
    return (tp / pos if pos else float("nan")), (tn / neg if neg else float("nan"))


def _safe_auc(truth: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(truth, scores)) if 0 < truth.sum() < len(truth) else None


def _curve(x: np.ndarray, y: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    idx = np.unique(np.linspace(0, len(x) - 1, min(len(x), max_points)).round().astype(int))
    return {"x": [round(float(v), 5) for v in x[idx]], "y": [round(float(v), 5) for v in y[idx]]}


@dataclass
class EvaluationReport:
    """Metrics of one model on one labelled image set (JSON-serialisable)."""

    dataset: dict[str, Any]
    model: dict[str, Any]
    n_images: int
    balanced_accuracy: float
    accuracy: float
    macro_auc: float | None
    ece: float
    ece_uncalibrated: float | None
    melanoma_sensitivity: float
    melanoma_specificity: float
    malignant_sensitivity: float
    malignant_specificity: float
    malignant_auc: float | None
    per_class: dict[str, dict[str, float | int | None]]
    confusion_matrix: list[list[int]]
    reliability: list[dict[str, float]]
    reliability_uncalibrated: list[dict[str, float]] | None
    roc_curves: dict[str, dict[str, list[float]]]
    pr_curves: dict[str, dict[str, list[float]]]
    coverage: list[dict[str, float]]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, float | None]:
        """The figures quoted in the model metadata and README."""
        return {k: getattr(self, k) for k in ("balanced_accuracy", "accuracy", "macro_auc", "ece",
                                              "melanoma_sensitivity", "melanoma_specificity")}

    def labels_and_probs(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored per-image integer labels and (N, 7) probabilities."""
        labels = np.array([class_index(p["label"]) for p in self.predictions], dtype=int)
        return labels, np.array([p["probs"] for p in self.predictions], dtype=np.float64)

    def referral(self, served_threshold: float | None = None) -> ReferralRates | None:
        """The referral cue on these images at the threshold of the model that made them
        (``model.referral_threshold``), else at ``served_threshold``; None without either or predictions."""
        threshold = self.model.get("referral_threshold")
        threshold = served_threshold if threshold is None else threshold
        if threshold is None or not self.predictions:
            return None
        return referral_rates(*self.labels_and_probs(), float(threshold))

    def to_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1, allow_nan=False, default=_json_default) + "\n")

    @classmethod
    def from_json(cls, path: Path) -> "EvaluationReport":
        return cls(**json.loads(Path(path).read_text()))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"Not JSON-serialisable: {type(value)}")


def _none_if_nan(value: float) -> float | None:
    return None if value != value else float(value)


def evaluate_probabilities(labels: np.ndarray, probs: np.ndarray, image_ids: list[str], *,
                           dataset: dict[str, Any], model: dict[str, Any],
                           temperature: float | None = None) -> EvaluationReport:
    """Full report for calibrated ``probs`` (N, 7) against integer ``labels``.

    With ``temperature``, the uncalibrated probabilities are recovered (p ** T, renormalised) to report the
    ECE and reliability before temperature scaling too.
    """
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    preds = probs.argmax(axis=1)
    all_classes = list(range(NUM_CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=all_classes,
                                                                     zero_division=0)
    per_class, roc, pr = {}, {}, {}
    for i, code in enumerate(CODES):
        truth = labels == i
        auc = _safe_auc(truth, probs[:, i])
        per_class[code] = {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                           "auc": auc, "support": int(support[i]),
                           "average_precision": float(average_precision_score(truth, probs[:, i]))
                           if truth.any() else None}
        if auc is not None:
            fpr, tpr, _ = roc_curve(truth, probs[:, i])
            roc[code] = _curve(fpr, tpr)
            prec, rec, _ = precision_recall_curve(truth, probs[:, i])
            pr[code] = _curve(rec[::-1], prec[::-1])
    aucs = [c["auc"] for c in per_class.values() if c["auc"] is not None]
    mel = CODES.index(MELANOMA)
    mel_sens, mel_spec = _binary_rates(labels == mel, preds == mel)
    malignant_truth, malignant_score = is_malignant(labels), malignant_scores(probs)
    mal_sens, mal_spec = _binary_rates(malignant_truth, malignant_score >= 0.5)
    uncal = apply_temperature(probs, 1.0 / temperature) if temperature else None
    return EvaluationReport(
        dataset=dataset, model=model, n_images=int(len(labels)),
        balanced_accuracy=float(balanced_accuracy_score(labels, preds)),
        accuracy=float(accuracy_score(labels, preds)),
        macro_auc=float(np.mean(aucs)) if aucs else None,
        ece=expected_calibration_error(labels, probs),
        ece_uncalibrated=expected_calibration_error(labels, uncal) if uncal is not None else None,
        melanoma_sensitivity=_none_if_nan(mel_sens), melanoma_specificity=_none_if_nan(mel_spec),
        malignant_sensitivity=_none_if_nan(mal_sens), malignant_specificity=_none_if_nan(mal_spec),
        malignant_auc=_safe_auc(malignant_truth, malignant_score),
        per_class=per_class,
        confusion_matrix=confusion_matrix(labels, preds, labels=all_classes).tolist(),
        reliability=reliability_bins(labels, probs),
        reliability_uncalibrated=reliability_bins(labels, uncal) if uncal is not None else None,
        roc_curves=roc, pr_curves=pr,
        coverage=coverage_curve(labels, probs),
        predictions=[{"image_id": iid, "label": CODES[y], "probs": [round(float(p), 6) for p in row]}
                     for iid, y, row in zip(image_ids, labels, probs)],
    )
