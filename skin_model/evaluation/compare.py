"""Is one recipe really better than another on a held-out source? A paired bootstrap of two reports.

Two evaluation reports of the same images (e.g. ``heldout_rosendahl.json`` of the baseline and of a
candidate recipe) carry per-image calibrated probabilities. Resampling the images' lesions with replacement
(a lesion's images go together: they are not independent) and recomputing each figure on both reports for the
same resample gives the spread of the difference that comes from which images the source happens to hold.
It does not include the spread from training itself (seed, order), which a second seed would measure, so an
interval that excludes zero is necessary for a real gain, not sufficient. A candidate may be an ensemble:
several reports of the same images averaged (``mean_predictions``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from skin_model.labels import CODES, MELANOMA, NAEVUS

log = logging.getLogger(__name__)

MEL = CODES.index(MELANOMA)
NV = CODES.index(NAEVUS)


class ComparisonError(ValueError):
    """The two reports cannot be compared image by image."""


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the classes present (sklearn's balanced accuracy, without its warning when a
    resample lacks a class that is predicted)."""
    preds = probs.argmax(axis=1)
    return float(np.mean([(preds[labels == c] == c).mean() for c in np.unique(labels)]))


def melanoma_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of the melanoma probability, melanoma against the rest."""
    return float(roc_auc_score(labels == MEL, probs[:, MEL]))


def melanoma_sensitivity(labels: np.ndarray, probs: np.ndarray) -> float:
    """Share of melanomas whose top class is melanoma."""
    return float((probs[labels == MEL].argmax(axis=1) == MEL).mean())


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-against-rest ROC AUC over the classes present (with at least one negative)."""
    present = [c for c in np.unique(labels) if (labels != c).any()]
    return float(np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present]))


#: The protocol's figures, as compared.
FIGURES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "balanced_accuracy": balanced_accuracy, "melanoma_auc": melanoma_auc,
    "melanoma_sensitivity": melanoma_sensitivity, "macro_auc": macro_auc}


@dataclass(frozen=True)
class Difference:
    """Candidate minus baseline on one figure, with its bootstrap interval."""

    figure: str
    baseline: float
    candidate: float
    difference: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class PairedImages:
    """Labels and both reports' probabilities for the same images, in one order, and each image's group."""

    labels: np.ndarray
    baseline: np.ndarray
    candidate: np.ndarray
    groups: np.ndarray


def pair_predictions(baseline: list[dict], candidate: list[dict],
                     lesion_of: dict[str, str] | None = None) -> PairedImages:
    """Match two reports' ``predictions`` by image id. Groups are lesion ids from ``lesion_of`` (images
    without one, or all when it is None, are their own group). Raises ComparisonError when the reports do not
    hold the same images with the same labels, or hold no predictions."""
    if not baseline or not candidate:
        raise ComparisonError("A report holds no per-image predictions: nothing to pair")
    first = {p["image_id"]: p for p in baseline}
    second = {p["image_id"]: p for p in candidate}
    if first.keys() != second.keys():
        only = sorted(first.keys() ^ second.keys())
        raise ComparisonError(f"The reports hold different images ({len(only)} in one only, e.g. {only[0]}): "
                              "compare reports of the same held-out source")
    ids = sorted(first)
    relabelled = [i for i in ids if first[i]["label"] != second[i]["label"]]
    if relabelled:
        raise ComparisonError(f"{len(relabelled)} image(s) carry different labels in the two reports, "
                              f"e.g. {relabelled[0]}")
    lesion_of = lesion_of or {}
    return PairedImages(labels=np.array([CODES.index(first[i]["label"]) for i in ids]),
                        baseline=np.array([first[i]["probs"] for i in ids], dtype=float),
                        candidate=np.array([second[i]["probs"] for i in ids], dtype=float),
                        groups=np.array([lesion_of.get(i, i) for i in ids]))


