"""The Evaluation report page driven headlessly with AppTest, from a report written by the evaluate CLI
on 14 synthetic HAM10000-like images with the tiny bundle (plus safety figures written by the tests)."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from skin_model.labels import CODES
from skin_model.evaluation.metrics import EvaluationReport, evaluate_probabilities
from skin_model.bundle import ModelMetadata

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/report.py"
TIMEOUT = 120
DATASET_NAME = "tiny synthetic subset"


@pytest.fixture(scope="module")
def base_weights(tiny_bundle, synthetic_ham, tmp_path_factory) -> Path:
    """tiny_bundle + evaluation_test.json from ``skin_model.cli.evaluate.main`` on 2 synthetic images per class +
    a split.csv and a two-stage history.json."""
    from skin_model.cli.evaluate import main as evaluate_main

    meta = pd.read_csv(synthetic_ham / "HAM10000_metadata.csv")
    chosen = (meta.drop_duplicates("lesion_id").groupby("dx").head(2)
              .sort_values(["dx", "image_id"]).reset_index(drop=True))  # 2 lesions per class, in CODES order
    images = tmp_path_factory.mktemp("images")
    for image_id in chosen["image_id"]:
        shutil.copy(synthetic_ham / "images_200x150" / f"{image_id}.jpg", images / f"{image_id}.jpg")
    labels = images.parent / "labels.csv"
    chosen[["image_id", "dx"]].to_csv(labels, index=False)

    weights = tmp_path_factory.mktemp("weights") / "bundle"
    shutil.copytree(tiny_bundle, weights)
    code = evaluate_main(["--images", str(images), "--labels", str(labels), "--weights", str(weights),
                          "--out", str(weights / "evaluation_test.json"), "--name", DATASET_NAME])
    assert code == 0
    split = chosen[["image_id", "lesion_id", "dx"]].assign(split=["train", "val", "test", "test"] * 3 + ["train"] * 2)
    split.to_csv(weights / "split.csv", index=False)
    history = {stage: [{"epoch": e, "loss": 1.5 - 0.1 * e, "accuracy": 0.5, "balanced_accuracy": 0.4,
                        "val_loss": 1.4, "val_accuracy": 0.55, "val_balanced_accuracy": 0.45 + 0.01 * e}
                       for e in range(n)] for stage, n in (("head", 2), ("finetune", 3))}
    (weights / "history.json").write_text(json.dumps(history))
    return weights


@pytest.fixture()
def weights(base_weights, tmp_path, monkeypatch) -> Path:
    """A private copy of the weights folder, served through SKIN_WEIGHTS_DIR."""
    copy = Path(shutil.copytree(base_weights, tmp_path / "weights"))
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(copy))
    monkeypatch.delenv("SKIN_REPORTS_DIR", raising=False)
    monkeypatch.setenv("SKIN_SAFETY_RESULTS", str(tmp_path / "results" / "safety.json"))  # absent by default
    return copy


def open_report(timeout: int = TIMEOUT) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def tables(at: AppTest, column: str) -> list[pd.DataFrame]:
    """The displayed tables that have ``column`` (AppTest does not expose dataframe keys)."""
    return [d.value for d in at.dataframe if column in d.value.columns]


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_page_shows_the_values_of_the_json(weights):
    report = EvaluationReport.from_json(weights / "evaluation_test.json")
    at = open_report()
    assert not at.error, [e.value for e in at.error]
    metrics = metric_values(at)
    assert metrics["Balanced accuracy"] == f"{report.balanced_accuracy:.1%}"
    assert metrics["Accuracy"] == f"{report.accuracy:.1%}"
    assert metrics["Macro AUC"] == f"{report.macro_auc:.3f}"
    assert metrics["Melanoma sensitivity"] == f"{report.melanoma_sensitivity:.1%}"
    assert metrics["Calibration error (ECE)"] == f"{report.ece:.3f}"
    assert f"**{DATASET_NAME}**" in markdown_text(at) and "14 images" in markdown_text(at)
    assert any("Mean of the 7 per-class recalls" in c.value for c in at.caption), "what each figure means"

    (per_class,) = tables(at, "Support")
    assert per_class["Code"].tolist() == list(CODES)
    assert per_class["Support"].tolist() == [report.per_class[c]["support"] for c in CODES] == [2] * 7
    np.testing.assert_allclose(per_class["Recall"], [report.per_class[c]["recall"] for c in CODES])

    charts = at.get("plotly_chart")
    assert len(charts) == 2 + 2 + 1 + 1 + 3, "confusion x2, ROC, PR, reliability, coverage, 3 training curves"
    (comparison,) = [t.value for t in at.table if "Balanced accuracy" in t.value.columns]
    assert comparison.iloc[0]["Accuracy"] == f"{report.accuracy:.3f}"
    assert DATASET_NAME in comparison.iloc[0]["Test set"]
    assert any("near-duplicates" in w.value for w in at.warning)
    assert at.get("download_button"), "the JSON can be downloaded"


def test_split_audit_and_training_sections(weights):
    at = open_report()
    audit = [s.value for s in at.success if "Pass" in s.value]
    assert audit and "14 images" in audit[0]
    images, lesions = tables(at, "train")
    assert images.loc["total"].tolist() == [5, 3, 6] and images.loc["mel"].tolist() == [1, 1, 0]
    assert lesions.loc["total"].tolist() == [5, 3, 6], "one image per lesion in this subset"


def test_a_lesion_in_two_splits_fails_the_audit(weights):
    split = pd.read_csv(weights / "split.csv")
    split.loc[1, "lesion_id"] = split.loc[0, "lesion_id"]  # image 0 is train, image 1 is val
    split.to_csv(weights / "split.csv", index=False)
    at = open_report()
    fails = [e.value for e in at.error if "Fail" in e.value]
    assert fails and split.loc[0, "lesion_id"] in fails[0]


def test_selector_lists_the_reports_folder(weights, tmp_path, monkeypatch):
    extra_dir = tmp_path / "more"
    labels = np.arange(len(CODES)).repeat(3)
    probs = np.full((len(labels), len(CODES)), 0.02)
    probs[np.arange(len(labels)), labels] = 0.88  # every image right: balanced accuracy 100%
    other = evaluate_probabilities(labels, probs, [f"x{i}" for i in range(len(labels))],
                                   dataset={"name": "clinic B"}, model={"version": "test"})
    other.to_json(extra_dir / "clinic_b.json")
    monkeypatch.setenv("SKIN_REPORTS_DIR", str(extra_dir))
    at = open_report()
    selector = at.selectbox(key="report_file")
    assert selector.options == ["evaluation_test.json (training run) · single view",
                                "clinic_b.json (evaluations folder) · single view"]
    selector.select_index(1).run()
    assert not at.exception and not at.error
    assert metric_values(at)["Balanced accuracy"] == "100.0%"
    assert "**clinic B**" in markdown_text(at)


def test_no_evaluation_file_gives_a_clear_message(weights):
    (weights / "evaluation_test.json").unlink()
    at = open_report()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "No evaluation file found" in errors[0] and "evaluation_test.json" in errors[0]
    assert [s for s in at.success if "Pass" in s.value], "split audit still shown"


@pytest.mark.parametrize("content, problem", [
    ('{"dataset": {"name": "x"}, "n_images": ', "not valid JSON"),
    (json.dumps({"dataset": {}, "n_images": 3}), "missing field(s) model, balanced_accuracy"),
])
def test_malformed_json_gives_a_clear_message(weights, content, problem):
    (weights / "evaluation_test.json").write_text(content)
    at = open_report()
    errors = [e.value for e in at.error]
    assert len(errors) == 1
    assert "evaluation_test.json" in errors[0] and problem in errors[0]
    assert not at.metric


def test_missing_history_is_reported_and_the_rest_still_shows(weights):
    (weights / "history.json").unlink()
    at = open_report()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "history.json" in errors[0] and "does not exist" in errors[0]
    assert metric_values(at)["Balanced accuracy"].endswith("%")


def test_localisation_section(weights):
    at = open_report()
    assert any("python -m skin_model.cli.localisation" in i.value for i in at.info), "how to compute it"
    (weights / "localisation_test.json").write_text(json.dumps(
        {"share_inside": {"predicted": 0.625, "true": 0.5}, "chance_rate": 0.4125, "n_images": 8,
         "method": "Grad-CAM", "split": "test", "box_source": "lesion_bboxes_200x150.csv",
         "box_limits": "One box per image.", "frame": "200x150"}))
    at = open_report()
    metrics = metric_values(at)
    assert metrics["Peak inside the box (predicted class)"] == "62.5%"
    assert metrics["Peak inside the box (true class)"] == "50.0%"
    assert metrics["Chance rate"] == "41.2%"
    assert "lesion_bboxes_200x150.csv" in markdown_text(at)


# ---------------------------------------------------------------------------------------------- safety sections
def figure_of(at: AppTest, title: str) -> dict:
    """The plotly figure (as JSON) whose title starts with ``title``."""
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    return next(f for f in figures if f["layout"].get("title", {}).get("text", "").startswith(title))


def numbers(values) -> list[float]:
    """A trace's x or y from figure JSON: a list, or plotly's base64 typed array ({"dtype", "bdata"})."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def test_refer_or_abstain_marks_the_apps_threshold(weights):
    report = EvaluationReport.from_json(weights / "evaluation_test.json")
    labels = np.array([CODES.index(p["label"]) for p in report.predictions])
    probs = np.array([p["probs"] for p in report.predictions])
    threshold = round(float(np.median(probs.max(axis=1))), 2)  # about half the images referred
    metadata = ModelMetadata.from_json(weights / "metadata.json")
    metadata.unsure_threshold = threshold
    metadata.to_json(weights / "metadata.json")
    keep = probs.max(axis=1) >= threshold
    referred, kept_accuracy = 1 - keep.mean(), (probs.argmax(axis=1) == labels)[keep].mean()

    at = open_report()
    assert not at.error, [e.value for e in at.error]
    metrics = metric_values(at)
    assert metrics["Unsure threshold"] == f"{threshold:.1%}"
    assert metrics["Referred as unsure"] == f"{referred:.1%}"
    assert metrics["Kept cases: accuracy"] == f"{kept_accuracy:.1%}"
    text = markdown_text(at)
    assert f"The app's threshold ({threshold:.1%}, model test) was chosen on the validation split" in text
    assert "85% accuracy" in text and "at most 35%" in text, "the rule of choose_unsure_threshold"
    figure = figure_of(at, "Refer or abstain")
    star = next(t for t in figure["data"] if t["name"].startswith("app's unsure threshold"))
    assert numbers(star["x"])[0] == pytest.approx(referred)
    curve = next(t for t in figure["data"] if t["name"] == "balanced accuracy of kept cases")
    kept_rows = [r for r in report.coverage if r["balanced_accuracy"] is not None]
    assert numbers(curve["y"]) == pytest.approx([r["balanced_accuracy"] for r in kept_rows])
    assert numbers(curve["x"]) == pytest.approx([1 - r["coverage"] for r in kept_rows])


