"""Training augmentation (skin_model.data.augment): seeded per image, shape and range kept, and each addition
does what it says on real-looking pixels."""

from __future__ import annotations

import numpy as np
import pytest

from skin_model.data.augment import (ADDITIONS, AugmentConfig, augment, draw_artefacts, hair, ink_dots, random_erase,
                                ruler, vignette)


def skin(size: int = 64, seed: int = 0) -> np.ndarray:
    """A pinkish float image in [0, 1] with a darker blob in the middle."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size - 0.5
    blob = np.exp(-(x ** 2 + y ** 2) / 0.05)[..., None]
    image = np.array([0.85, 0.65, 0.6]) * (1 - 0.6 * blob) + rng.normal(0, 0.02, (size, size, 3))
    return np.clip(image, 0, 1).astype(np.float32)


def run(image: np.ndarray, seed: tuple[int, int], config: AugmentConfig) -> np.ndarray:
    import tensorflow as tf

    return augment(tf.constant((image * 255).astype(np.uint8)), tf.constant(seed, tf.int64), config).numpy()


@pytest.mark.parametrize("config", [AugmentConfig(), AugmentConfig(colour=True), AugmentConfig(framing=True),
                                    AugmentConfig(artefacts=True), AugmentConfig(True, True, True)])
def test_same_seed_same_image_other_seed_other_image(config):
    image = skin()
    a, b, c = run(image, (1, 2), config), run(image, (1, 2), config), run(image, (1, 3), config)
    assert a.shape == image.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 255.0
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.5


def test_names_switch_additions_on():
    assert AugmentConfig.from_names(list(ADDITIONS), 0.2) == AugmentConfig(True, True, True, 0.2)
    assert AugmentConfig.from_names([]) == AugmentConfig()
    with pytest.raises(ValueError, match="Unknown augmentation"):
        AugmentConfig.from_names(["blur"])


def test_wide_colour_moves_colours_further_than_todays_jitter():
    image = skin()

    def colour_spread(config: AugmentConfig) -> float:
        means = np.array([run(image, (7, i), config).reshape(-1, 3).mean(axis=0) for i in range(24)])
        chroma = means / means.sum(axis=1, keepdims=True)
        return float(chroma.std(axis=0).mean())

    assert colour_spread(AugmentConfig(colour=True)) > 2 * colour_spread(AugmentConfig())


def test_framing_zooms_in_and_out_with_reflect_padding():
    """A centred dark blob covers a different share of the frame after reframing, both more (zoom in) and
    less (zoom out) than before, and the corners never turn to the zero fill (reflect padding)."""
    image = skin(96)
    dark = lambda x: float((x.mean(axis=-1) < 0.55 * 255).mean())  # noqa: E731
    shares = [dark(run(image, (3, i), AugmentConfig(framing=True))) for i in range(40)]
    original = dark(image * 255)
    assert min(shares) < 0.8 * original and max(shares) > 1.5 * original
    corners = np.array([run(image, (3, i), AugmentConfig(framing=True))[[0, 0, -1, -1], [0, -1, 0, -1]]
                        for i in range(10)])
    assert corners.min() > 40, "no black fill at the corners"


@pytest.mark.parametrize("draw", [hair, ruler, ink_dots])
def test_marks_darken_or_tint_a_small_part_of_the_image(draw):
    image = skin(224)
    out = draw(image.copy(), np.random.default_rng(5))
    changed = np.abs(out - image).max(axis=-1) > 0.05
    assert 0.001 < changed.mean() < 0.25, f"{draw.__name__} changed {changed.mean():.1%} of the pixels"
    assert out[changed].mean() < image[changed].mean(), "marks are darker than skin"


def test_vignette_blackens_the_corners_and_keeps_the_centre():
    image = skin(224)
    out = vignette(image.copy(), np.random.default_rng(0))
    assert out[:8, :8].max() < 0.15 and out[-8:, -8:].max() < 0.15
    np.testing.assert_allclose(out[100:124, 100:124], image[100:124, 100:124])


def test_random_erase_fills_one_rectangle_with_noise():
    image = np.full((64, 64, 3), 0.5, np.float32)
    out = random_erase(image.copy(), np.random.default_rng(0))
    rows, cols = np.nonzero(np.abs(out - 0.5).max(axis=-1) > 1e-6)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert 0.015 * 64 * 64 < box < 0.13 * 64 * 64
    assert len(rows) > 0.9 * box, "the changed pixels fill one rectangle"


def test_artefacts_are_drawn_by_lot():
    image = skin(64)
    changed = [np.abs(draw_artefacts(image, np.random.default_rng(i)) - image).max() > 0.05 for i in range(60)]
    assert 0.3 < np.mean(changed) < 0.95, "most but not all images get an artefact"
