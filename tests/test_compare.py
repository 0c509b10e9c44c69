"""The paired lesion bootstrap of two held-out reports (skin_model.evaluation.compare and its CLI): a report against
itself differs by nothing, a clearly better one has an interval above zero, lesions are resampled together,
reports of different images or labels are refused with the reason, several candidate reports are compared
as their ensemble, and the melanoma-sensitivity operating point is the smallest up-weighting that reaches it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from skin_model.cli import compare as cli
from skin_model.evaluation.compare import (MEL, NV, ComparisonError, at_melanoma_sensitivity, balanced_accuracy, macro_auc,
                                mean_predictions, melanoma_sensitivity, pair_predictions, paired_bootstrap)
from skin_model.labels import CODES


def predictions(labels: np.ndarray, right: float, seed: int) -> list[dict]:
    """Per-image predictions whose top class is the label for a share ``right`` of the images."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(len(CODES)), len(labels))
    hit = rng.random(len(labels)) < right
    probs[hit, labels[hit]] += 2.0
    probs /= probs.sum(axis=1, keepdims=True)
    return [{"image_id": f"ISIC_{i:07d}", "label": CODES[y], "probs": p.tolist()}
            for i, (y, p) in enumerate(zip(labels, probs))]


LABELS = np.random.default_rng(0).integers(0, len(CODES), 400)


def test_a_report_against_itself_differs_by_nothing():
    same = predictions(LABELS, 0.6, seed=1)
    for d in paired_bootstrap(pair_predictions(same, same), resamples=50):
        assert d.difference == 0 and d.low == 0 and d.high == 0 and not d.excludes_zero


def test_a_clearly_better_report_has_an_interval_above_zero():
    pair = pair_predictions(predictions(LABELS, 0.4, seed=1), predictions(LABELS, 0.8, seed=2))
    figures = {d.figure: d for d in paired_bootstrap(pair, resamples=200)}
    accuracy = figures["balanced_accuracy"]
    assert accuracy.baseline == pytest.approx(balanced_accuracy_score(pair.labels, pair.baseline.argmax(axis=1)))
    assert 0 < accuracy.low < accuracy.difference < accuracy.high
    assert figures["macro_auc"].excludes_zero and figures["macro_auc"].difference > 0


def copies(preds: list[dict], n: int) -> list[dict]:
    """Each prediction ``n`` times under new image ids: ``n`` identical photos of every lesion."""
    return [{**p, "image_id": f"{p['image_id']}_{k}"} for p in preds for k in range(n)]


def test_images_of_one_lesion_are_resampled_together():
    base, cand = copies(predictions(LABELS[:100], 0.5, 1), 4), copies(predictions(LABELS[:100], 0.7, 2), 4)
    lesion_of = {p["image_id"]: p["image_id"].rsplit("_", 1)[0] for p in base}
    by_image, by_lesion = pair_predictions(base, cand), pair_predictions(base, cand, lesion_of)
    assert len(set(by_image.groups)) == 400 and len(set(by_lesion.groups)) == 100
    width = {name: {d.figure: d.high - d.low for d in paired_bootstrap(pair, resamples=300)}
             for name, pair in (("image", by_image), ("lesion", by_lesion))}
    # 100 independent lesions, not 400 images: the interval is about twice as wide (sqrt 4)
    assert width["lesion"]["balanced_accuracy"] > 1.5 * width["image"]["balanced_accuracy"]


def test_balanced_accuracy_is_sklearns_over_the_classes_present():
    labels = LABELS[LABELS != 6]  # vasc absent but predicted
    probs = np.random.default_rng(4).dirichlet(np.ones(len(CODES)), len(labels))
    assert balanced_accuracy(labels, probs) == pytest.approx(balanced_accuracy_score(labels, probs.argmax(axis=1)))


def test_macro_auc_skips_absent_classes():
    labels = np.array([0, 0, 4, 4, 5, 5])
    probs = np.eye(len(CODES))[labels] * 0.9 + 0.1 / len(CODES)
    assert macro_auc(labels, probs) == 1.0


def test_reports_of_other_images_or_labels_are_refused():
    base = predictions(LABELS, 0.5, seed=1)
    with pytest.raises(ComparisonError, match="different images"):
        pair_predictions(base, base[1:])
    relabelled = [dict(p) for p in base]
    relabelled[3]["label"] = "vasc" if relabelled[3]["label"] != "vasc" else "nv"
    with pytest.raises(ComparisonError, match="different labels"):
        pair_predictions(base, relabelled)
    with pytest.raises(ComparisonError, match="no per-image predictions"):
        pair_predictions([], base)