def test_refer_or_abstain_without_metadata_still_draws_the_curve(weights):
    (weights / "metadata.json").unlink()
    at = open_report()
    warnings = [w.value for w in at.warning if "unsure threshold cannot be marked" in w.value]
    assert warnings and "metadata.json" in warnings[0] and "does not exist" in warnings[0]
    figure = figure_of(at, "Refer or abstain")
    assert [t["name"] for t in figure["data"]] == ["balanced accuracy of kept cases", "accuracy of kept cases"]


def test_refer_or_abstain_without_per_image_probabilities(weights):
    path = weights / "evaluation_test.json"
    data = json.loads(path.read_text())
    data["predictions"] = []
    path.write_text(json.dumps(data))
    at = open_report()
    assert metric_values(at)["Unsure threshold"] == "50.0%" and "Referred as unsure" not in metric_values(at)
    assert any("stores no per-image probabilities" in c.value for c in at.caption)
    figure = figure_of(at, "Refer or abstain")
    assert not [t for t in figure["data"] if t["name"].startswith("app's unsure threshold")]


def write_ood_figures(weights: Path, figures: dict) -> None:
    (weights / "ood_figures.json").write_text(json.dumps(figures))


def test_ood_section(weights):
    at = open_report()
    notes = [i.value for i in at.info if "out-of-distribution" in i.value]
    assert notes and all(f"python -m skin_model.cli.ood {step}" in notes[0] for step in ("fit", "measure"))

    ood = {"measured": "2026-11-26T01:00:00+00:00", "model_sha256": "ab" * 32, "threshold": 2.875,
           "gate": {"components": 128, "feature_layer": "head_pool", "val_pass_rate": 0.98},
           "dermoscopic_pass_rate": 0.9925, "n_dermoscopic": 400, "dermoscopic_split": "test (random 400)",
           "non_dermoscopic_reject_rate": 0.9, "n_non_dermoscopic": 10,
           "categories": [{"name": "photo", "n": 6, "rejected": 6},
                          {"name": "naked_eye_closeup", "n": 4, "rejected": 3}],
           "passed_names": ["naked_eye_closeup_2"], "distances": {}, "pass_goal": 0.98, "reject_goal": 0.95}
    write_ood_figures(weights, ood)
    at = open_report()
    assert not at.error, [e.value for e in at.error]
    assert any("measured for another model" in w.value for w in at.warning), "ab...ab is not the served model"
    metrics = metric_values(at)
    assert metrics["Dermoscopic images passed"] == "99.2%"
    assert metrics["Non-dermoscopic images rejected"] == "90.0%"
    assert metrics["Gate threshold"] == "2.875"
    captions = [c.value for c in at.caption]
    assert any(c.startswith("Goal ≥ 98%: **met**") and "400 test (random 400) images" in c for c in captions)
    assert any(c.startswith("Goal ≥ 95%: **not met**") for c in captions)
    assert any("naked_eye_closeup_2" in c for c in captions), "the images let through are named"
    (categories,) = tables(at, "Reject rate")
    assert categories["Category"].tolist() == ["naked eye closeup", "photo"]
    assert categories["Rejected"].tolist() == [3, 6] and categories["Images"].tolist() == [4, 6]
    assert "**Non-dermoscopic set** (10 images)" in markdown_text(at) and "scikit-image" in markdown_text(at)


