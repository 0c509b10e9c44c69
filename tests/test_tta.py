"""Test-time augmentation over the 8 dihedral views, with the tiny bundle's predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skin_model.serving.tta import dihedral_arrays, dihedral_views


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path):
    from skin_model.serving.inference import Predictor

    return Predictor.from_dir(tiny_bundle)


@pytest.fixture(scope="module")
def lesion(lesion_path: Path) -> Image.Image:
    from skin_model.data.imaging import load_image

    return load_image(lesion_path)


def random_square(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def numpy_dihedral(array: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(a, k) for a in (array, array[:, ::-1]) for k in range(4)]


def test_views_are_the_eight_distinct_flips_and_rotations():
    array = random_square(16)
    views = [np.asarray(v) for v in dihedral_views(Image.fromarray(array))]
    assert np.array_equal(views[0], array), "the first view is the image itself"
    as_bytes = {v.tobytes() for v in views}
    assert len(as_bytes) == 8
    assert as_bytes == {v.tobytes() for v in numpy_dihedral(array)}


def test_tta_is_a_distribution_and_the_mean_of_the_views(predictor, lesion):
    images = [lesion, Image.fromarray(random_square(120, seed=1))]
    probs = predictor.predict_probabilities(images, tta=True)
    assert probs.shape == (2, 7)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    by_hand = predictor.probabilities_of(np.concatenate(dihedral_arrays(predictor.model_input([lesion]))))
    np.testing.assert_allclose(probs[0], by_hand.mean(axis=0), atol=1e-6)
    from_image_views = predictor.predict_probabilities(dihedral_views(lesion)).mean(axis=0)
    np.testing.assert_allclose(probs[0], from_image_views, atol=1e-2)  # resampling round-off only
    assert not np.allclose(probs[0], predictor.predict_probabilities([lesion])[0], atol=1e-4), \
        "an asymmetric image gives different views, so TTA differs from a single view"


def test_symmetric_input_gives_the_plain_prediction(predictor):
    views = numpy_dihedral(random_square(predictor.input_size, seed=2).astype(np.float64))
    symmetric = Image.fromarray(np.round(np.mean(views, axis=0)).astype(np.uint8))
    assert len({np.asarray(v).tobytes() for v in dihedral_views(symmetric)}) == 1, "the input is D4-invariant"
    plain = predictor.predict_probabilities([symmetric])[0]
    np.testing.assert_allclose(predictor.predict_probabilities([symmetric], tta=True)[0], plain, atol=1e-6)


def test_tta_does_not_depend_on_the_orientation_of_the_upload(predictor, lesion):
    """Up to the round-off of resampling a turned photo (one grey level), which moves the tiny model's
    probabilities by a few thousandths: far less than a single view moves when the photo is turned."""
    reference = predictor.predict_probabilities([lesion], tta=True)[0]
    single = predictor.predict_probabilities([lesion])[0]
    for turned in (lesion.transpose(Image.Transpose.ROTATE_90), lesion.transpose(Image.Transpose.FLIP_TOP_BOTTOM)):
        tta_change = np.abs(predictor.predict_probabilities([turned], tta=True)[0] - reference).max()
        single_change = np.abs(predictor.predict_probabilities([turned])[0] - single).max()
        print(f"TTA change {tta_change:.5f}, single-view change {single_change:.5f}")
        assert tta_change <= 1e-2 and tta_change < single_change / 3


def test_chunking_does_not_change_the_result(predictor, lesion):
    images = [lesion, Image.fromarray(random_square(100, 3)), Image.fromarray(random_square(90, 4))]
    whole = predictor.predict_probabilities(images, tta=True)
    predictor.batch_images = 2
    try:
        np.testing.assert_allclose(predictor.predict_probabilities(images, tta=True), whole, atol=1e-6)
    finally:
        del predictor.batch_images


def test_array_views_match_the_image_views_after_preprocessing(lesion):
    """train.py's TTA on preprocessed arrays sees the same 8 inputs as the app's TTA on the image."""
    from skin_model.data.imaging import to_model_array
    from skin_model.serving.tta import dihedral_arrays

    size = 64
    from_images = [to_model_array(v, size).astype(int) for v in dihedral_views(lesion)]
    from_arrays = [v[0].astype(int) for v in dihedral_arrays(to_model_array(lesion, size)[None])]
    assert len({a.tobytes() for a in from_arrays}) == 8
    # Each image view equals one array view up to resampling round-off (1 grey level at most).
    matches = [min(range(8), key=lambda j: np.abs(view - from_arrays[j]).max()) for view in from_images]
    assert sorted(matches) == list(range(8))
    assert max(np.abs(view - from_arrays[j]).max() for view, j in zip(from_images, matches)) <= 1


def test_tta_never_copies_the_full_resolution_image(predictor, monkeypatch):
    """The views are taken of the model-size array: a large upload is never flipped or rotated (the
    probe measured 1.8 GB for a 7000x7000 PNG when it was)."""
    large = Image.fromarray(random_square(64, seed=6)).resize((3000, 2000))

    def no_transpose(self, method):
        raise AssertionError(f"transposed a {self.size} image")

    monkeypatch.setattr(Image.Image, "transpose", no_transpose)
    probs = predictor.predict_probabilities([large], tta=True)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
