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
            "head_lr": 0.002, "finetune_lr": 5e-05, "patience": 5, "batch_size": 16, "seed": 7, "device": "CPU",
            "distill_from": ["/runs/a", "/runs/b"], "distill_weight": 0.5,
            "epochs_run": {"head": 3, "finetune": 9}, "class_weights": {"mel": 1.25, "nv": 0.2}}
DATA = {"source": "HAM10000 (Tschandl et al. 2018, doi:10.1038/sdata.2018.161), CC BY-NC-SA 4.0",
        "split_seed": 7, "counts": {"train": {"mel": 10, "nv": 30}, "val": {"mel": 2, "nv": 6},
                                    "test": {"mel": 3, "nv": 5}},
        "lesions": {"train": 35, "val": 8, "test": 7},
        "image_copies": {"images_crop224": 40, "images_200x150": 16}}
METRICS = {"test": {"balanced_accuracy": 0.6125, "accuracy": 0.7, "macro_auc": 0.9, "ece": 0.04,
                    "melanoma_sensitivity": 0.55, "melanoma_specificity": 0.88}}


@pytest.fixture()
def bundle(tiny_bundle, tmp_path, monkeypatch) -> Path:
    """A copy of tiny_bundle whose metadata also records training, data and metrics."""
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    meta = json.loads((copy / "metadata.json").read_text())
    meta.update(training=TRAINING, data=DATA, metrics=METRICS)
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
    assert settings["Peak fine-tuning learning rate"] == "5e-05"
    assert settings["Epochs actually run"] == "head: 3, finetune: 9"
    assert "mel: 1.25" in settings["Class weights (balanced)"]
    assert settings["Distilled from (teacher model folders)"] == "/runs/a, /runs/b"
    assert f"temperature {meta['temperature']:.3f}" in text

    (metrics,) = tables(at, "Balanced accuracy")
    assert metrics.loc["test", "Balanced accuracy"] == pytest.approx(0.6125)
    (counts,) = tables(at, "train")
    assert counts.loc["total", "train"] == 40 and counts.loc["lesions", "test"] == 7


def test_known_limits_use_the_recorded_image_copies(bundle):
    text = text_of(open_card())
    assert "40 from `images_crop224` (centre square 224 px)" in text, "224 px copies are not upsampled at 96 px"
    assert "16 from `images_200x150` (centre square 150 px)" in text
    for limit in ("Dermoscopic images only", "Skin types under-represented", "No patient context",
                  "Seven classes only"):
        assert limit in text


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