def test_malformed_ood_figures_are_reported_and_the_rest_still_shows(weights):
    write_ood_figures(weights, {"dermoscopic_pass_rate": 0.99})
    at = open_report()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "incomplete or malformed" in errors[0] and "ood_figures.json" in errors[0]
    assert metric_values(at)["Balanced accuracy"].endswith("%")
    assert [t for t in at.table if "Balanced accuracy" in t.value.columns], "the comparison after it is still shown"


def safety_results(version: str) -> dict:
    """safety.json in the shape benchmarks/safety_benchmark.py writes."""
    figures = {"balanced_accuracy": 0.7125, "accuracy": 0.8031, "macro_auc": 0.9342, "ece": 0.0412}
    averaged = {"balanced_accuracy": 0.7301, "accuracy": 0.8102, "macro_auc": 0.9418, "ece": 0.0387}
    return {"measured": "2026-11-26T02:00:00+00:00", "machine": {"platform": "Linux-test", "cpus": 2},
            "model": {"version": version, "sha256": "cd" * 32, "input_size": 96}, "ood": {"skipped": "no gate"},
            "tta": {"n_val": 1503, "split": "val", "single_view": figures, "tta_8_views": averaged,
                    "latency_ms": {"single_view": {"n": 20, "p50": 41.6, "p95": 55.0, "mean": 43.0},
                                   "tta_8_views": {"n": 20, "p50": 287.4, "p95": 310.0, "mean": 290.0}}}}


