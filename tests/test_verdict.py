"""The verdict every front end renders: one decision of what a flag means, from the prediction and the
out-of-distribution check."""

from __future__ import annotations

import json

import pytest

from skin_model.serving.inference import Prediction
from skin_model.labels import CODES
from skin_model.serving.ood import OodResult
from skin_model.serving.verdict import NOT_DERMOSCOPIC, REFER, UNSURE, Verdict


def prediction(top: str, p: float, referral: float | None = 0.3) -> Prediction:
    rest = (1.0 - p) / (len(CODES) - 1)
    return Prediction(tuple(p if c == top else rest for c in CODES), unsure_threshold=0.5,
                      referral_threshold=referral)


@pytest.mark.parametrize("top, p, distance, withheld, note", [
    ("nv", 0.9, 1.0, False, ""),  # confident, benign, passes the gate
    ("nv", 0.9, 9.0, True, NOT_DERMOSCOPIC),  # the gate flags it: withheld, whatever the prediction
    ("mel", 0.4, 9.0, True, NOT_DERMOSCOPIC),  # not dermatoscopic outranks unsure and refer
    ("bkl", 0.4, 1.0, False, UNSURE),  # below the unsure threshold
    ("mel", 0.8, 1.0, False, REFER),  # malignant roll-up above the referral threshold
])
def test_one_note_per_image_in_priority_order(top, p, distance, withheld, note):
    verdict = Verdict(prediction(top, p), OodResult(distance, threshold=5.0), "on", tta=True)
    assert verdict.result_withheld is withheld and verdict.not_dermoscopic is withheld
    assert verdict.note == note


def test_the_json_verdict_carries_the_prediction_and_the_check():
    verdict = Verdict(prediction("mel", 0.8), OodResult(9.0, 5.0), "on", tta=False)
    data = json.loads(json.dumps(verdict.as_dict()))
    assert data["top_class"] == "mel" and data["refer"] is True and data["unsure"] is False
    assert data["ood"] == {"checked": True, "flagged": True, "distance": 9.0, "threshold": 5.0}
    assert data["result_withheld"] is True and data["note"] == NOT_DERMOSCOPIC and data["tta"] is False
    assert sum(data["probabilities"].values()) == pytest.approx(1.0)


def test_an_off_gate_is_said_with_its_reason_and_withholds_nothing():
    verdict = Verdict(prediction("nv", 0.9, referral=None), None, "no ood.npz has been fitted", tta=False)
    assert not verdict.ood_checked and not verdict.result_withheld and verdict.refer is None
    assert verdict.ood_dict() == {"checked": False, "flagged": None, "reason": "no ood.npz has been fitted"}
    assert verdict.ood_note == "off (no ood.npz has been fitted)"
    assert Verdict(prediction("nv", 0.9), OodResult(1.0, 5.0), "on", False).ood_note.startswith("passed (score 1.00")
