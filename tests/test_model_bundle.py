"""The model bundle: save/load round trip, ImageNet backbone really loaded, sha256 check, metadata fields."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import TINY_SIZE
from skin_model.data.imaging import load_image, to_model_input
from skin_model.labels import CODES
from skin_model.bundle import (METADATA_FILE, MODEL_FILE, ModelIntegrityError, ModelMetadata,
                               sha256_of)
from skin_model.model import LAST_CONV_LAYER, build_classifier, load_bundle, save_bundle


@pytest.fixture(scope="module")
def lesion_batch(lesion_path: Path, synthetic_ham: Path) -> np.ndarray:
    """Four synthetic lesion photos, a 600x450 original and three 200x150 copies."""
    paths = [lesion_path, *sorted((synthetic_ham / "images_200x150").glob("*.jpg"))[:3]]
    return to_model_input([load_image(p) for p in paths], TINY_SIZE)


def h5_kernel_of_shape(h5_path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The one variable of this shape in a Keras .weights.h5 file (its layer names are generic)."""
    found = []
    with h5py.File(h5_path, "r") as f:
        f.visititems(lambda name, obj: found.append(obj[()]) if getattr(obj, "shape", None) == shape else None)
    assert len(found) == 1, f"expected one {shape} variable in {h5_path.name}, found {len(found)}"
    return found[0]


def copy_bundle(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_round_trip_gives_identical_predictions(tiny_bundle, lesion_batch, tmp_path):
    model, metadata = load_bundle(tiny_bundle)
    before = model(lesion_batch, training=False).numpy()
    save_bundle(model, metadata, tmp_path / "again")
    reloaded, reloaded_meta = load_bundle(tmp_path / "again")
    np.testing.assert_allclose(reloaded(lesion_batch, training=False).numpy(), before, atol=1e-6)
    assert reloaded_meta.temperature == metadata.temperature and reloaded_meta.input_size == TINY_SIZE
    assert before.shape == (len(lesion_batch), len(CODES))
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.real_data("ImageNet", reason="checks that a bundle built on the real ImageNet weights file holds them")
def test_backbone_weights_are_the_imagenet_ones(imagenet_bundle, backbone_weights):
    model, _ = load_bundle(imagenet_bundle)
    random_model = build_classifier(TINY_SIZE, None)
    for layer_name, shape in (("Conv1", (3, 3, 3, 32)), ("Conv_1", (1, 1, 320, 1280))):
        loaded = model.get_layer(layer_name).kernel.numpy()
        assert loaded.shape == shape
        np.testing.assert_array_equal(loaded, h5_kernel_of_shape(backbone_weights, shape))
        assert not np.allclose(random_model.get_layer(layer_name).kernel.numpy(), loaded), \
            "a randomly initialised backbone differs, so the comparison is meaningful"


def test_model_is_one_flat_graph_with_the_grad_cam_layer(tiny_bundle):
    import keras

    model, _ = load_bundle(tiny_bundle)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), "no nested sub-model"
    assert model.get_layer(LAST_CONV_LAYER).output.shape[-1] == 1280
    assert model.outputs[0].shape[-1] == len(CODES)


def test_changed_model_file_is_rejected(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    with open(bundle / MODEL_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256.*changed or corrupted"):
        load_bundle(bundle)


def test_changed_recorded_hash_is_rejected(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    metadata = json.loads((bundle / METADATA_FILE).read_text())
    metadata["model_sha256"] = "0" * 64
    (bundle / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ModelIntegrityError, match="changed or corrupted"):
        load_bundle(bundle)


def test_missing_metadata_is_a_clear_error(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    (bundle / METADATA_FILE).unlink()
    with pytest.raises(ModelIntegrityError, match=f"No {METADATA_FILE} in .*train a model"):
        load_bundle(bundle)


def test_missing_model_file_is_a_clear_error(tiny_bundle, tmp_path):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    (bundle / MODEL_FILE).unlink()
    with pytest.raises(ModelIntegrityError, match=f"{MODEL_FILE} is missing"):
        load_bundle(bundle)


def test_saved_metadata_records_the_model_hash(tiny_bundle):
    metadata = ModelMetadata.from_json(tiny_bundle / METADATA_FILE)
    assert metadata.model_sha256 == sha256_of(tiny_bundle / MODEL_FILE)
    assert [c["code"] for c in metadata.classes] == list(CODES)


def test_shipped_metadata_has_the_documented_fields(shipped_bundle):
    """README: classes, input size, preprocessing, temperature, unsure threshold, training config, data,
    backbone and model sha256, headline metrics, version (MONAI-style network_data_format too)."""
    metadata = json.loads((shipped_bundle / METADATA_FILE).read_text())
    assert [c["code"] for c in metadata["classes"]] == list(CODES)
    assert {c["code"] for c in metadata["classes"] if c["malignant"]} == {"mel", "bcc", "akiec"}
    assert metadata["version"] and metadata["created"]
    assert metadata["input_size"] in (96, 128, 160, 192, 224)
    assert {"crop", "resize", "scaling"} <= set(metadata["preprocessing"])
    fmt = metadata["network_data_format"]
    assert fmt["inputs"]["image"]["spatial_shape"] == [metadata["input_size"]] * 2
    assert list(fmt["outputs"]["pred"]["channel_def"].values()) == list(CODES)
    assert metadata["temperature"] > 0 and 0 <= metadata["unsure_threshold"] <= 1
    assert {"image_size", "batch_size", "seed", "fine_tune_from"} <= set(metadata["training"])
    assert set(metadata["data"]["counts"]) == {"train", "val", "test"}
    assert sum(sum(c.values()) for c in metadata["data"]["counts"].values()) > 0
    assert len(metadata["backbone"]["sha256"]) == 64
    assert metadata["model_sha256"] == sha256_of(shipped_bundle / metadata["model_file"])
    assert {"balanced_accuracy", "macro_auc", "ece", "melanoma_sensitivity"} <= set(metadata["metrics"]["test"])
    assert "Not a medical device" in metadata["intended_use"] and "CC BY-NC-SA" in metadata["licence"]