def test_tta_section_shows_the_benchmark(weights):
    at = open_report()
    notes = [i.value for i in at.info if "test-time augmentation benchmark" in i.value]
    assert notes and "python benchmarks/safety_benchmark.py" in notes[0], "how to produce it"

    path = Path(os.environ["SKIN_SAFETY_RESULTS"])
    path.parent.mkdir(parents=True)
    results = safety_results(version="test")
    path.write_text(json.dumps(results))
    at = open_report()
    assert not at.error and not [w for w in at.warning if "TTA" in w.value or "benchmark" in w.value]
    (table,) = tables(at, "8-view TTA")
    table = table.set_index("Measure")
    one, eight = results["tta"]["single_view"], results["tta"]["tta_8_views"]
    assert table.loc["Balanced accuracy"].tolist() == [f"{one['balanced_accuracy']:.1%}",
                                                       f"{eight['balanced_accuracy']:.1%}", "+1.8 points"]
    assert table.loc["Accuracy", "8-view TTA"] == f"{eight['accuracy']:.1%}"
    assert table.loc["Macro AUC", "Single view"] == f"{one['macro_auc']:.3f}"
    assert table.loc["Calibration error (ECE)", "8-view TTA"] == f"{eight['ece']:.3f}"
    assert table.loc["Latency per image (median)"].tolist() == ["42 ms", "287 ms", "×6.9"]
    assert any("1,503 images of the val split" in c.value for c in at.caption)