def test_cli_prints_and_writes_the_comparison(tmp_path: Path, capsys):
    paths = []
    for name, right, seed in (("base.json", 0.4, 1), ("cand.json", 0.8, 2)):
        path = tmp_path / name
        report(predictions(LABELS, right, seed), path)
        paths.append(str(path))
    out = tmp_path / "comparison.json"
    assert cli.main([*paths, "--data-dir", str(tmp_path / "nowhere"), "--resamples", "50",
                     "--output", str(out)]) == 0
    assert "balanced_accuracy" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["resampled_unit"] == "image" and len(written["figures"]) == 4
    point = written["at_melanoma_sensitivity"]["candidate"]
    assert point["target_sensitivity"] == 0.70 and point["melanoma_sensitivity"] >= 0.70
    assert cli.main([paths[0], str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_an_ensemble_is_the_mean_of_its_reports_probabilities():
    first, second = predictions(LABELS, 0.5, seed=1), predictions(LABELS, 0.7, seed=2)
    assert mean_predictions([first]) == first
    ensemble = {p["image_id"]: p for p in mean_predictions([first, list(reversed(second))])}
    for a, b in zip(first, second):
        assert ensemble[a["image_id"]]["label"] == a["label"]
        assert ensemble[a["image_id"]]["probs"] == pytest.approx((np.array(a["probs"]) + b["probs"]) / 2)
    with pytest.raises(ComparisonError, match="different images"):
        mean_predictions([first, second[:-1]])


def test_cli_compares_several_candidate_reports_as_their_ensemble(tmp_path: Path, capsys):
    runs = [predictions(LABELS, right, seed) for right, seed in ((0.4, 1), (0.6, 2), (0.6, 3))]
    paths = [tmp_path / f"run{i}.json" for i in range(3)]
    for preds, path in zip(runs, paths):
        report(preds, path)
    out = tmp_path / "comparison.json"
    assert cli.main([*map(str, paths), "--data-dir", str(tmp_path / "nowhere"), "--resamples", "20",
                     "--output", str(out)]) == 0
    assert "mean of (run1.json + run2.json)" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["candidate"] == ["run1.json", "run2.json"]
    mean = (np.array([p["probs"] for p in runs[1]]) + np.array([p["probs"] for p in runs[2]])) / 2
    figure = {f["figure"]: f for f in written["figures"]}["balanced_accuracy"]
    assert figure["candidate"] == pytest.approx(balanced_accuracy_score(LABELS, mean.argmax(axis=1)))


def test_the_operating_point_is_the_smallest_melanoma_weight_reaching_the_sensitivity():
    # Ten melanomas whose melanoma probability is 0.10 .. 0.55 against a naevus probability 0.52; ten naevi
    # with melanoma 0.2, naevus 0.6. A melanoma turns melanoma once the weight passes 0.52 / its probability.
    mel_p = np.linspace(0.10, 0.55, 10)
    probs = np.zeros((20, len(CODES)))
    probs[:10, MEL], probs[:10, NV] = mel_p, 0.52
    probs[10:, MEL], probs[10:, NV] = 0.2, 0.6
    labels = np.array([MEL] * 10 + [NV] * 10)
    assert melanoma_sensitivity(labels, probs) == pytest.approx(0.1)  # only 0.55 beats 0.52 unweighted
    point = at_melanoma_sensitivity(labels, probs, 0.70)
    assert point.melanoma_sensitivity == pytest.approx(0.7)
    assert point.weight == pytest.approx(0.52 / mel_p[3], rel=1e-6)  # the 7th-largest melanoma probability
    assert point.naevus_recall == 1.0  # 0.2 x 2.08 is still below 0.6
    assert point.balanced_accuracy == pytest.approx((0.7 + 1.0) / 2)
    assert at_melanoma_sensitivity(labels, probs, 1.0).naevus_recall == 0.0  # x5.2: 1.04 beats the naevi's 0.6
    assert at_melanoma_sensitivity(labels, probs, 0.05).weight == 1.0  # already reached: never down-weighted
    with pytest.raises(ValueError, match="no melanoma"):
        at_melanoma_sensitivity(labels[10:], probs[10:], 0.70)


def report(preds: list[dict], path: Path) -> None:
    """Write the evaluation report of ``preds`` as train.py and evaluate write it."""
    from skin_model.evaluation.metrics import evaluate_probabilities

    evaluate_probabilities(np.array([CODES.index(p["label"]) for p in preds]),
                           np.array([p["probs"] for p in preds]), [p["image_id"] for p in preds],
                           dataset={"name": "synthetic"}, model={"version": "test"}).to_json(path)
