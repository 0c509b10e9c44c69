"""Closed-form Grad-CAM and Grad-CAM++ (``skin_model.serving.explain``) against their reference, tf-keras-vis on
the full Keras model (``explain_reference.ReferenceExplainer``): every class, both methods, within 1e-4 after
normalisation, on the tiny bundle always and on the shipped bundle with real HAM10000 images; and as served,
from the LiteRT model's feature map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skin_model.bundle import HEAD_STRUCTURE, DenseHead
from skin_model.labels import CODES, NUM_CLASSES
from skin_model.serving.explain import Explainer, expand_and_normalise, gradcam, gradcam_plus_plus

#: Closed form against tf-keras-vis, both on the Keras model's own feature map.
TOLERANCE = 1e-4
#: As served: the LiteRT feature map differs from the Keras one by float rounding (~1e-5 of its range), which
#: normalisation can enlarge where a map is nearly flat.
SERVED_TOLERANCE = 5e-4
METHODS = ("gradcam", "gradcam++")


def keras_parts(weights: Path):
    """(Keras model, compiled function image batch -> last conv feature map, reference explainer)."""
    import keras

    from skin_model.model import LAST_CONV_LAYER, load_bundle
    from skin_model.serving.explain_reference import ReferenceExplainer

    model, _ = load_bundle(weights)
    features = keras.Model(model.inputs, model.get_layer(LAST_CONV_LAYER).output)
    return model, (lambda batch: features.predict_on_batch(batch)), ReferenceExplainer(model)


def compare_every_class(weights: Path, images: list, check_served: bool = True) -> list[float]:
    """Assert closed form == tf-keras-vis for every class, method and image; the spreads of the maps."""
    from skin_model.serving.service import ClassifierService

    service = ClassifierService.from_dir(weights)
    model, feature_map_of, reference = keras_parts(weights)
    explainer = Explainer(service.predictor.head, service.metadata.input_size)
    spreads = []
    for image in images:
        model_input = service.predictor.model_input([image])
        keras_map = feature_map_of(model_input)[0]
        served = service.analyse_image(image, tta=False)
        for method in METHODS:
            for index, code in enumerate(CODES):
                expected = reference.heatmap(model_input, index, method)
                closed = explainer.heatmap(keras_map, index, method)
                assert closed.shape == expected.shape == (service.metadata.input_size,) * 2
                np.testing.assert_allclose(closed, expected, atol=TOLERANCE, err_msg=f"{method} {code}")
                if check_served:
                    np.testing.assert_allclose(service.explain(served, code, method).heatmap, expected,
                                               atol=SERVED_TOLERANCE, err_msg=f"served {method} {code}")
                spreads.append(float(expected.std()))
    return spreads


@pytest.fixture(scope="module")
def lesions(lesion_path: Path, synthetic_ham: Path) -> list:
    from skin_model.data.imaging import load_image

    others = sorted((synthetic_ham / "images_600x450").glob("*.jpg"))
    return [load_image(lesion_path), load_image(others[7])]


def test_closed_form_equals_tf_keras_vis_on_the_tiny_bundle(tiny_bundle, lesions):
    spreads = compare_every_class(tiny_bundle, lesions)
    assert sum(s > 0.05 for s in spreads) >= len(spreads) // 2, "most compared maps are far from flat"


@pytest.mark.real_data("HAM10000", reason="the trained model's maps on real dermoscopy, where they are shown")
def test_closed_form_equals_tf_keras_vis_on_the_shipped_bundle(shipped_bundle, ham_dir):
    from skin_model.bundle import read_metadata
    from skin_model.data.imaging import load_image
    from skin_model.serving.lite import ensure_lite

    ensure_lite(shipped_bundle, read_metadata(shipped_bundle))  # serving only loads it; `make app` builds it
    images = [load_image(p) for p in sorted((ham_dir / "images_600x450").glob("*.jpg"))[:2]]
    spreads = compare_every_class(shipped_bundle, images)
    assert sum(s > 0.05 for s in spreads) >= len(spreads) // 2, "most compared maps are far from flat"


def test_an_overflowing_score_gives_the_references_blank_map(tiny_bundle, lesions, tmp_path):
    """Grad-CAM++ weighs by exp(logit): past float32's range tf-keras-vis's map is NaN, shown as zeros; a very
    negative logit underflows to 0 and zeroes every weight. The closed form does the same, class by class."""
    from skin_model.bundle import read_metadata
    from skin_model.data.imaging import to_model_input
    from skin_model.model import dense_head, load_bundle, save_bundle

    model, _ = load_bundle(tiny_bundle)
    dense = model.get_layer("predictions")
    bias = dense.bias.numpy()
    bias[0], bias[1] = 200.0, -200.0
    dense.bias.assign(bias)
    save_bundle(model, read_metadata(tiny_bundle), tmp_path)
    _, feature_map_of, reference = keras_parts(tmp_path)
    explainer = Explainer(dense_head(model), model.inputs[0].shape[1])
    model_input = to_model_input([lesions[0]], model.inputs[0].shape[1])
    keras_map = feature_map_of(model_input)[0]
    for index in (0, 1):
        expected = reference.heatmap(model_input, index, "gradcam++")
        assert not expected.any(), "the reference gives a blank map"
        np.testing.assert_array_equal(explainer.heatmap(keras_map, index, "gradcam++"), expected)
    assert explainer.heatmap(keras_map, 2, "gradcam++").std() > 0.05, "other classes are unaffected"


# ---------------------------------------------------------------------------------------------- by hand
@pytest.fixture()
def small_head() -> DenseHead:
    kernel = np.zeros((3, NUM_CLASSES), np.float32)
    kernel[:, 0] = [2.0, -1.0, 0.5]
    kernel[:, 1] = [-1.0, -1.0, -1.0]
    return DenseHead("out_relu", HEAD_STRUCTURE, kernel, np.zeros(NUM_CLASSES, np.float32))


def test_gradcam_is_the_relu_of_the_class_weighted_channels(small_head):
    feature_map = np.random.default_rng(0).uniform(0, 6, (2, 2, 3)).astype(np.float32)
    by_hand = np.maximum((2.0 * feature_map[..., 0] - feature_map[..., 1] + 0.5 * feature_map[..., 2]) / 4, 0)
    np.testing.assert_allclose(gradcam(feature_map, small_head, 0), by_hand, rtol=1e-6)
    assert not gradcam(feature_map, small_head, 1).any(), "all-negative weights: nothing raised the score"


def test_gradcam_plus_plus_keeps_only_channels_that_raise_the_score(small_head):
    """With a gradient constant over positions each channel's normalised alphas sum to 1, so the weights
    are exp(logit) * ReLU(gradient): channel 1 (negative weight) drops out."""
    feature_map = np.random.default_rng(1).uniform(0, 6, (2, 2, 3)).astype(np.float32)
    logit = feature_map.mean(axis=(0, 1)) @ small_head.kernel[:, 0]
    by_hand = np.exp(logit) * (2.0 * feature_map[..., 0] + 0.5 * feature_map[..., 2]) / 4
    np.testing.assert_allclose(gradcam_plus_plus(feature_map, small_head, 0), by_hand, rtol=1e-5)


def test_normalised_map_spans_zero_to_one_at_the_input_size():
    cam = np.array([[0.0, 1.0], [3.0, 2.0]], np.float32)
    heatmap = expand_and_normalise(cam, 8)
    assert heatmap.shape == (8, 8) and heatmap.dtype == np.float32
    assert heatmap.min() == 0.0 and heatmap.max() == pytest.approx(1.0, abs=1e-6)
    assert np.unravel_index(np.argmax(heatmap), heatmap.shape) == (7, 0), "the peak stays where the cell was"
    assert not expand_and_normalise(np.zeros((2, 2), np.float32), 8).any(), "a flat map stays zero"


def test_bad_input_is_named(small_head):
    explainer = Explainer(small_head, 8)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) feature map, got shape \(2, 2, 4\)"):
        explainer.heatmap(np.zeros((2, 2, 4), np.float32), 0)
    with pytest.raises(ValueError, match="Unknown method 'cam'"):
        explainer.heatmap(np.zeros((2, 2, 3), np.float32), 0, "cam")
    with pytest.raises(ValueError, match="Class index 7"):
        explainer.heatmap(np.zeros((2, 2, 3), np.float32), 7)


@pytest.mark.parametrize(("shape", "size"), [((7, 7), 224), ((3, 3), 96), ((2, 5), 17), ((1, 1), 8)])
def test_resizing_is_scipys_linear_zoom(shape, size):
    """tf-keras-vis expands maps with scipy.ndimage.zoom(order=1); serving does the same in NumPy."""
    from scipy.ndimage import zoom

    from skin_model.serving.explain import linear_zoom

    cam = np.random.default_rng(size).uniform(0, 5, shape).astype(np.float32)
    expected = zoom(cam[np.newaxis], (1.0, size / shape[0], size / shape[1]), order=1)[0]
    np.testing.assert_allclose(linear_zoom(cam, size), expected, rtol=1e-6, atol=1e-6)
