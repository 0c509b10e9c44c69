"""The Evaluation report page driven headlessly with AppTest, from a report written by the evaluate CLI
on 14 real HAM10000 images with the tiny bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from skin_model.labels import CODES
from skin_model.metrics import EvaluationReport, evaluate_probabilities

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/report.py"
TIMEOUT = 120
DATASET_NAME = "tiny real subset"


@pytest.fixture(scope="module")
def base_weights(tiny_bundle, ham_dir, tmp_path_factory) -> Path:
    """tiny_bundle + evaluation_test.json from ``skin_model.evaluate.main`` on 2 real images per class +
    a split.csv and a two-stage history.json."""
    from skin_model.evaluate import main as evaluate_main

    meta = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    chosen = (meta.drop_duplicates("lesion_id").groupby("dx").head(2)
              .sort_values(["dx", "image_id"]).reset_index(drop=True))  # 2 lesions per class, in CODES order
    images = tmp_path_factory.mktemp("images")
    for image_id in chosen["image_id"]:
        shutil.copy(ham_dir / "images_200x150" / f"{image_id}.jpg", images / f"{image_id}.jpg")
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
    assert len(charts) == 2 + 2 + 1 + 3, "confusion x2, ROC, PR, reliability, 3 training curves"
    (comparison,) = tables(at, "Source")
    assert comparison.iloc[0]["Accuracy"] == pytest.approx(report.accuracy)
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
    assert selector.options == ["evaluation_test.json (training run)", "clinic_b.json (evaluations folder)"]
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
    assert any("python -m skin_model.localisation" in i.value for i in at.info), "how to compute it"
    path = weights / "evaluation_test.json"
    data = json.loads(path.read_text())
    data["extras"]["localisation"] = {"share_inside": {"predicted": 0.625, "true": 0.5}, "chance_rate": 0.4125,
                                      "n_images": 8, "method": "Grad-CAM", "split": "test",
                                      "box_source": "lesion_bboxes_200x150.csv", "box_limits": "One box per image."}
    path.write_text(json.dumps(data))
    at = open_report()
    metrics = metric_values(at)
    assert metrics["Peak inside the box (predicted class)"] == "62.5%"
    assert metrics["Peak inside the box (true class)"] == "50.0%"
    assert metrics["Chance rate"] == "41.2%"
    assert "lesion_bboxes_200x150.csv" in markdown_text(at)