def test_tta_benchmark_of_another_model_is_flagged(weights):
    path = Path(os.environ["SKIN_SAFETY_RESULTS"])
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(safety_results(version="1.2.3")))
    at = open_report()
    assert any("measured for model 1.2.3" in w.value and "model test" in w.value for w in at.warning)


@pytest.mark.parametrize("content, problem", [
    ('{"tta": {"n_val": ', "not valid JSON"),
    (json.dumps({"tta": {"n_val": 10, "single_view": {"accuracy": 0.5}}}), "'tta' block is incomplete"),
])
def test_malformed_safety_json_gives_a_note_not_a_crash(weights, content, problem):
    path = Path(os.environ["SKIN_SAFETY_RESULTS"])
    path.parent.mkdir(parents=True)
    path.write_text(content)
    at = open_report()
    assert not at.exception and not at.error
    notes = [w.value for w in at.warning if "TTA benchmark cannot be shown" in w.value]
    assert len(notes) == 1 and "safety.json" in notes[0] and problem in notes[0]
    assert "python benchmarks/safety_benchmark.py" in notes[0]
    assert not tables(at, "8-view TTA")
    assert metric_values(at)["Balanced accuracy"].endswith("%")


def test_other_clinics_section_lists_held_out_reports_side_by_side(weights: Path):
    """Two held-out reports (a baseline and another recipe) in the evaluations folder appear as two rows of the
    "Other clinics" table with their figures, the served model's recipe marked and each run's referral cue at
    its own threshold; an ordinary evaluation there is not a row."""
    from skin_model.evaluation.metrics import referral_rates

    source = EvaluationReport.from_json(weights / "evaluation_test.json")
    labels = np.array([CODES.index(p["label"]) for p in source.predictions])
    probs = np.array([p["probs"] for p in source.predictions])
    folder = weights / "evaluations"
    for recipe, shift in (("today's recipe", 0), ("--colour-constancy shades-of-grey", 1)):
        report = evaluate_probabilities(labels, np.roll(probs, shift, axis=0), [p["image_id"] for p in source.predictions],
                                        dataset={"name": "held out", "split_method": "held-out source",
                                                 "sources": ["rosendahl"], "recipe": recipe,
                                                 "trained_on": ["vidir_modern", "vidir_molemax", "vienna_dias"]},
                                        model={"version": "t", "referral_threshold": 0.2 + 0.1 * shift})
        report.to_json(folder / f"heldout_rosendahl_{shift}.json")
    source.to_json(folder / "other.json")
    metadata = ModelMetadata.from_json(weights / "metadata.json")
    metadata.training = {**metadata.training, "recipe": "--colour-constancy shades-of-grey"}
    metadata.to_json(weights / "metadata.json")
    at = open_report()
    assert any("Other clinics" in h.value for h in at.header)
    (table,) = tables(at, "held-out source")
    assert sorted(table["recipe"]) == ["--colour-constancy shades-of-grey", "today's recipe"]
    expected = EvaluationReport.from_json(folder / "heldout_rosendahl_0.json")
    row = table[table["recipe"] == "today's recipe"].iloc[0]
    assert row["balanced acc."] == pytest.approx(expected.balanced_accuracy)
    assert row["melanoma AUC"] == pytest.approx(expected.per_class["mel"]["auc"])
    rates = referral_rates(labels, probs, 0.2)
    assert row["referral sens."] == pytest.approx(rates.sensitivity), "the run's own threshold, not the served one"
    assert list(table.sort_values("recipe")["served"]) == [True, False], "the served model's recipe is marked"
    assert any("cannot tell" in m.value for m in at.markdown)


