"""Loading and checking evaluation JSON, the split audit, training curves, tables, report charts and the
safety figures (refer-or-abstain curve, out-of-distribution gate, test-time augmentation benchmark)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from skin_model.labels import CODES
from skin_model.evaluation.metrics import EvaluationReport, choose_unsure_threshold, evaluate_probabilities
from skin_model.bundle import ModelMetadata
from skin_model.evaluation.published import PUBLISHED_RESULTS
from skin_model.report.charts import (confusion_heatmap, coverage_chart, pr_chart, reliability_chart, roc_chart,
                                      training_curve_chart)
from skin_model.bundle import (BundleFileError, LocalisationFigures, OodCategory, OodFigures, read_localisation,
                               read_ood_figures, write_localisation, write_ood_figures)
from skin_model.report.evaluation_files import list_evaluation_files, load_report
from skin_model.report.evaluation_tables import (comparison_frame, confusion_frames, coverage_frame, headlines,
                                                 operating_point, per_class_frame)
from skin_model.report.ood_figures import ood_category_frame
from skin_model.report.safety_results import tta_frame, tta_summary
from skin_model.report.served_model import unsure_threshold
from skin_model.report.split_audit import split_audit
from skin_model.report.training_curves import training_curves

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "safety_benchmark.py"


@pytest.fixture(scope="module")
def report() -> EvaluationReport:
    """A report from random but class-informative probabilities for 70 images (10 per class)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CODES)), 10)
    logits = rng.normal(size=(len(labels), len(CODES)))
    logits[np.arange(len(labels)), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return evaluate_probabilities(labels, probs, [f"ISIC_{i:07d}" for i in range(len(labels))],
                                  dataset={"name": "synthetic", "split": "test", "split_method": "by lesion"},
                                  model={"version": "9.9.9"}, temperature=1.4)


@pytest.fixture()
def report_file(report, tmp_path) -> Path:
    path = tmp_path / "evaluation_test.json"
    report.to_json(path)
    return path


def rewrite(path: Path, **changes) -> Path:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------- loading
def test_load_report_round_trips(report, report_file):
    loaded = load_report(report_file)
    assert loaded.balanced_accuracy == pytest.approx(report.balanced_accuracy)
    assert loaded.per_class == report.per_class
    assert loaded.confusion_matrix == report.confusion_matrix


def test_missing_file_is_named(tmp_path):
    with pytest.raises(BundleFileError, match=r"evaluation_val.json .*does not exist"):
        load_report(tmp_path / "evaluation_val.json")


def test_invalid_json_names_file_and_line(report_file):
    report_file.write_text('{"n_images": 3,\n "accuracy": }')
    with pytest.raises(BundleFileError) as info:
        load_report(report_file)
    assert "evaluation_test.json" in str(info.value) and "not valid JSON" in str(info.value)
    assert "line 2" in str(info.value)


def test_wrong_top_level_type(report_file):
    report_file.write_text("[1, 2, 3]")
    with pytest.raises(BundleFileError, match="expected a JSON object"):
        load_report(report_file)


def test_missing_and_unknown_fields_are_listed(report_file):
    data = json.loads(report_file.read_text())
    del data["balanced_accuracy"], data["per_class"]
    data["f2_score"] = 0.3
    report_file.write_text(json.dumps(data))
    with pytest.raises(BundleFileError) as info:
        load_report(report_file)
    message = str(info.value)
    assert "missing field(s) balanced_accuracy, per_class" in message
    assert "unknown field(s) f2_score" in message


@pytest.mark.parametrize("changes, expected", [
    ({"balanced_accuracy": 1.7}, "'balanced_accuracy' must be a number between 0 and 1"),
    ({"macro_auc": "high"}, "'macro_auc' must be a number between 0 and 1 or null"),
    ({"n_images": 0}, "'n_images' must be a positive integer"),
    ({"confusion_matrix": [[1, 2], [3, 4]]}, "'confusion_matrix' must be 7x7"),
    ({"per_class": {"mel": {}}}, "'per_class' lacks class(es) akiec, bcc, bkl, df, nv, vasc"),
    ({"roc_curves": {"mel": {"x": [0, 1], "y": [0]}}}, "'roc_curves' must map class codes"),
    ({"reliability": "good"}, "'reliability' must be a list of bins"),
])
def test_bad_values_are_named(report_file, changes, expected):
    rewrite(report_file, **changes)
    with pytest.raises(BundleFileError) as info:
        load_report(report_file)
    assert expected in str(info.value)


def test_confusion_matrix_must_count_n_images(report, report_file):
    rewrite(report_file, n_images=report.n_images + 5)
    with pytest.raises(BundleFileError, match=f"counts {report.n_images} images but 'n_images' is {report.n_images + 5}"):
        load_report(report_file)


# ---------------------------------------------------------------------------------------------- file list
def test_list_evaluation_files(tmp_path, monkeypatch, report):
    weights = tmp_path / "weights"
    report.to_json(weights / "evaluation_val.json")
    report.to_json(weights / "evaluation_test.json")
    report.to_json(weights / "evaluations" / "b_external.json")
    report.to_json(weights / "evaluations" / "a_clinic.json")
    (weights / "evaluations" / "notes.txt").write_text("not a report")
    monkeypatch.delenv("SKIN_REPORTS_DIR", raising=False)
    found = list_evaluation_files(weights)
    assert [f.path.name for f in found] == ["evaluation_test.json", "evaluation_val.json", "a_clinic.json",
                                            "b_external.json"]
    assert found[0].label == "evaluation_test.json (training run)"
    assert found[2].origin == "evaluations folder"

    other = tmp_path / "elsewhere"
    report.to_json(other / "isic2018.json")
    monkeypatch.setenv("SKIN_REPORTS_DIR", str(other))
    assert [f.path.name for f in list_evaluation_files(weights)] == ["evaluation_test.json", "evaluation_val.json",
                                                                     "isic2018.json"]
    monkeypatch.delenv("SKIN_REPORTS_DIR")
    assert list_evaluation_files(tmp_path / "empty") == []


# ---------------------------------------------------------------------------------------------- split audit
def write_split(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    pd.DataFrame(rows, columns=["image_id", "lesion_id", "dx", "split"]).to_csv(path, index=False)
    return path


def test_split_audit_counts_and_passes(tmp_path):
    rows = [("I1", "L1", "mel", "train"), ("I2", "L1", "mel", "train"), ("I3", "L2", "nv", "train"),
            ("I4", "L3", "nv", "val"), ("I5", "L4", "mel", "test"), ("I6", "L4", "mel", "test"),
            ("I7", "L5", "df", "test")]
    audit = split_audit(write_split(tmp_path / "split.csv", rows))
    assert audit.passed and audit.crossing_lesions == ()
    assert list(audit.images.columns) == ["train", "val", "test"]
    assert audit.images.loc["mel"].tolist() == [2, 0, 2]
    assert audit.lesions.loc["mel"].tolist() == [1, 0, 1]
    assert audit.images.loc["df"].tolist() == [0, 0, 1]
    assert audit.images.loc["akiec"].tolist() == [0, 0, 0], "every class is listed"
    assert audit.images.loc["total"].tolist() == [3, 1, 3]
    assert audit.lesions.loc["total"].tolist() == [2, 1, 2]
    assert (audit.n_images, audit.n_lesions) == (7, 5)


def test_split_audit_fails_on_a_lesion_in_two_splits(tmp_path):
    rows = [("I1", "L1", "mel", "train"), ("I2", "L1", "mel", "test"), ("I3", "L2", "nv", "val"),
            ("I4", "L3", "nv", "val"), ("I5", "L3", "nv", "test")]
    audit = split_audit(write_split(tmp_path / "split.csv", rows))
    assert not audit.passed
    assert audit.crossing_lesions == ("L1", "L3")


def test_split_audit_errors(tmp_path):
    with pytest.raises(BundleFileError, match="does not exist"):
        split_audit(tmp_path / "split.csv")
    (tmp_path / "split.csv").write_text("image_id,dx\nI1,mel\n")
    with pytest.raises(BundleFileError, match=r"missing column\(s\) lesion_id, split"):
        split_audit(tmp_path / "split.csv")


def test_split_audit_of_the_shipped_split(shipped_bundle):
    """The real split.csv written by train.py is lesion-grouped, and all 10,015 images are counted."""
    audit = split_audit(shipped_bundle / "split.csv")
    table = pd.read_csv(shipped_bundle / "split.csv")
    assert audit.passed
    assert audit.images.loc["total"].sum() == len(table)
    assert audit.lesions.drop(index="total").sum().sum() == table.groupby(["dx", "split"])["lesion_id"].nunique().sum()


# ---------------------------------------------------------------------------------------------- training curves
def history(epochs: dict[str, int]) -> dict[str, list[dict[str, float]]]:
    return {stage: [{"epoch": float(e), "loss": 2.0 - 0.1 * e, "accuracy": 0.5 + 0.01 * e,
                     "balanced_accuracy": 0.4 + 0.02 * e, "val_loss": 1.9 - 0.05 * e,
                     "val_accuracy": 0.55 + 0.01 * e, "val_balanced_accuracy": 0.45 + 0.03 * e}
                    for e in range(n)] for stage, n in epochs.items()}


def test_training_curves_run_over_both_stages(tmp_path):
    path = tmp_path / "history.json"
    path.write_text(json.dumps(history({"head": 2, "finetune": 3})))
    curves = training_curves(path)
    assert len(curves) == 5 * 3 * 2, "5 epochs x 3 metrics x train/validation"
    val_bacc = curves[(curves["metric"] == "balanced_accuracy") & (curves["subset"] == "validation")]
    assert val_bacc["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert val_bacc["stage"].tolist() == ["head", "head", "finetune", "finetune", "finetune"]
    assert val_bacc["stage_epoch"].tolist() == [1, 2, 1, 2, 3]
    assert val_bacc["value"].tolist() == pytest.approx([0.45, 0.48, 0.45, 0.48, 0.51])
    figure = training_curve_chart(curves, "balanced_accuracy")
    assert {t.name for t in figure.data} >= {"train, head", "validation, finetune"}
    assert [s["x0"] for s in figure.layout.shapes] == [2.5], "a line where fine-tuning starts"


def test_training_curves_errors(tmp_path):
    path = tmp_path / "history.json"
    with pytest.raises(BundleFileError, match="history.json .*does not exist"):
        training_curves(path)
    path.write_text("{oops")
    with pytest.raises(BundleFileError, match="not valid JSON"):
        training_curves(path)
    path.write_text(json.dumps({"head": [{"epoch": 0, "lr": 0.1}]}))
    with pytest.raises(BundleFileError, match="no per-epoch loss, accuracy, balanced_accuracy values"):
        training_curves(path)


# ---------------------------------------------------------------------------------------------- tables
def test_headlines_match_the_report(report):
    shown = {h.key: h for h in headlines(report)}
    assert set(shown) == {"balanced_accuracy", "accuracy", "macro_auc", "melanoma_sensitivity",
                          "melanoma_specificity", "ece"}
    assert shown["balanced_accuracy"].text == f"{report.balanced_accuracy:.1%}"
    assert shown["macro_auc"].text == f"{report.macro_auc:.3f}"
    assert shown["ece"].text == f"{report.ece:.3f}"
    assert all(h.meaning for h in shown.values())


def test_per_class_and_confusion_tables(report):
    table = per_class_frame(report)
    assert table["Code"].tolist() == list(CODES)
    assert table["Support"].tolist() == [report.per_class[c]["support"] for c in CODES] == [10] * 7
    assert table.loc[table["Code"] == "mel", "Malignant"].item()
    counts, shares = confusion_frames(report)
    assert counts.to_numpy().tolist() == report.confusion_matrix
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(shares), table["Recall"])


def test_comparison_puts_our_row_first(report):
    table = comparison_frame(report)
    ours = table.iloc[0]
    assert "9.9.9" in ours["Model"] and ours["Accuracy"] == report.accuracy
    assert ours["Balanced accuracy"] == report.balanced_accuracy and "synthetic" in ours["Test set"]
    assert len(table) == 1 + len(PUBLISHED_RESULTS)
    published = table.iloc[1:]
    assert published["Test set"].str.len().min() > 0 and published["Split"].str.len().min() > 0
    assert set(published["Status"]) <= {"verified", "reported"}
    isic = published[published["Model"].str.contains("ISIC 2018")].iloc[0]
    assert isic["Balanced accuracy"] == 0.885 and "1,512" in isic["Test set"]


def localisation_figures(**changes) -> dict:
    """The shape ``python -m skin_model.cli.localisation`` writes."""
    return {"share_inside": {"predicted": 0.8, "true": 0.7}, "chance_rate": 0.4, "n_images": 12,
            "method": "Grad-CAM", "box_source": "boxes.csv", "box_limits": "one box", "frame": "200x150",
            "split": "test", **changes}


def test_localisation_figures_round_trip_and_errors(tmp_path):
    assert read_localisation(tmp_path) is None, "absent: nothing to show"
    path = write_localisation(tmp_path, LocalisationFigures(**localisation_figures()))
    assert path.name == "localisation_test.json"
    figures = read_localisation(tmp_path)
    assert figures.share_inside == {"predicted": 0.8, "true": 0.7} and figures.n_images == 12
    path.write_text(json.dumps(localisation_figures(share_inside=0.8)))
    with pytest.raises(BundleFileError, match="localisation_test.json .*incomplete or malformed"):
        read_localisation(tmp_path)
    path.write_text(json.dumps(localisation_figures(chance_rate=1.4)))
    with pytest.raises(BundleFileError, match="shares must lie between 0 and 1"):
        read_localisation(tmp_path)


# ---------------------------------------------------------------------------------------------- charts
def test_charts_plot_the_stored_numbers(report):
    roc = roc_chart(report)
    names = [t.name for t in roc.data]
    assert f"mel (AUC {report.per_class['mel']['auc']:.3f})" in names and "chance" in names
    mel = next(t for t in roc.data if t.name.startswith("mel"))
    assert list(mel.x) == report.roc_curves["mel"]["x"]
    pr = pr_chart(report)
    assert len(pr.data) == len(report.pr_curves)
    reliability = reliability_chart(report)
    assert [t.name for t in reliability.data] == [
        f"before temperature scaling (ECE {report.ece_uncalibrated:.3f})",
        f"after temperature scaling (ECE {report.ece:.3f})", "perfect calibration"]
    assert list(reliability.data[1].y) == [b["accuracy"] for b in report.reliability]
    counts, shares = confusion_frames(report)
    heat = confusion_heatmap(shares, normalised=True)
    np.testing.assert_allclose(np.asarray(heat.data[0].z), shares.to_numpy())
    assert heat.data[0].text[0][0] == f"{shares.iloc[0, 0]:.0%}"


# ---------------------------------------------------------------------------------------------- refer or abstain
def kept_figures(report: EvaluationReport, threshold: float) -> tuple[float, float, float]:
    """(referred share, accuracy, balanced accuracy of the kept cases), straight from the stored predictions."""
    labels = np.array([CODES.index(p["label"]) for p in report.predictions])
    probs = np.array([p["probs"] for p in report.predictions])
    keep = probs.max(axis=1) >= threshold
    preds = probs.argmax(axis=1)
    return (1 - keep.mean(), (preds[keep] == labels[keep]).mean(),
            balanced_accuracy_score(labels[keep], preds[keep]))


def test_coverage_frame_is_the_stored_curve(report, tmp_path):
    frame = coverage_frame(report, tmp_path / "r.json")
    assert frame["threshold"].tolist() == [row["threshold"] for row in report.coverage]
    np.testing.assert_allclose(frame["coverage"], [row["coverage"] for row in report.coverage])
    np.testing.assert_allclose(frame["referred"], 1 - frame["coverage"])
    np.testing.assert_allclose(frame["balanced_accuracy"].dropna(),
                               [row["balanced_accuracy"] for row in report.coverage if row["balanced_accuracy"]
                                is not None])


@pytest.mark.parametrize("coverage, expected", [
    ([], "'coverage' must be a non-empty list"),
    ([{"threshold": 0.5, "coverage": 0.9}], "'coverage' must be a non-empty list of rows with threshold"),
    ([{"threshold": 0.5, "coverage": 1.4, "accuracy": None, "balanced_accuracy": None}],
     "'coverage' row 0: coverage must be between 0 and 1"),
])
def test_malformed_coverage_is_named(report, tmp_path, coverage, expected):
    broken = EvaluationReport(**{**report.__dict__, "coverage": coverage})
    with pytest.raises(BundleFileError, match=expected.replace("(", r"\(")):
        coverage_frame(broken, tmp_path / "r.json")


def test_operating_point_comes_from_the_stored_probabilities(report, tmp_path):
    confidence = np.array([max(p["probs"]) for p in report.predictions])
    threshold = float(np.round(np.median(confidence), 3))  # about half the images referred
    point = operating_point(report, threshold, tmp_path / "r.json")
    referred, accuracy, balanced = kept_figures(report, threshold)
    assert 0.3 < point.referred < 0.7
    assert point.threshold == threshold
    assert point.referred == pytest.approx(referred)
    assert point.accuracy == pytest.approx(accuracy) and point.balanced_accuracy == pytest.approx(balanced)
    assert point.accuracy > report.accuracy, "the kept, more confident half is more often right"


def test_operating_point_without_or_with_bad_predictions(report, tmp_path):
    assert operating_point(EvaluationReport(**{**report.__dict__, "predictions": []}), 0.5, tmp_path) is None
    bad = [{"image_id": "x", "label": "melanoma?", "probs": [0.1] * 7}]
    with pytest.raises(BundleFileError, match="'predictions' must be rows with a class code"):
        operating_point(EvaluationReport(**{**report.__dict__, "predictions": bad}), 0.5, tmp_path / "r.json")
    short = [{"image_id": "x", "label": "mel", "probs": [0.5, 0.5]}]
    with pytest.raises(BundleFileError, match="7 values per image"):
        operating_point(EvaluationReport(**{**report.__dict__, "predictions": short}), 0.5, tmp_path / "r.json")


def write_metadata(path: Path, **changes) -> Path:
    ModelMetadata(version="2.0.0", created="2026-11-26", **changes).to_json(path)
    return path


def test_unsure_threshold_is_read_from_the_metadata(tmp_path):
    threshold = unsure_threshold(write_metadata(tmp_path / "metadata.json", unsure_threshold=0.37))
    assert (threshold.value, threshold.model_version) == (0.37, "2.0.0")
    with pytest.raises(BundleFileError, match="'unsure_threshold' must be a number between 0 and 1, found 1.5"):
        unsure_threshold(write_metadata(tmp_path / "metadata.json", unsure_threshold=1.5))
    with pytest.raises(BundleFileError, match="metadata.json .*does not exist"):
        unsure_threshold(tmp_path / "none" / "metadata.json")
    (tmp_path / "metadata.json").write_text('{"version": ')
    with pytest.raises(BundleFileError, match="not valid JSON"):
        unsure_threshold(tmp_path / "metadata.json")
    (tmp_path / "metadata.json").write_text('{"version": "1", "created": "x", "threshold": 0.5}')
    with pytest.raises(BundleFileError, match="do not match the model metadata format"):
        unsure_threshold(tmp_path / "metadata.json")


@pytest.mark.parametrize("signal", [3.0, 0.3], ids=["target reachable", "target out of reach"])
def test_the_described_threshold_rule_is_what_choose_unsure_threshold_does(signal):
    """The page says: lowest threshold whose kept cases reach 85% accuracy while referring at most 35%,
    else the highest threshold that refers at most 35%. Checked by brute force on the same grid."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, len(CODES), 600)
    logits = rng.normal(size=(600, len(CODES)))
    logits[np.arange(600), labels] += signal * rng.uniform(0, 2, 600)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    grid = np.round(np.arange(0.0, 0.96, 0.01), 3)
    allowed = [t for t in grid if (confidence < t).mean() <= 0.35]
    reaching = [t for t in allowed if correct[confidence >= t].mean() >= 0.85]
    expected = min(reaching) if reaching else max(allowed)
    assert bool(reaching) == (signal > 1), "the two cases of the rule are both exercised"
    assert choose_unsure_threshold(labels, probs) == pytest.approx(expected)


def test_coverage_chart_marks_the_threshold(report, tmp_path):
    frame = coverage_frame(report, tmp_path)
    point = operating_point(report, 0.3, tmp_path)
    figure = coverage_chart(frame, point)
    balanced, accuracy, star = figure.data
    kept = frame.dropna(subset=["accuracy"])
    np.testing.assert_allclose(balanced.x, kept["referred"])
    np.testing.assert_allclose(balanced.y, kept["balanced_accuracy"])
    np.testing.assert_allclose(accuracy.y, kept["accuracy"])
    assert star.name == "app's unsure threshold 0.30"
    assert list(star.x) == [point.referred] * 2 and list(star.y) == [point.balanced_accuracy, point.accuracy]
    assert len(coverage_chart(frame, None).data) == 2, "nothing marked without an operating point"


# ---------------------------------------------------------------------------------------------- OOD gate
def ood_figures(**changes) -> dict:
    """``ood_figures.json`` in the shape ``python -m skin_model.cli.ood measure`` writes."""
    data = OodFigures(
        measured="2026-11-26T01:00:00+00:00", model_sha256="ab" * 32, threshold=3.21,
        gate={"components": 128, "feature_layer": "head_pool", "val_pass_rate": 0.981},
        dermoscopic_pass_rate=0.985, n_dermoscopic=400, dermoscopic_split="test (random 400)",
        non_dermoscopic_reject_rate=30 / 32, n_non_dermoscopic=32,
        categories=(OodCategory("photo", 20, 20), OodCategory("skin_patch", 6, 4), OodCategory("noise", 6, 6)),
        passed_names=("skin_patch_0", "skin_patch_3"), pass_goal=0.98, reject_goal=0.95).to_dict()
    data.update(changes)
    return data


def test_ood_figures_round_trip_and_table(tmp_path):
    assert read_ood_figures(tmp_path) is None
    (tmp_path / "ood_figures.json").write_text(json.dumps(ood_figures()))
    summary = read_ood_figures(tmp_path)
    assert (summary.dermoscopic_pass_rate, summary.n_dermoscopic, summary.threshold) == (0.985, 400, 3.21)
    assert summary.meets_pass_goal and not summary.meets_reject_goal, "93.75% rejected < 95% goal"
    assert summary.passed_names == ("skin_patch_0", "skin_patch_3")
    write_ood_figures(tmp_path, summary)
    assert read_ood_figures(tmp_path) == summary, "what the writer writes, the reader reads back"
    table = ood_category_frame(summary)
    assert table["Category"].tolist() == ["skin patch", "noise", "photo"], "worst category first"
    assert table["Images"].tolist() == [6, 6, 20] and table["Rejected"].tolist() == [4, 6, 20]
    assert table["Reject rate"].iloc[0] == pytest.approx(4 / 6)


@pytest.mark.parametrize("changes, expected", [
    ({"dermoscopic_pass_rate": None}, "rates and goals must lie between 0 and 1"),
    ({"n_dermoscopic": "many"}, "incomplete or malformed"),
    ({"non_dermoscopic_reject_rate": 95}, "rates and goals must lie between 0 and 1"),
    ({"n_non_dermoscopic": 0}, "positive image counts"),
    ({"categories": [{"name": "photo", "n": 2, "rejected": 3}]}, "0 <= rejected <= n"),
])
def test_malformed_ood_figures_are_named(tmp_path, changes, expected):
    (tmp_path / "ood_figures.json").write_text(json.dumps(ood_figures(**changes)))
    with pytest.raises(BundleFileError, match=f"ood_figures.json .*{expected}"):
        read_ood_figures(tmp_path)
    data = ood_figures()
    del data["threshold"]
    (tmp_path / "ood_figures.json").write_text(json.dumps(data))
    with pytest.raises(BundleFileError, match="incomplete or malformed"):
        read_ood_figures(tmp_path)


# ---------------------------------------------------------------------------------------------- TTA benchmark
def benchmark_module():
    """benchmarks/safety_benchmark.py, whose helpers write the figures the page reads."""
    spec = importlib.util.spec_from_file_location("safety_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def safety_file(tmp_path) -> Path:
    """safety.json with a ``tta`` block made by the benchmark's own helpers from synthetic predictions."""
    bench = benchmark_module()
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(len(CODES)), 12)
    logits = rng.normal(size=(len(labels), len(CODES)))
    logits[np.arange(len(labels)), labels] += 1.2
    single = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    logits[np.arange(len(labels)), labels] += 0.4
    averaged = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    results = {"measured": "2026-11-26T02:00:00+00:00", "machine": {"platform": "Linux-test", "cpus": 2},
               "model": {"version": "9.9.9", "sha256": "cd" * 32, "input_size": 224}, "ood": {"skipped": "no gate"},
               "tta": {"n_val": len(labels), "split": "val (random 84)",
                       "single_view": bench.classification_figures(labels, single),
                       "tta_8_views": bench.classification_figures(labels, averaged),
                       "latency_ms": {"single_view": bench.summary_ms([0.040, 0.050, 0.045]),
                                      "tta_8_views": bench.summary_ms([0.300, 0.350, 0.320])}}}
    path = tmp_path / "safety.json"
    path.write_text(json.dumps(results))
    return path


def test_tta_summary_and_table_show_the_benchmark(safety_file):
    stored = json.loads(safety_file.read_text())["tta"]
    summary = tta_summary(safety_file)
    assert summary.single_view.balanced_accuracy == stored["single_view"]["balanced_accuracy"]
    assert summary.tta.macro_auc == stored["tta_8_views"]["macro_auc"]
    assert summary.tta.latency_p50_ms == pytest.approx(320.0)
    assert (summary.n_val, summary.model_version, summary.machine) == (84, "9.9.9", "Linux-test, 2 CPUs")
    table = tta_frame(summary).set_index("Measure")
    one, eight = stored["single_view"], stored["tta_8_views"]
    assert table.loc["Balanced accuracy", "Single view"] == f"{one['balanced_accuracy']:.1%}"
    assert table.loc["Balanced accuracy", "8-view TTA"] == f"{eight['balanced_accuracy']:.1%}"
    assert table.loc["Balanced accuracy", "Change"] == \
        f"{100 * (eight['balanced_accuracy'] - one['balanced_accuracy']):+.1f} points"
    assert table.loc["Accuracy", "8-view TTA"] == f"{eight['accuracy']:.1%}"
    assert table.loc["Macro AUC", "Single view"] == f"{one['macro_auc']:.3f}"
    assert table.loc["Calibration error (ECE)", "8-view TTA"] == f"{eight['ece']:.3f}"
    assert table.loc["Latency per image (median)"].tolist() == ["45 ms", "320 ms", "×7.1"]


def test_tta_macro_auc_may_be_missing(safety_file):
    data = json.loads(safety_file.read_text())
    data["tta"]["single_view"]["macro_auc"] = None  # a class absent from a --val-limit sample
    safety_file.write_text(json.dumps(data))
    table = tta_frame(tta_summary(safety_file)).set_index("Measure")
    assert table.loc["Macro AUC", "Single view"] == "n/a" and table.loc["Macro AUC", "Change"] == "n/a"


@pytest.mark.parametrize("edit, expected", [
    (lambda d: "{oops", "not valid JSON"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "tta"}), "no 'tta' block"),
    (lambda d: json.dumps({**d, "tta": {**d["tta"], "latency_ms": {}}}), "'tta' block is incomplete"),
    (lambda d: json.dumps({**d, "tta": {**d["tta"], "single_view": {**d["tta"]["single_view"], "ece": 2}}}),
     "tta.single_view.ece must be a number between 0 and 1"),
    (lambda d: json.dumps({**d, "tta": {**d["tta"], "n_val": 0}}), "'tta.n_val' must be a positive count"),
])
def test_malformed_safety_json_is_named(safety_file, edit, expected):
    safety_file.write_text(edit(json.loads(safety_file.read_text())))
    with pytest.raises(BundleFileError) as info:
        tta_summary(safety_file)
    assert "safety.json" in str(info.value) and expected in str(info.value)


