"""Shades-of-grey colour constancy (skin_model.data.colour): what it does to pixels, and that it travels with the
network through saving, loading and the LiteRT copy while a network without it is unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SIZE
from skin_model.data.imaging import scale_pixels


def shades_of_grey_by_hand(rgb: np.ndarray, p: int = 6) -> np.ndarray:
    """The usual NumPy version (ISIC challenge code) on one [0, 1] image."""
    illuminant = np.power(np.mean(np.power(rgb, p), axis=(0, 1)), 1.0 / p)
    illuminant = illuminant / np.sqrt(np.sum(illuminant ** 2))
    return np.clip(rgb / (illuminant * np.sqrt(3.0)), 0.0, 1.0)


@pytest.fixture(scope="module")
def layer():
    from skin_model.data.colour import ShadesOfGrey

    return ShadesOfGrey()


def lesion_like(seed: int = 0, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal([0.7, 0.5, 0.45], 0.12, (size, size, 3)), 0.0, 1.0).astype(np.float32)


def test_matches_the_reference_formula(layer):
    rgb = lesion_like()
    out = np.asarray(layer(scale_pixels(rgb[None] * 255.0)))[0]
    np.testing.assert_allclose((out + 1.0) / 2.0, shades_of_grey_by_hand(rgb), atol=2e-4)


def test_removes_a_colour_cast_and_keeps_a_neutral_image(layer):
    rgb = lesion_like(1)
    cast = np.clip(rgb * np.array([1.0, 0.8, 0.6], np.float32), 0, 1)  # an orange cast
    corrected = (np.asarray(layer(scale_pixels(np.stack([rgb, cast]) * 255.0))) + 1.0) / 2.0

    def chromaticity(images: np.ndarray) -> np.ndarray:  # mean colour, brightness divided out
        means = images.reshape(len(images), -1, 3).mean(axis=1)
        return means / means.sum(axis=1, keepdims=True)

    before, after = chromaticity(np.stack([rgb, cast])), chromaticity(corrected)
    assert np.abs(before[0] - before[1]).max() > 0.05, "the cast changes the colour"
    assert np.abs(after[0] - after[1]).max() < 0.01, "after colour constancy both have the same colour"
    grey = np.full((1, 8, 8, 3), 0.4, np.float32)
    np.testing.assert_allclose(np.asarray(layer(scale_pixels(grey * 255.0))), scale_pixels(grey * 255.0), atol=1e-4)
    black = np.asarray(layer(-np.ones((1, 8, 8, 3), np.float32)))
    assert np.isfinite(black).all() and black.max() <= -1.0 + 1e-6, "a black image stays black, no NaN"


@pytest.mark.real_data("ImageNet", reason="checks build_classifier against the real ImageNet weights file")
def test_the_backbone_gets_the_imagenet_weights_either_way(backbone_weights):
    import keras

    from skin_model.model import build_classifier

    plain = keras.applications.MobileNetV2(input_shape=(TINY_SIZE, TINY_SIZE, 3), include_top=False, weights=None)
    plain.load_weights(str(backbone_weights))
    for method in ("none", "shades-of-grey"):
        model = build_classifier(TINY_SIZE, backbone_weights, colour_constancy=method)
        assert ("colour_constancy" in [l.name for l in model.layers]) == (method != "none")
        for reference in (layer for layer in plain.layers if layer.weights):
            for a, b in zip(reference.get_weights(), model.get_layer(reference.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="colour constancy"):
        build_classifier(TINY_SIZE, None, colour_constancy="grey-world")


def test_a_bundle_with_it_saves_loads_and_serves_the_same(tmp_path: Path, lesion_path):
    import keras

    from skin_model.data.imaging import load_image
    from skin_model.serving.inference import Predictor
    from skin_model.serving.lite import LitePredictor, build_lite
    from skin_model.bundle import ModelMetadata
    from skin_model.model import load_bundle, save_bundle
    from synthetic import random_classifier

    model = random_classifier(TINY_SIZE, 0, colour_constancy="shades-of-grey")  # no ImageNet file needed
    save_bundle(model, ModelMetadata(version="cc", created="2026-01-01", input_size=TINY_SIZE), tmp_path)
    build_lite(tmp_path)
    loaded, _ = load_bundle(tmp_path)
    assert loaded.get_layer("colour_constancy").power == 6
    image = load_image(lesion_path)
    keras_probs = Predictor(loaded, ModelMetadata(version="cc", created="", input_size=TINY_SIZE)).predict(image)
    lite_probs = LitePredictor.from_dir(tmp_path).predict(image)
    assert lite_probs.probabilities == pytest.approx(keras_probs.probabilities, abs=1e-5)
    x = Predictor.from_dir(tmp_path).model_input([image])
    corrected = keras.Model(loaded.inputs, loaded.get_layer("colour_constancy").output).predict_on_batch(x)
    assert np.abs(corrected - x).mean() > 0.01, "the served network does correct the colours"
