"""Training and serving see the same pixels: dataset.load_arrays -> make_tf_dataset (evaluation mode)
against Predictor.model_input and imaging.to_model_input, on synthetic HAM10000-like JPEG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SIZE
from skin_model.data.dataset import load_arrays
from skin_model.data.pipeline import make_tf_dataset
from skin_model.data.imaging import load_image, to_model_input


@pytest.fixture(scope="module")
def lesion_images(lesion_path: Path, synthetic_ham: Path) -> list[Path]:
    """A 600x450 original and a 200x150 copy of another image (different sizes, same code path)."""
    return [lesion_path, sorted((synthetic_ham / "images_200x150").glob("*.jpg"))[-1]]


def training_batch(paths: list[Path], size: int, training: bool = False) -> np.ndarray:
    images = load_arrays(paths, size, progress=False)
    dataset = make_tf_dataset(images, np.zeros(len(paths), np.int32), batch_size=len(paths), training=training)
    batch, _ = next(iter(dataset))
    return batch.numpy()


@pytest.mark.parametrize("size", [TINY_SIZE, 224])
def test_training_pipeline_equals_serving_preprocessing(lesion_images, size):
    trained_on = training_batch(lesion_images, size)
    served = to_model_input([load_image(p) for p in lesion_images], size)
    assert trained_on.shape == served.shape == (2, size, size, 3)
    assert served.dtype == np.float32
    np.testing.assert_allclose(trained_on, served, atol=1e-6)
    assert served.min() >= -1.0 and served.max() <= 1.0 and served.std() > 0.1, "real, scaled pixels"


def test_predictor_model_input_equals_training_pipeline(lesion_images, tiny_bundle):
    from skin_model.serving.inference import Predictor

    predictor = Predictor.from_dir(tiny_bundle)
    served = predictor.model_input([load_image(p) for p in lesion_images])
    np.testing.assert_allclose(training_batch(lesion_images, predictor.input_size), served, atol=1e-6)


def test_image_bytes_and_path_give_the_same_input(lesion_path):
    from_path = to_model_input(load_image(lesion_path), 224)
    from_bytes = to_model_input(load_image(lesion_path.read_bytes(), "upload.jpg"), 224)
    np.testing.assert_array_equal(from_path, from_bytes)


def test_training_mode_augments(lesion_images):
    """The comparison above is meaningful: the augmented pipeline does change the pixels."""
    plain = training_batch(lesion_images, TINY_SIZE)
    augmented = training_batch(lesion_images, TINY_SIZE, training=True)
    assert augmented.shape == plain.shape
    assert np.abs(augmented - plain).mean() > 0.01
    assert augmented.min() >= -1.0 - 1e-6 and augmented.max() <= 1.0 + 1e-6