def test_missing_safety_json(tmp_path):
    with pytest.raises(BundleFileError, match="safety.json .*does not exist"):
        tta_summary(tmp_path / "safety.json")


def test_dataset_description_says_the_name_once(report):
    import dataclasses

    from skin_model.report.evaluation_tables import dataset_description

    named = dataclasses.replace(report, dataset={"name": "HAM10000 test split",
                                                  "description": "HAM10000 test split (held out, never used)"})
    text = dataset_description(named)
    assert text.count("HAM10000 test split") == 1 and "held out, never used" in text


def test_served_file_index_prefers_the_test_split_as_served(report):
    import dataclasses

    from skin_model.report.evaluation_files import served_file_index

    def variant(split, tta):
        return dataclasses.replace(report, dataset={"split": split}, model={"tta": tta})

    reports = [variant("test", False), variant("val", True), None, variant("test", True)]
    assert served_file_index(reports, served_tta=True) == 3
    assert served_file_index(reports, served_tta=False) == 0
    assert served_file_index(reports[:3], served_tta=True) == 1, "else any report predicted as served"


@pytest.mark.parametrize("value, met", [(0.749, False), (0.75, True)])
def test_target_lines_say_met_or_not(value, met):
    from skin_model.report.evaluation_tables import target_lines

    lines = dict((text.split(" ")[0], ok) for text, ok in target_lines({"balanced_accuracy": value}))
    assert lines["Balanced"] is met and lines["Macro"] is None, "a missing figure is not measured"
