"""MixStyle: the identity in inference; in training it changes each image's feature statistics and keeps
its normalised content, reproducibly with a seed; inserted into and removed from the classifier without
changing its inference outputs or weights."""

from __future__ import annotations

import numpy as np
import pytest

from skin_model.labels import NUM_CLASSES


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    rng = np.random.default_rng(0)
    # eight "images" with their own channel means and spreads (their styles)
    return (rng.normal(size=(8, 6, 6, 4)) * rng.uniform(0.5, 3.0, (8, 1, 1, 4))
            + rng.uniform(-2.0, 2.0, (8, 1, 1, 4))).astype(np.float32)


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)


def test_identity_in_inference_and_with_probability_zero(features):
    from skin_model.training.mixstyle import MixStyle

    np.testing.assert_array_equal(np.asarray(MixStyle(1.0, seed=0)(features, training=False)), features)
    np.testing.assert_array_equal(np.asarray(MixStyle(0.0, seed=0)(features, training=True)), features)


def test_training_mixes_statistics_and_keeps_content(features):
    from skin_model.training.mixstyle import MixStyle

    out = np.asarray(MixStyle(1.0, alpha=1.0, seed=3)(features, training=True))
    assert out.shape == features.shape and out.dtype == features.dtype
    np.testing.assert_allclose(_normalised(out), _normalised(features), atol=1e-3)
    shift = np.abs(out.mean(axis=(1, 2)) - features.mean(axis=(1, 2)))
    assert (shift.max(axis=1) > 0.05).sum() >= 4, "most images took on some of another image's style"
    # each new mean lies between the image's own and the batch's extremes: a blend, not a new style
    means = features.mean(axis=(1, 2))
    assert np.all(out.mean(axis=(1, 2)) >= means.min(axis=0) - 1e-4)
    assert np.all(out.mean(axis=(1, 2)) <= means.max(axis=0) + 1e-4)


def test_same_seed_same_mix(features):
    from skin_model.training.mixstyle import MixStyle

    first = np.asarray(MixStyle(1.0, alpha=1.0, seed=5)(features, training=True))
    again = np.asarray(MixStyle(1.0, alpha=1.0, seed=5)(features, training=True))
    other = np.asarray(MixStyle(1.0, alpha=1.0, seed=6)(features, training=True))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_probability_outside_zero_to_one_is_refused():
    from skin_model.training.mixstyle import MixStyle

    with pytest.raises(ValueError, match="between 0 and 1"):
        MixStyle(1.5)


def test_inserted_into_the_classifier_and_removed_again():
    """The served network is unchanged by MixStyle: same inference outputs and weights, a flat graph in which
    Grad-CAM's layer has one output, and no MixStyle layer left after ``without_mixstyle``."""
    import keras

    from skin_model.training.mixstyle import (
        MIXSTYLE_AFTER,
        MixStyle,
        insert_mixstyle,
        without_mixstyle,
    )
    from skin_model.model import LAST_CONV_LAYER, build_classifier

    keras.utils.set_random_seed(0)
    plain = build_classifier(96, None)
    rng = np.random.default_rng(1)  # four noise images, each with its own brightness and contrast (style)
    x = np.clip(rng.uniform(-1, 1, (4, 96, 96, 3)) * [[[[0.1]]], [[[0.4]]], [[[0.7]]], [[[1.0]]]]
                + rng.uniform(-0.5, 0.5, (4, 1, 1, 3)), -1, 1).astype(np.float32)
    expected = plain.predict(x, verbose=0)

    mixing = insert_mixstyle(plain, 1.0, alpha=1.0, seed=0)  # uniform blend weights: every image mixes
    names = [layer.name for layer in mixing.layers]
    assert [n for n in names if n.startswith("mixstyle_")] == [f"mixstyle_{n}" for n in MIXSTYLE_AFTER]
    assert len(mixing.layers) == len(plain.layers) + len(MIXSTYLE_AFTER)
    np.testing.assert_allclose(mixing.predict(x, verbose=0), expected, atol=1e-6)
    def after_first_mix(model):  # the untrained head outputs 1/7 for anything: look where the first mix acts
        return keras.Model(model.inputs, model.get_layer("block_3_expand").output)

    mixed, unmixed = (np.asarray(after_first_mix(m)(x, training=True)) for m in (mixing, plain))
    assert np.abs(mixed - unmixed).sum() > 0.01 * np.abs(unmixed).sum(), "training mode mixes styles"

    served = without_mixstyle(mixing)
    assert not any(isinstance(layer, MixStyle) for layer in served.layers)
    assert [layer.name for layer in served.layers] == [layer.name for layer in plain.layers]
    np.testing.assert_allclose(served.predict(x, verbose=0), expected, atol=1e-6)
    for a, b in zip(served.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert served.get_layer(LAST_CONV_LAYER).output is not None
    assert served.output.shape[-1] == NUM_CLASSES
    assert without_mixstyle(plain) is plain and insert_mixstyle(plain, 0.0) is plain


def test_unknown_layer_is_refused():
    import keras

    from skin_model.training.mixstyle import insert_mixstyle

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="conv")])
    with pytest.raises(ValueError, match="block_2_add"):
        insert_mixstyle(model, 0.5)
