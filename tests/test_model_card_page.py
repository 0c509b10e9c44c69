"""The About / model card page driven headlessly with AppTest: everything comes from metadata.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from skin_model.labels import CLASSES

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/model_card.py"
TIMEOUT = 120
TRAINING = {"image_size": 96, "head_epochs": 3, "finetune_epochs": 11, "fine_tune_from": "block_13",
            "recipe": "--fine-tune-from block_13", "head_lr": 0.002, "finetune_lr": 5e-05, "patience": 5, "batch_size": 16, "seed": 7, "device": "CPU",
            "distill_from": ["/runs/a", "/runs/b"], "distill_weight": 0.5,
            "epochs_run": {"head": 3, "finetune": 9}, "class_weights": {"mel": 1.25, "nv": 0.2}}
DATA = {"source": "HAM10000 (Tschandl et al. 2018, doi:10.1038/sdata.2018.161), CC BY-NC-SA 4.0",
        "split_seed": 7, "counts": {"train": {"mel": 10, "nv": 30}, "val": {"mel": 2, "nv": 6},
                                    "test": {"mel": 3, "nv": 5}},
        "lesions": {"train": 35, "val": 8, "test": 7},
        "image_copies": {"images_crop224": 40, "images_200x150": 16}}
METRICS = {"test": {"balanced_accuracy": 0.6125, "accuracy": 0.7, "macro_auc": 0.9, "ece": 0.04,
                    "melanoma_sensitivity": 0.55, "melanoma_specificity": 0.88}}

LIMITS = ["Dermoscopic images only: test limit one.", "Skin types under-represented: test limit two."]


@pytest.fixture()
def bundle(tiny_bundle, tmp_path, monkeypatch) -> Path:
    """A copy of tiny_bundle whose metadata also records training, data and metrics."""
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    meta = json.loads((copy / "metadata.json").read_text())
    meta.update(training=TRAINING, data=DATA, metrics=METRICS, known_limits=LIMITS)
    (copy / "metadata.json").write_text(json.dumps(meta))
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(copy))
    return copy


def open_card() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def text_of(at: AppTest) -> str:
    return "\n".join(el.value for el in [*at.markdown, *at.caption, *at.warning, *at.info])


def tables(at: AppTest, column: str) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe if column in d.value.columns]


def test_card_shows_version_sha256_and_recipe(bundle):
    meta = json.loads((bundle / "metadata.json").read_text())
    at = open_card()
    assert not at.error, [e.value for e in at.error]
    text = text_of(at)
    assert f"`{meta['version']}`" in text
    assert f"`{meta['model_sha256']}`" in text
    assert "matches this sha256" in text, "the weights file is checked against the metadata"
    assert meta["intended_use"] in text and "not a medical device" in text.lower()
    assert DATA["source"] in text and "CC BY-NC-SA 4.0" in meta["licence"] and meta["licence"] in text

    (classes,) = tables(at, "Diagnosis")
    assert classes["Code"].tolist() == [c.code for c in CLASSES]
    assert classes["Malignant"].tolist() == [c.malignant for c in CLASSES]

    (recipe,) = tables(at, "Setting")
    settings = dict(zip(recipe["Setting"], recipe["Value"]))
    assert settings["Fine-tuned from layer"] == "block_13"
    assert settings["Recipe (train.py flags that differ from the defaults)"] == "--fine-tune-from block_13"
    assert settings["Peak fine-tuning learning rate"] == "5e-05"
    assert settings["Epochs actually run"] == "head: 3, finetune: 9"
    assert "mel: 1.25" in settings["Class weights (balanced)"]
    assert settings["Distilled from (teacher model folders)"] == "a, b", "folder names, no machine paths"
    assert f"temperature {meta['temperature']:.3f}" in text

    (metrics,) = tables(at, "Balanced accuracy")
    assert metrics.loc["test, single view (as served)", "Balanced accuracy"] == pytest.approx(0.6125)
    assert "Balanced accuracy 61.3% against the target ≥ 75.0%: **not met**" in text
    assert "Macro AUC 0.900 against the target ≥ 0.930: **not met**" in text
    (counts,) = tables(at, "train")
    assert counts.loc["total", "train"] == 40 and counts.loc["lesions", "test"] == 7


def test_other_clinics_marks_the_served_recipe(bundle):
    """The card's "Other clinics" rows: the held-out run of the served model's recipe is marked, the baseline
    is not; a bundle whose metadata records no recipe marks nothing and says why."""
    import numpy as np

    from skin_model.evaluation.metrics import evaluate_probabilities

    labels = np.arange(len(CLASSES)).repeat(3)
    probs = np.random.default_rng(0).dirichlet(np.ones(len(CLASSES)), size=len(labels))
    for recipe in ("today's recipe", TRAINING["recipe"]):
        evaluate_probabilities(labels, probs, [f"i{i}" for i in range(len(labels))], model={"version": "t"},
                               dataset={"split_method": "held-out source", "sources": ["rosendahl"],
                                        "trained_on": ["vidir_modern", "vidir_molemax", "vienna_dias"],
                                        "recipe": recipe}).to_json(bundle / "evaluations" / f"heldout_{len(recipe)}.json")
    (table,) = tables(open_card(), "held-out source")
    assert dict(zip(table["recipe"], table["served"])) == {"today's recipe": False, TRAINING["recipe"]: True}

    meta = json.loads((bundle / "metadata.json").read_text())
    (bundle / "metadata.json").write_text(json.dumps({**meta, "training": {"seed": 7}}))
    at = open_card()
    (table,) = tables(at, "held-out source")
    assert not table["served"].any()
    assert "does not record its recipe" in text_of(at)


def test_known_limits_use_the_recorded_image_copies(bundle):
    text = text_of(open_card())
    assert "40 from `images_crop224` (centre square 224 px)" in text, "224 px copies are not upsampled at 96 px"
    assert "16 from `images_200x150` (centre square 150 px)" in text
    for limit in LIMITS:
        assert f"- {limit}" in text, "the limits are the ones recorded in metadata.json"
    assert "No patient context" not in text, "no limit is written in the page itself"


def test_known_limits_give_each_size_of_a_mixed_folder(bundle):
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["data"]["image_copies"] = {"isic_archive/images": {"images": 30, "short_sides": {"256": 20, "64": 10}}}
    (bundle / "metadata.json").write_text(json.dumps(meta))
    text = text_of(open_card())
    assert "30 from `isic_archive/images` (centre squares 20 of 256 px; 10 of 64 px, upsampled" in text


def test_shipped_card_opens_on_the_served_configuration(shipped_bundle, monkeypatch):
    """The shipped model is served with TTA: its test-with-TTA row comes first; its limits come from its
    metadata; no absolute machine path is shown."""
    from skin_model.config import PROJECT_ROOT
    from skin_model.bundle import ModelMetadata

    meta = ModelMetadata.from_json(shipped_bundle / "metadata.json")
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(shipped_bundle))
    at = open_card()
    (metrics,) = tables(at, "Balanced accuracy")
    assert metrics.index[0] == "test, 8-view TTA (as served)"
    assert metrics.iloc[0]["Balanced accuracy"] == pytest.approx(meta.metrics["test_tta"]["balanced_accuracy"])
    text = text_of(at) + "\n".join(str(v) for t in at.dataframe for v in t.value.to_numpy().ravel())
    assert all(limit in text for limit in meta.known_limits)
    assert str(PROJECT_ROOT) not in text and str(PROJECT_ROOT.parent) + "/" not in text
    assert f"{meta.referral_threshold:.1%}" in text


def test_minimal_metadata_says_what_is_not_recorded(tiny_bundle, monkeypatch):
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(tiny_bundle))
    at = open_card()
    assert not at.error
    text = text_of(at)
    assert "Training recipe not recorded in metadata.json" in text
    assert "Metrics not recorded in metadata.json" in text
    assert "`test`" in text, "the tiny bundle's version"


def test_missing_metadata_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIN_WEIGHTS_DIR", str(tmp_path))
    at = open_card()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "metadata.json" in errors[0] and "does not exist" in errors[0]


@pytest.mark.parametrize("content, problem", [("{not json", "not valid JSON"),
                                              ('{"version": "1"}', "do not match the model metadata format")])
def test_malformed_metadata_is_a_clear_error(bundle, content, problem):
    (bundle / "metadata.json").write_text(content)
    at = open_card()
    errors = [e.value for e in at.error if "metadata.json" in e.value]
    assert errors and problem in errors[0]


def test_changed_weights_are_flagged(bundle):
    with (bundle / "model.keras").open("ab") as handle:
        handle.write(b"tampered")
    at = open_card()
    assert any("the weights were changed" in e.value for e in at.error)


def test_card_lists_every_training_source_with_its_licence(bundle):
    """A model trained on several folders: one row per source with its collection, licence and images."""
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["data"]["folders"] = [
        {"folder": "ham10000", "metadata_sha256": "0" * 64, "images": 40, "sources": [
            {"source": "rosendahl", "collection": "HAM10000", "credit": "Tschandl et al. 2018",
             "licence": "CC BY-NC-SA 4.0", "counts": {"train": {"mel": 10, "nv": 20}, "val": {"nv": 10}}}]},
        {"folder": "isic_archive", "metadata_sha256": "1" * 64, "images": 9, "sources": [
            {"source": "isic2017", "collection": "ISIC Archive", "credit": "Codella et al. 2018",
             "licence": "CC-0 (ISIC 2017 challenge) or CC BY-NC, per image",
             "counts": {"train": {"mel": 4, "bkl": 2}, "test": {"nv": 3}}}]}]
    meta["training"]["extra_data"] = ["/somewhere/isic_archive"]
    (bundle / "metadata.json").write_text(json.dumps(meta))
    at = open_card()
    [sources] = tables(at, "collection")
    assert sources["source"].tolist() == ["rosendahl", "isic2017"]
    assert sources["train"].tolist() == [30, 6] and sources.loc[1, "test"] == 3
    assert "CC-0" in sources.loc[1, "licence"] and sources.loc[1, "classes"] == "bkl, mel, nv"
    [training] = tables(at, "Setting")
    extra = training.loc[training["Setting"].str.startswith("Further labelled folders"), "Value"].tolist()
    assert extra == ["isic_archive"], "folder names only, never the machine's path"