def test_other_clinics_section_says_how_to_measure_when_empty(weights: Path):
    at = open_report()
    assert not tables(at, "held-out source")
    assert any("--holdout-source" in i.value for i in at.info)
def _tta_report(split: str, seed: int) -> EvaluationReport:
    rng = np.random.default_rng(seed)
    labels = np.arange(len(CODES)).repeat(4)
    probs = rng.dirichlet(np.ones(len(CODES)), size=len(labels))
    return evaluate_probabilities(labels, probs, [f"{split}{i}" for i in range(len(labels))],
                                  dataset={"name": f"HAM10000 {split}", "split": split},
                                  model={"version": "test", "tta": True})


def test_opens_on_the_served_configuration_with_targets_and_referral(weights, tmp_path, monkeypatch):
    """A model served with TTA opens on the test split with TTA; the referral cue's rates are shown for every
    evaluation offered; the project targets are judged plainly; no absolute path appears on the page."""
    from skin_model.evaluation.metrics import referral_rates
    from skin_model.report.evaluation_tables import target_lines

    extra = tmp_path / "evaluations"
    reports = {"val_tta.json": _tta_report("val", 1), "test_tta.json": _tta_report("test", 2)}
    for name, report in reports.items():
        report.to_json(extra / name)
    monkeypatch.setenv("SKIN_REPORTS_DIR", str(extra))
    metadata = ModelMetadata.from_json(weights / "metadata.json")
    metadata.test_time_augmentation, metadata.referral_threshold = True, 0.3
    metadata.to_json(weights / "metadata.json")
    at = open_report()
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="report_file").value.path.name == "test_tta.json"
    test = reports["test_tta.json"]
    assert metric_values(at)["Balanced accuracy"] == f"{test.balanced_accuracy:.1%}"

    (referral,) = tables(at, "Malignant sensitivity")
    assert len(referral) == 3, "training run's test report and both TTA reports"
    row = referral[referral["Evaluation"].str.startswith("test_tta.json")].iloc[0]
    labels = np.array([CODES.index(p["label"]) for p in test.predictions])
    rates = referral_rates(labels, np.array([p["probs"] for p in test.predictions]), 0.3)
    assert row["Malignant sensitivity"] == pytest.approx(rates.sensitivity)
    assert row["Specificity"] == pytest.approx(rates.specificity)
    assert "**30.0%**" in markdown_text(at)

    text = markdown_text(at)
    expected = target_lines({"balanced_accuracy": test.balanced_accuracy, "macro_auc": test.macro_auc,
                             "melanoma_sensitivity": test.melanoma_sensitivity})
    assert f"{sum(ok for _, ok in expected)} of 3 met" in text
    assert all(line in text for line, _ in expected)
    selector = at.selectbox(key="report_file")
    shown = [e.value for kind in (at.markdown, at.caption, at.info, at.warning, at.error, at.success) for e in kind]
    shown += [selector.help, *selector.options] + [m.help or "" for m in at.metric]
    assert not [t for t in shown if str(weights) in t or str(tmp_path) in t], "no absolute paths on the page"
