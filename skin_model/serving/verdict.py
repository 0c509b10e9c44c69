"""The verdict on one image, as every front end shows it: the calibrated prediction, the
out-of-distribution check, "unsure" and the referral cue, decided once here.

The Classify and Batch pages, the case report, ``python -m skin_model.cli.predict`` and the evaluate CLI's
counts render a ``Verdict``; none of them re-decides what a flag means. An image the gate flags as not
dermatoscopic has its result withheld: a front end shows it only when the user asks, marked unreliable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skin_model.serving.inference import Prediction
from skin_model.serving.ood import OodResult

NOT_DERMOSCOPIC = "not a dermatoscopic image: do not rely on the result"
UNSURE = "unsure: refer for assessment"
REFER = "malignant probability at or above the referral threshold: refer"
#: The share of malignant validation images the referral threshold is chosen to reach: the target of
#: ``evaluation.metrics.choose_referral_threshold``, which imports it from here, so that the pages explain the
#: cue without importing the evaluation code and scikit-learn.
REFERRAL_TARGET_SENSITIVITY = 0.90


@dataclass(frozen=True)
class Verdict:
    """What the app says about one image."""

    prediction: Prediction
    ood: OodResult | None  # None when the check is off
    ood_status: str  # "on", or why the check is off
    tta: bool  # the probabilities average the 8 flips/rotations

    @property
    def ood_checked(self) -> bool:
        return self.ood is not None

    @property
    def not_dermoscopic(self) -> bool:
        """True when the gate says this does not look like a dermatoscopic image."""
        return self.ood is not None and self.ood.flagged

    @property
    def result_withheld(self) -> bool:
        """True when the prediction must not be shown unless the user asks (not dermatoscopic)."""
        return self.not_dermoscopic

    @property
    def unsure(self) -> bool:
        return self.prediction.unsure

    @property
    def refer(self) -> bool | None:
        return self.prediction.refer

    @property
    def note(self) -> str:
        """The one-line note: not dermatoscopic, else unsure, else the referral cue, else ""."""
        if self.not_dermoscopic:
            return NOT_DERMOSCOPIC
        if self.unsure:
            return UNSURE
        if self.refer:
            return REFER
        return ""

    @property
    def ood_note(self) -> str:
        """The check's outcome in one line (case report, CLI)."""
        if self.ood is None:
            return f"off ({self.ood_status})"
        score = f"score {self.ood.distance:.2f}, threshold {self.ood.threshold:.2f}"
        if self.not_dermoscopic:
            return f"FLAGGED: does not look like a dermatoscopic image ({score}); output shown on request"
        return f"passed ({score})"

    def ood_dict(self) -> dict[str, Any]:
        """The check as JSON: checked or not (and why), flagged, score."""
        if self.ood is None:
            return {"checked": False, "flagged": None, "reason": self.ood_status}
        return {"checked": True, "flagged": self.ood.flagged, "distance": self.ood.distance,
                "threshold": self.ood.threshold}

    def as_dict(self) -> dict[str, Any]:
        """The whole verdict as JSON (the predict CLI's ``--json`` line)."""
        return {**self.prediction.as_dict(), "tta": self.tta, "ood": self.ood_dict(),
                "result_withheld": self.result_withheld, "note": self.note}
