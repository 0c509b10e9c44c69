"""Evaluation metrics and temperature scaling on small hand-made arrays whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from skin_model.serving.calibration import apply_temperature, fit_temperature, nll
from skin_model.labels import CODES
from skin_model.evaluation.metrics import EvaluationReport, expected_calibration_error, evaluate_probabilities

AKIEC, BCC, MEL, NV = (CODES.index(c) for c in ("akiec", "bcc", "mel", "nv"))


def confident_probs(predicted: list[int], top: float = 0.7) -> np.ndarray:
    """Rows with ``top`` on the predicted class and the rest spread evenly over the other six."""
    probs = np.full((len(predicted), len(CODES)), (1.0 - top) / (len(CODES) - 1))
    probs[np.arange(len(predicted)), predicted] = top
    return probs


# 10 cases: 2 akiec, 2 bcc, 4 mel, 2 nv.
TRUTH = [AKIEC, AKIEC, BCC, BCC, MEL, MEL, MEL, MEL, NV, NV]
PREDICTED = [AKIEC, BCC, BCC, BCC, MEL, MEL, MEL, NV, NV, MEL]


@pytest.fixture(scope="module")
def report() -> EvaluationReport:
    ids = [f"case_{i}" for i in range(len(TRUTH))]
    return evaluate_probabilities(np.array(TRUTH), confident_probs(PREDICTED), ids,
                                  dataset={"name": "toy"}, model={"version": "toy"}, temperature=1.5)


def test_balanced_accuracy_and_accuracy_by_hand(report):
    # recalls: akiec 1/2, bcc 2/2, mel 3/4, nv 1/2; absent classes do not count
    assert report.balanced_accuracy == pytest.approx((0.5 + 1.0 + 0.75 + 0.5) / 4)
    assert report.accuracy == pytest.approx(7 / 10)
    assert report.n_images == 10


def test_melanoma_and_malignant_rates_by_hand(report):
    # melanoma: 3 of 4 found; of 6 non-melanomas, one naevus is called melanoma
    assert report.melanoma_sensitivity == pytest.approx(3 / 4)
    assert report.melanoma_specificity == pytest.approx(5 / 6)
    # malignant score = p(mel)+p(bcc)+p(akiec): 0.8 when a malignant class is predicted, 0.15 otherwise.
    # 8 malignant cases, the melanoma called a naevus is missed; 1 of 2 naevi is called malignant.
    assert report.malignant_sensitivity == pytest.approx(7 / 8)
    assert report.malignant_specificity == pytest.approx(1 / 2)


def test_confusion_matrix_by_hand(report):
    expected = np.zeros((7, 7), int)
    for t, p in zip(TRUTH, PREDICTED):
        expected[t, p] += 1
    assert np.array(report.confusion_matrix).tolist() == expected.tolist()
    assert report.confusion_matrix[MEL][NV] == 1 and report.confusion_matrix[NV][MEL] == 1


def test_per_class_auc_and_support_by_hand(report):
    bcc = report.per_class["bcc"]
    # both bcc cases score 0.7; of 8 other cases one (an akiec called bcc) ties at 0.7, the rest score lower
    assert bcc["auc"] == pytest.approx((7 + 0.5) / 8)
    assert bcc["support"] == 2 and bcc["recall"] == pytest.approx(1.0)
    assert bcc["precision"] == pytest.approx(2 / 3)
    assert report.per_class["df"]["auc"] is None and report.per_class["df"]["support"] == 0
    assert set(report.roc_curves) == {"akiec", "bcc", "mel", "nv"}


def test_predictions_keep_ids_labels_and_probabilities(report):
    assert [p["image_id"] for p in report.predictions] == [f"case_{i}" for i in range(10)]
    assert [p["label"] for p in report.predictions] == [CODES[t] for t in TRUTH]
    assert report.predictions[1]["probs"][BCC] == pytest.approx(0.7)


def test_report_json_round_trip(report, tmp_path):
    path = tmp_path / "report.json"
    report.to_json(path)
    assert EvaluationReport.from_json(path) == report


def test_ece_is_zero_when_confidence_matches_accuracy():
    # 10 cases at confidence 0.8 with exactly 8 right, 10 at 0.6 with exactly 6 right
    predicted = [NV] * 20
    probs = np.vstack([confident_probs(predicted[:10], 0.8), confident_probs(predicted[10:], 0.6)])
    truth = np.array([NV] * 8 + [MEL] * 2 + [NV] * 6 + [MEL] * 4)
    assert expected_calibration_error(truth, probs) == pytest.approx(0.0, abs=1e-12)


def test_ece_measures_overconfidence():
    probs = confident_probs([NV] * 10, 0.9)
    truth = np.array([NV] * 5 + [MEL] * 5)  # 90 % confident, 50 % right
    assert expected_calibration_error(truth, probs) == pytest.approx(0.4)


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_temperature = 2.5
    logits = rng.normal(0.0, 2.0, size=(20000, 7))
    labels = np.array([rng.choice(7, p=p) for p in softmax(logits, axis=1)])
    overconfident = softmax(logits * true_temperature, axis=1)  # what an overconfident model would output
    fitted = fit_temperature(overconfident, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert nll(overconfident, labels, fitted) < nll(overconfident, labels, 1.0)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7, 4.0])
def test_apply_temperature_keeps_rows_normalised_and_ranking(temperature):
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(size=(50, 7)), axis=1)
    scaled = apply_temperature(probs, temperature)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-12)
    assert (scaled.argmax(axis=1) == probs.argmax(axis=1)).all()
    top_before, top_after = probs.max(axis=1), scaled.max(axis=1)
    if temperature > 1:
        assert (top_after < top_before).all(), "T > 1 softens"
    elif temperature < 1:
        assert (top_after > top_before).all(), "T < 1 sharpens"
    else:
        np.testing.assert_allclose(scaled, probs, atol=1e-12)


def test_uncalibrated_ece_reported_with_temperature():
    truth = np.array(TRUTH)
    probs = confident_probs(PREDICTED)
    with_t = evaluate_probabilities(truth, probs, [str(i) for i in range(10)], dataset={}, model={},
                                    temperature=2.0)
    without = evaluate_probabilities(truth, probs, [str(i) for i in range(10)], dataset={}, model={})
    assert without.ece_uncalibrated is None and without.reliability_uncalibrated is None
    # undoing T=2 sharpens the 0.7 rows: the uncalibrated top probability is higher, so its ECE differs
    uncalibrated = apply_temperature(probs, 0.5)
    assert with_t.ece_uncalibrated == pytest.approx(expected_calibration_error(truth, uncalibrated))
    assert with_t.ece == pytest.approx(without.ece)
