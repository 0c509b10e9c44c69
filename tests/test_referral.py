"""The malignant referral cue: choosing its threshold on validation, the Prediction's cue, the metadata field
(old bundles load without it) and the shipped bundle's value, recomputed from its stored validation run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from skin_model.serving.inference import Prediction, format_probability
from skin_model.labels import CODES
from skin_model.evaluation.metrics import EvaluationReport, choose_referral_threshold, malignant_scores, referral_rates
from skin_model.bundle import ModelMetadata


def probs_with_malignant_share(shares: list[float]) -> np.ndarray:
    """One row per share: that much probability on melanoma, the rest on naevus."""
    rows = np.zeros((len(shares), len(CODES)))
    rows[:, CODES.index("mel")] = shares
    rows[:, CODES.index("nv")] = 1.0 - np.asarray(shares)
    return rows


def test_threshold_is_the_highest_keeping_the_target_sensitivity():
    # 10 malignant cases with roll-ups 0.05, 0.15, ..., 0.95 and 5 benign ones.
    malignant = [0.05 + 0.1 * i for i in range(10)]
    labels = np.array([CODES.index("mel")] * 10 + [CODES.index("nv")] * 5)
    probs = probs_with_malignant_share(malignant + [0.0, 0.1, 0.2, 0.3, 0.4])
    threshold = choose_referral_threshold(labels, probs, target_sensitivity=0.90)
    # 9 of 10 (0.9) are referred up to 0.15; at 0.16 only 8 of 10 are.
    assert threshold == pytest.approx(0.15)
    assert referral_rates(labels, probs, threshold).sensitivity >= 0.90
    assert referral_rates(labels, probs, threshold + 0.01).sensitivity < 0.90
    assert choose_referral_threshold(labels, probs, target_sensitivity=0.5) == pytest.approx(0.55)


def test_rates_by_hand():
    labels = np.array([CODES.index("bcc"), CODES.index("akiec"), CODES.index("nv"), CODES.index("df")])
    probs = np.zeros((4, len(CODES)))
    probs[0, CODES.index("bcc")] = 0.6  # malignant, referred
    probs[0, CODES.index("nv")] = 0.4
    probs[1, CODES.index("nv")] = 1.0  # malignant, missed
    probs[2, CODES.index("akiec")] = 0.3  # benign, referred (false alarm)
    probs[2, CODES.index("nv")] = 0.7
    probs[3, CODES.index("df")] = 1.0  # benign, not referred
    np.testing.assert_allclose(malignant_scores(probs), [0.6, 0.0, 0.3, 0.0])
    rates = referral_rates(labels, probs, 0.25)
    assert (rates.sensitivity, rates.specificity, rates.referred) == (0.5, 0.5, 0.5)
    assert (rates.n_malignant, rates.n_benign) == (2, 2)


def test_no_malignant_case_is_a_clear_error():
    with pytest.raises(ValueError, match="No malignant"):
        choose_referral_threshold(np.array([CODES.index("nv")]), probs_with_malignant_share([0.2]))


@pytest.mark.parametrize("threshold, refer", [(0.2, True), (0.45, True), (0.5, False), (None, None)])
def test_prediction_cue_follows_the_threshold(threshold, refer):
    probs = tuple(probs_with_malignant_share([0.45])[0])
    prediction = Prediction(probs, 0.5, threshold)
    assert prediction.refer is refer
    sentence = prediction.referral_sentence
    if threshold is None:
        assert sentence is None and prediction.as_dict()["refer"] is None
        return
    assert sentence.startswith(f"malignant probability {format_probability(0.45)}")
    assert format_probability(threshold) in sentence
    assert sentence.endswith(": refer") is refer


def _report(model: dict, shares: list[float], codes: list[str]) -> EvaluationReport:
    from skin_model.evaluation.metrics import evaluate_probabilities

    labels = np.array([CODES.index(c) for c in codes])
    return evaluate_probabilities(labels, probs_with_malignant_share(shares), [f"im{i}" for i in range(len(codes))],
                                  dataset={"name": "toy"}, model=model)


def test_a_report_is_judged_at_its_own_models_threshold_else_the_served_one():
    """A held-out run's report records the threshold its own validation chose; the referral table and the
    "Other clinics" rows use it, and fall back to the served threshold only for reports without one."""
    from skin_model.evaluation.holdout import held_out_row
    from skin_model.report.evaluation_tables import referral_frame

    shares, codes = [0.1, 0.3, 0.5, 0.2, 0.6], ["mel", "mel", "mel", "nv", "nv"]
    own = _report({"version": "run", "referral_threshold": 0.25}, shares, codes)
    bare = _report({"version": "old"}, shares, codes)
    assert own.referral(served_threshold=0.55).threshold == 0.25
    assert (own.referral().sensitivity, own.referral().specificity) == (pytest.approx(2 / 3), 0.5)
    assert bare.referral() is None, "no threshold recorded and none served"
    assert bare.referral(0.55).sensitivity == pytest.approx(0 / 3) and bare.referral(0.55).specificity == 0.5
    empty = _report({"referral_threshold": 0.25}, shares, codes)
    empty.predictions = []
    assert empty.referral(0.25) is None, "nothing to count without per-image predictions"

    frame = referral_frame([("own", own), ("bare", bare), ("empty", empty)], served_threshold=0.55)
    assert list(frame["Evaluation"]) == ["own", "bare"]
    assert list(frame["Threshold"]) == [0.25, 0.55]
    assert list(frame["Malignant sensitivity"]) == pytest.approx([2 / 3, 0.0])

    own.dataset.update(split_method="held-out source", sources=["rosendahl"], recipe="--augment artefacts")
    row = held_out_row(own, "heldout_rosendahl.json")
    assert (row.referral_sensitivity, row.referral_specificity) == (pytest.approx(2 / 3), 0.5)
    assert held_out_row(bare, "old.json").referral_sensitivity is None, "an old report has no threshold: blank"


def test_old_metadata_loads_without_the_new_fields(tmp_path):
    old = {"version": "0.9", "created": "2026-01-01", "unsure_threshold": 0.5}
    (tmp_path / "metadata.json").write_text(json.dumps(old))
    meta = ModelMetadata.from_json(tmp_path / "metadata.json")
    assert meta.referral_threshold is None and meta.known_limits == []


@pytest.fixture(scope="module")
def shipped_meta(shipped_bundle: Path) -> ModelMetadata:
    return ModelMetadata.from_json(shipped_bundle / "metadata.json")


def test_shipped_referral_threshold_is_the_one_chosen_on_validation_as_served(shipped_bundle, shipped_meta):
    name = "evaluations/val_tta.json" if shipped_meta.test_time_augmentation else "evaluation_val.json"
    val = EvaluationReport.from_json(shipped_bundle / name)
    assert val.dataset["split"] == "val" and bool(val.model.get("tta")) is shipped_meta.test_time_augmentation
    labels, probs = val.labels_and_probs()
    assert shipped_meta.referral_threshold == choose_referral_threshold(labels, probs)
    assert referral_rates(labels, probs, shipped_meta.referral_threshold).sensitivity >= 0.90
    assert shipped_meta.known_limits, "the shipped bundle carries its known limits"


def test_metadata_update_cli_fills_the_fields_and_leaves_the_model(shipped_bundle, shipped_meta, tmp_path):
    from skin_model.cli.metadata_update import main
    from skin_model.bundle import sha256_of

    bundle = tmp_path / "bundle"
    (bundle / "evaluations").mkdir(parents=True)
    for name in ("evaluations/val_tta.json", "evaluations/test_tta.json"):
        shutil.copy(shipped_bundle / name, bundle / name)
    meta = json.loads((shipped_bundle / "metadata.json").read_text())
    meta = {k: v for k, v in meta.items() if k not in ("referral_threshold", "known_limits")}
    meta["metrics"].pop("test_tta", None)
    (bundle / "metadata.json").write_text(json.dumps(meta))
    assert main(["--weights", str(bundle)]) == 0
    updated = ModelMetadata.from_json(bundle / "metadata.json")
    assert updated.referral_threshold == shipped_meta.referral_threshold
    test = EvaluationReport.from_json(bundle / "evaluations/test_tta.json")
    assert updated.metrics["test_tta"] == pytest.approx(test.headline())
    assert updated.model_sha256 == shipped_meta.model_sha256 == sha256_of(shipped_bundle / "model.keras")
    # A report for another model is refused.
    val = json.loads((bundle / "evaluations/val_tta.json").read_text())
    val["model"]["model_sha256"] = "0" * 64
    (bundle / "evaluations/val_tta.json").write_text(json.dumps(val))
    assert main(["--weights", str(bundle)]) == 1


def test_metadata_update_states_the_limits_of_the_sources_the_model_saw(shipped_bundle, shipped_meta):
    import copy

    from skin_model.evaluation.metadata_update import update_metadata

    val = EvaluationReport.from_json(shipped_bundle / "evaluations/val_tta.json")
    ham_only = copy.deepcopy(shipped_meta)
    ham_only.data = {**ham_only.data, "folders": [
        {"folder": "ham10000", "sources": [{"source": "rosendahl", "counts": {"train": {"nv": 5}}}]}]}
    assert any(limit.startswith("One data set") for limit in update_metadata(ham_only, val, None).known_limits)
    pooled = copy.deepcopy(shipped_meta)
    pooled.known_limits = ["an old wording"]
    pooled.data = {**pooled.data, "folders": [
        {"folder": "ham10000", "sources": [{"source": "rosendahl", "counts": {"train": {"nv": 5}}}]},
        {"folder": "isic_archive", "sources": [{"source": "isic2017", "counts": {"train": {"mel": 5}}}]}]}
    limits = update_metadata(pooled, val, None).known_limits
    assert any(limit.startswith("Few clinics") for limit in limits) and "an old wording" not in limits
