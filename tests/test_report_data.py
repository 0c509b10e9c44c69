"""Loading and checking evaluation JSON, the split audit, training curves, tables and report charts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skin_model.labels import CODES
from skin_model.metrics import EvaluationReport, evaluate_probabilities
from skin_model.published import PUBLISHED_RESULTS
from skin_model.report_charts import (confusion_heatmap, pr_chart, reliability_chart, roc_chart,
                                      training_curve_chart)
from skin_model.report_data import (ReportError, comparison_frame, confusion_frames, headlines,
                                    list_evaluation_files, load_report, localisation_summary, per_class_frame,
                                    split_audit, training_curves)


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
    with pytest.raises(ReportError, match=r"evaluation_val.json .*does not exist"):
        load_report(tmp_path / "evaluation_val.json")


def test_invalid_json_names_file_and_line(report_file):
    report_file.write_text('{"n_images": 3,\n "accuracy": }')
    with pytest.raises(ReportError) as info:
        load_report(report_file)
    assert "evaluation_test.json" in str(info.value) and "not valid JSON" in str(info.value)
    assert "line 2" in str(info.value)


def test_wrong_top_level_type(report_file):
    report_file.write_text("[1, 2, 3]")
    with pytest.raises(ReportError, match="expected a JSON object"):
        load_report(report_file)


def test_missing_and_unknown_fields_are_listed(report_file):
    data = json.loads(report_file.read_text())
    del data["balanced_accuracy"], data["per_class"]
    data["f2_score"] = 0.3
    report_file.write_text(json.dumps(data))
    with pytest.raises(ReportError) as info:
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
    with pytest.raises(ReportError) as info:
        load_report(report_file)
    assert expected in str(info.value)


def test_confusion_matrix_must_count_n_images(report, report_file):
    rewrite(report_file, n_images=report.n_images + 5)
    with pytest.raises(ReportError, match=f"counts {report.n_images} images but 'n_images' is {report.n_images + 5}"):
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
    with pytest.raises(ReportError, match="does not exist"):
        split_audit(tmp_path / "split.csv")
    (tmp_path / "split.csv").write_text("image_id,dx\nI1,mel\n")
    with pytest.raises(ReportError, match=r"missing column\(s\) lesion_id, split"):
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
    with pytest.raises(ReportError, match="history.json .*does not exist"):
        training_curves(path)
    path.write_text("{oops")
    with pytest.raises(ReportError, match="not valid JSON"):
        training_curves(path)
    path.write_text(json.dumps({"head": [{"epoch": 0, "lr": 0.1}]}))
    with pytest.raises(ReportError, match="no per-epoch loss, accuracy, balanced_accuracy values"):
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


def test_localisation_summary(report, tmp_path):
    path = tmp_path / "r.json"
    assert localisation_summary(report, path) is None
    report.extras["localisation"] = {"share_inside": {"predicted": 0.8, "true": 0.7}, "chance_rate": 0.4,
                                     "n_images": 12, "method": "Grad-CAM", "box_source": "boxes.csv",
                                     "split": "test"}
    try:
        summary = localisation_summary(report, path)
        assert summary.share_inside == {"predicted": 0.8, "true": 0.7} and summary.n_images == 12
        report.extras["localisation"] = {"share_inside": 0.8}
        with pytest.raises(ReportError, match="extras.localisation is incomplete"):
            localisation_summary(report, path)
    finally:
        report.extras.pop("localisation")


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