def mean_predictions(runs: list[list[dict]]) -> list[dict]:
    """The ensemble of several reports of the same images (several networks): per image, the mean of their
    probabilities, as an ensemble served by averaging would give. Raises ComparisonError unless every report
    holds the same images with the same labels."""
    for other in runs[1:]:
        pair_predictions(runs[0], other)
    if len(runs) == 1:
        return runs[0]
    by_id = [{p["image_id"]: p for p in run} for run in runs]
    return [{"image_id": i, "label": p["label"],
             "probs": np.mean([np.asarray(b[i]["probs"], dtype=float) for b in by_id], axis=0).tolist()}
            for i, p in by_id[0].items()]


def paired_bootstrap(pair: PairedImages, resamples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> list[Difference]:
    """Percentile intervals of candidate minus baseline for each of ``FIGURES``, resampling groups (lesions)
    with replacement; both reports are scored on the same resample each time."""
    _, group_index = np.unique(pair.groups, return_inverse=True)
    members = pd.Series(np.arange(len(group_index))).groupby(group_index).apply(np.array).tolist()
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in FIGURES}
    for _ in range(resamples):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        labels = pair.labels[idx]
        if not (labels == MEL).any() or (labels == MEL).all():
            continue  # melanoma figures undefined on this resample
        for name, figure in FIGURES.items():
            draws[name].append(figure(labels, pair.candidate[idx]) - figure(labels, pair.baseline[idx]))
    tail = (1 - level) / 2 * 100
    out = []
    for name, figure in FIGURES.items():
        base, cand = figure(pair.labels, pair.baseline), figure(pair.labels, pair.candidate)
        low, high = np.percentile(draws[name], [tail, 100 - tail])
        out.append(Difference(name, base, cand, cand - base, float(low), float(high)))
    return out


@dataclass(frozen=True)
class OperatingPoint:
    """A report's decisions once the melanoma probability is multiplied by ``weight`` (a prior shift towards
    melanoma, the smallest that reaches the target melanoma sensitivity): what reaching it costs."""

    target_sensitivity: float
    weight: float
    melanoma_sensitivity: float
    balanced_accuracy: float
    naevus_recall: float


def at_melanoma_sensitivity(labels: np.ndarray, probs: np.ndarray, target: float = 0.70) -> OperatingPoint:
    """The operating point where melanoma sensitivity first reaches ``target`` when melanoma's probability is
    up-weighted (never down: weight >= 1). A melanoma becomes the top class once the weight exceeds its largest
    other probability over its melanoma probability, so the weight needed is a quantile of those ratios."""
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    melanomas = probs[labels == MEL]
    if not len(melanomas):
        raise ValueError("no melanoma among the labels")
    others = np.delete(melanomas, MEL, axis=1).max(axis=1)
    needed = np.sort(others / np.maximum(melanomas[:, MEL], 1e-12))
    weight = max(1.0, float(needed[int(np.ceil(target * len(needed))) - 1]) * (1 + 1e-9))
    shifted = probs.copy()
    shifted[:, MEL] *= weight
    naevi = shifted[labels == NV]
    return OperatingPoint(target, weight, melanoma_sensitivity(labels, shifted), balanced_accuracy(labels, shifted),
                          float((naevi.argmax(axis=1) == NV).mean()) if len(naevi) else float("nan"))


def lesion_ids(metadata_csv: Path) -> dict[str, str]:
    """image_id -> lesion_id from the HAM10000 metadata."""
    frame = pd.read_csv(metadata_csv, usecols=["image_id", "lesion_id"])
    return dict(zip(frame["image_id"], frame["lesion_id"]))


def differences_dict(differences: list[Difference], level: float, resamples: int, unit: str) -> dict:
    """JSON-ready form of a comparison."""
    return {"level": level, "resamples": resamples, "resampled_unit": unit,
            "figures": [{**asdict(d), "excludes_zero": d.excludes_zero} for d in differences]}
