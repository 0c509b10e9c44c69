"""Out-of-distribution gate: scoring maths, storage, stale-file handling, the fit/measure CLI and the
gate's verdict on shipped everyday photos versus synthetic lesion photos (tiny bundle, 60 training images of
tests/synthetic.py's HAM10000-shaped folder)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skin_model.serving import ood
from skin_model.bundle import EVALUATIONS_DIR, OOD_FILE, OOD_FIGURES_FILE, SPLIT_FILE, evaluation_file, sha256_of
from skin_model.cli.ood import main as ood_main
from skin_model.data.ood_images import non_dermoscopic_images

HELD_OUT_IMAGE = "ISIC_0024306"  # lesion_path: kept in the test split


def write_original_split(bundle: Path, data_dir: Path) -> pd.DataFrame:
    """A split.csv over the 600x450 originals of ``data_dir``, grouped by lesion; HELD_OUT_IMAGE in test."""
    meta = pd.read_csv(data_dir / "HAM10000_metadata.csv")
    originals = {p.stem for p in (data_dir / "images_600x450").glob("*.jpg")}
    frame = meta[meta["image_id"].isin(originals)].sort_values("image_id").reset_index(drop=True)
    lesions = frame["lesion_id"].drop_duplicates().sample(frac=1.0, random_state=0).tolist()
    held_out = frame.loc[frame["image_id"] == HELD_OUT_IMAGE, "lesion_id"].iloc[0]
    lesions.remove(held_out)
    test = set(lesions[:30]) | {held_out}
    val = set(lesions[30:60])
    frame["split"] = ["test" if l in test else "val" if l in val else "train" for l in frame["lesion_id"]]
    frame.to_csv(bundle / SPLIT_FILE, index=False)
    return frame


@pytest.fixture(scope="module")
def gated_bundle(tiny_bundle: Path, synthetic_ham: Path, tmp_path_factory) -> Path:
    """The tiny bundle plus a gate fitted by the CLI on 60 synthetic training images (20 for validation)."""
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("gated") / "bundle"))
    write_original_split(bundle, synthetic_ham)
    (bundle / evaluation_file("test")).write_text(json.dumps({"n_images": 5, "extras": {"kept": 1}}))
    assert ood_main(["fit", "--weights", str(bundle), "--data-dir", str(synthetic_ham), "--limit", "60",
                     "--components", "32"]) == 0
    return bundle


@pytest.fixture(scope="module")
def service(gated_bundle: Path):
    from skin_model.serving.service import ClassifierService

    return ClassifierService.from_dir(gated_bundle)


def skimage_photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


# ---------------------------------------------------------------------------------------------- maths
@pytest.fixture(scope="module")
def synthetic_features() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(8, 40))
    make = lambda n: np.abs(rng.normal(size=(n, 8)) @ basis + 5.0 + 0.1 * rng.normal(size=(n, 40)))
    return make(400), make(100)


def test_scores_match_scikit_learn(synthetic_features):
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    train, val = synthetic_features
    gate = ood.fit_gate(train, val, "sha", components=6)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    pca = PCA(6, random_state=0).fit(unit(train))
    covariance = LedoitWolf().fit(pca.transform(unit(train)))
    mahalanobis, residual = gate.parts(val)
    np.testing.assert_allclose(mahalanobis, np.sqrt(covariance.mahalanobis(pca.transform(unit(val)))), rtol=1e-6)
    expected_residual = np.linalg.norm(unit(val) - pca.inverse_transform(pca.transform(unit(val))), axis=1)
    np.testing.assert_allclose(residual, expected_residual, rtol=1e-6, atol=1e-12)
    train_m, train_r = gate.parts(train)
    np.testing.assert_allclose(gate.distances(val), mahalanobis / np.median(train_m) + residual / np.median(train_r))


def test_threshold_passes_the_target_share_of_validation(synthetic_features):
    train, val = synthetic_features
    gate = ood.fit_gate(train, val, "sha", components=6, percentile=90.0, target_pass=0.99)
    assert (gate.distances(val) <= gate.threshold).mean() >= 0.99
    assert gate.threshold >= np.percentile(gate.distances(train), 90.0) - 1e-9
    assert gate.info["val_pass_rate"] == pytest.approx((gate.distances(val) <= gate.threshold).mean())
    far = train[:5] * np.linspace(3, 0.1, 40)  # a different direction in feature space
    assert all(r.flagged for r in gate.check(far))


def test_too_few_images_is_a_clear_error(synthetic_features):
    train, val = synthetic_features
    with pytest.raises(ood.OodGateError, match="Too few images"):
        ood.fit_gate(train[:5], val, "sha")


def test_gate_survives_save_and_load(synthetic_features, tmp_path):
    train, val = synthetic_features
    gate = ood.fit_gate(train, val, "abc123", components=6)
    gate.save(tmp_path / OOD_FILE)
    loaded, status = ood.load_gate(tmp_path, "abc123", sha256_of(tmp_path / OOD_FILE))
    assert status == "on"
    np.testing.assert_allclose(loaded.distances(val), gate.distances(val))
    assert loaded.threshold == gate.threshold and loaded.info == gate.info


def test_stale_or_missing_gate_is_ignored_with_a_warning(synthetic_features, tmp_path, caplog):
    train, val = synthetic_features
    assert ood.load_gate(tmp_path, "abc", "")[0] is None
    ood.fit_gate(train, val, "old-model-sha", components=6).save(tmp_path / OOD_FILE)
    with caplog.at_level(logging.WARNING, logger="skin_model.serving.ood"):
        gate, status = ood.load_gate(tmp_path, "new-model-sha", sha256_of(tmp_path / OOD_FILE))
    assert gate is None and "another model" in status
    assert any("is off" in r.message and "another model" in r.message for r in caplog.records)


def flip_byte(path: Path, position: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * position)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason", [
    ("flipped byte", "does not match the sha256"),
    ("flipped byte, sha256 re-recorded", "unreadable or invalid"),
    ("no sha256 recorded", "records no sha256"),
    ("NaN threshold", "threshold is not a finite number"),
    ("NaN in the precision matrix", "precision holds values that are not finite"),
    ("wrong shapes", "pca_mean has shape"),
    ("wrong feature size", "expects 40 features, the model gives 384"),
])
def test_damaged_gate_is_off_with_the_reason(synthetic_features, tmp_path, damage, reason):
    """One flipped byte made np.load raise BadZipFile (the app went down); a NaN threshold left the gate
    "on" but never flagging. Every damage gives the same state: off, with the reason."""
    train, val = synthetic_features
    gate = ood.fit_gate(train, val, "model-sha", components=6)
    path = tmp_path / OOD_FILE
    if damage == "NaN threshold":
        gate = replace(gate, threshold=float("nan"))
    elif damage == "NaN in the precision matrix":
        precision = gate.precision.copy()
        precision[0, 0] = np.nan
        gate = replace(gate, precision=precision)
    elif damage == "wrong shapes":
        gate = replace(gate, pca_mean=gate.pca_mean[:-1])
    gate.save(path)
    if damage.startswith("flipped byte"):
        flip_byte(path, 0.3)
    recorded = "" if damage == "no sha256 recorded" else sha256_of(path)
    if damage == "flipped byte":
        recorded = "0" * 64
    feature_dim = 384 if damage == "wrong feature size" else train.shape[1]
    loaded, status = ood.load_gate(tmp_path, "model-sha", recorded, feature_dim)
    assert loaded is None, status
    assert reason in status, status
    assert "python -m skin_model.cli.ood fit" in status


# ---------------------------------------------------------------------------------------------- images
def test_non_dermoscopic_set_is_deterministic_and_varied():
    first, second = non_dermoscopic_images(), non_dermoscopic_images()
    names = [item.name for item in first]
    assert len(names) == len(set(names)) >= 30
    assert {"photo", "screenshot", "blank", "noise", "gradient", "skin_patch", "naked_eye_closeup"} <= \
        {item.category for item in first}
    assert all(item.image.mode == "RGB" and min(item.image.size) >= 32 for item in first)
    for a, b in zip(first, second):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image)), a.name


# ---------------------------------------------------------------------------------------------- real model
def test_gate_rejects_everyday_photos_and_passes_a_lesion_image(service, lesion_path):
    from skin_model.data.imaging import load_image

    assert service.ood_enabled
    for name in ("astronaut", "coffee"):
        analysis = service.analyse_image(skimage_photo(name), name=name)
        assert analysis.flagged_ood, f"{name}: score {analysis.ood.distance:.2f} <= {analysis.ood.threshold:.2f}"
    lesion = service.analyse_image(load_image(lesion_path), name=lesion_path.name)
    assert not lesion.flagged_ood, f"score {lesion.ood.distance:.2f} > {lesion.ood.threshold:.2f}"


def test_fit_records_the_model_sha_and_the_training_share(gated_bundle):
    from skin_model.bundle import ModelMetadata

    gate = ood.OodGate.load(gated_bundle / OOD_FILE)
    assert gate.model_sha256 == ModelMetadata.from_json(gated_bundle / "metadata.json").model_sha256
    assert gate.info["n_train"] == 60 and gate.info["n_val"] == 20
    assert gate.info["val_pass_rate"] >= 0.98


def test_measure_writes_consistent_figures_to_their_own_file(gated_bundle, synthetic_ham, service):
    from skin_model.bundle import read_ood_figures

    report_before = (gated_bundle / evaluation_file("test")).read_text()
    assert ood_main(["measure", "--weights", str(gated_bundle), "--data-dir", str(synthetic_ham), "--limit",
                     "12"]) == 0
    assert (gated_bundle / evaluation_file("test")).read_text() == report_before, "no evaluation is rewritten"
    assert (gated_bundle / OOD_FIGURES_FILE).is_file() and not (gated_bundle / EVALUATIONS_DIR).exists()
    figures = read_ood_figures(gated_bundle)
    others = non_dermoscopic_images()
    analyses = [service.analyse_image(o.image, name=o.name) for o in others]
    assert figures.n_non_dermoscopic == len(others)
    assert figures.non_dermoscopic_reject_rate == pytest.approx(np.mean([a.flagged_ood for a in analyses]))
    assert sorted(figures.passed_names) == sorted(a.name for a in analyses if not a.flagged_ood)
    assert figures.n_dermoscopic == 12 and 0.0 <= figures.dermoscopic_pass_rate <= 1.0
    assert (figures.pass_goal, figures.reject_goal) == (ood.GOALS["dermoscopic_pass_rate"],
                                                        ood.GOALS["non_dermoscopic_reject_rate"])
    assert figures.model_sha256 == service.metadata.model_sha256


def test_fit_without_split_file_names_the_problem(tiny_bundle, synthetic_ham, capsys):
    assert ood_main(["fit", "--weights", str(tiny_bundle), "--data-dir", str(synthetic_ham), "--limit", "20"]) == 2
    assert "split.csv" in capsys.readouterr().err


def test_service_ignores_a_gate_fitted_for_another_model(gated_bundle, tmp_path):
    from skin_model.serving.service import ClassifierService

    bundle = Path(shutil.copytree(gated_bundle, tmp_path / "bundle"))
    meta = json.loads((bundle / "metadata.json").read_text())
    gate = ood.OodGate.load(bundle / OOD_FILE)
    replace(gate, model_sha256="0" * 64).save(bundle / OOD_FILE)
    ood.record_gate_sha256(bundle)
    service = ClassifierService.from_dir(bundle)
    assert not service.ood_enabled and "another model" in service.ood_status
    assert meta["model_sha256"] != "0" * 64


def test_fit_records_the_gate_sha256_in_the_metadata(gated_bundle):
    meta = json.loads((gated_bundle / "metadata.json").read_text())
    assert meta["ood_sha256"] == sha256_of(gated_bundle / OOD_FILE)
    assert meta["model_sha256"] and meta["version"] == "test", "the other fields are kept"


def test_service_with_a_damaged_gate_serves_with_the_gate_off(gated_bundle, tmp_path, lesion_path):
    from skin_model.serving.service import ClassifierService

    bundle = Path(shutil.copytree(gated_bundle, tmp_path / "bundle"))
    flip_byte(bundle / OOD_FILE, 0.5)
    service = ClassifierService.from_dir(bundle)
    assert not service.ood_enabled and "damaged" in service.ood_status
    analysis = service.analyse(lesion_path.read_bytes(), name=lesion_path.name)
    assert analysis.ood is None and sum(analysis.prediction.probabilities) == pytest.approx(1.0)
