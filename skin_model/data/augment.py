"""Training augmentation, as TensorFlow ops in the tf.data pipeline, seeded per image.

Every random draw is a stateless op keyed by a per-image seed (``pipeline.make_tf_dataset`` gives each image of
each epoch its own), so a run is reproducible whatever the parallelism of the pipeline.

Today's recipe (``AugmentConfig()``): flips, 90-degree rotations, random resized crops (60-100% of the area,
aspect 3:4-4:3) and mild colour jitter. Three switchable additions aimed at dermoscopy from other clinics:

- ``colour``: photometric changes wide enough to cover other cameras: a colour cast (a gain per channel),
  brightness, contrast, saturation, hue and gamma.
- ``framing``: scale and framing in one resampling: zoom in to a quarter of the area or out to twice it
  (reflect padding), small aspect changes, rotation by any angle (reflect padding), a small shift, flips.
- ``artefacts``: what dermatoscopes and clinics add: a black circular vignette or rim, hair strands, a
  ruler-like scale with ticks, ink dots, and random erasing (Zhong et al. 2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from skin_model.data.choices import AUGMENT_ADDITIONS

#: Names accepted by ``train.py --augment`` (each switches on one addition to today's recipe).
ADDITIONS = AUGMENT_ADDITIONS


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run on each training image, then optionally MixUp across the batch
    (``mixup_alpha`` > 0: Beta(alpha, alpha) blends of image pairs and of their one-hot labels)."""

    colour: bool = False
    framing: bool = False
    artefacts: bool = False
    mixup_alpha: float = 0.0
    #: Brightness jitter of today's colour jitter (0 keeps flat images flat: the MixUp test uses that).
    brightness: float = 0.15

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...], mixup_alpha: float = 0.0) -> "AugmentConfig":
        unknown = sorted(set(names) - set(ADDITIONS))
        if unknown:
            raise ValueError(f"Unknown augmentation(s) {unknown}; choose from {', '.join(ADDITIONS)}")
        return cls(**{name: True for name in names}, mixup_alpha=mixup_alpha)


# ---------------------------------------------------------------------------------------------- seeds
class _Seeds:
    """Independent stateless seeds split from one per-image seed, one per random draw."""

    def __init__(self, seed) -> None:
        self._seed = tf.cast(seed, tf.int64)
        self._count = 0

    def next(self):
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._count)

    def uniform(self, shape=(), low=0.0, high=1.0):
        return tf.random.stateless_uniform(shape, self.next(), minval=low, maxval=high)

    def chance(self, p: float):
        return self.uniform() < p


def augment(image, seed, config: AugmentConfig = AugmentConfig()):
    """Randomly augment one uint8 (S, S, 3) tensor with the int64 (2,) ``seed``; float32 pixels in [0, 255]."""
    seeds = _Seeds(seed)
    shape = image.shape  # static (S, S, 3): the drawing functions need S
    image = tf.image.convert_image_dtype(image, tf.float32)  # [0, 1]
    image = reframe(image, seeds) if config.framing else flip_rotate_crop(image, seeds, shape[0])
    image = wide_colour(image, seeds) if config.colour else colour_jitter(image, seeds, config.brightness)
    image = tf.ensure_shape(image, shape)
    if config.artefacts:
        image = artefacts(tf.clip_by_value(image, 0.0, 1.0), seeds)
    return tf.ensure_shape(tf.clip_by_value(image, 0.0, 1.0) * 255.0, shape)


# ---------------------------------------------------------------------------------------------- today's recipe
def flip_rotate_crop(image, seeds: _Seeds, size: int, min_area: float = 0.6):
    """Flips, a 90-degree rotation and a random resized crop (``min_area``-100% of the area, aspect 3:4-4:3)."""
    image = tf.image.stateless_random_flip_left_right(image, seeds.next())
    image = tf.image.stateless_random_flip_up_down(image, seeds.next())
    k = tf.random.stateless_uniform([], seeds.next(), 0, 4, dtype=tf.int32)
    image = tf.image.rot90(image, k=k)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds.next(),
        min_object_covered=0.0, aspect_ratio_range=(0.75, 1.333), area_range=(min_area, 1.0),
        use_image_if_no_bounding_boxes=True)
    return tf.image.resize(tf.slice(image, begin, crop_size), (size, size), method="bilinear")


def colour_jitter(image, seeds: _Seeds, brightness: float = 0.15):
    """Mild brightness (+-``brightness``), contrast and saturation (x0.8-1.2) and hue (+-0.03) changes."""
    image = tf.image.stateless_random_brightness(image, brightness, seeds.next())
    image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seeds.next())
    image = tf.image.stateless_random_saturation(image, 0.8, 1.2, seeds.next())
    return tf.image.stateless_random_hue(image, 0.03, seeds.next())


# ---------------------------------------------------------------------------------------------- colour
def wide_colour(image, seeds: _Seeds):
    """Another camera: a colour cast (gain x0.78-1.28 per channel), brightness (x0.74-1.35), contrast and
    saturation (x0.6-1.4 and x0.5-1.5), hue (+-0.08 of the circle) and gamma (0.67-1.5)."""
    image = image * tf.exp(seeds.uniform([3], -0.25, 0.25)) * tf.exp(seeds.uniform([], -0.3, 0.3))
    image = tf.clip_by_value(image, 0.0, 1.0)
    image = tf.image.adjust_contrast(image, seeds.uniform([], 0.6, 1.4))
    image = tf.clip_by_value(image, 0.0, 1.0)
    image = tf.image.adjust_saturation(image, seeds.uniform([], 0.5, 1.5))
    image = tf.image.adjust_hue(image, seeds.uniform([], -0.08, 0.08))
    return tf.pow(tf.clip_by_value(image, 0.0, 1.0), tf.exp(seeds.uniform([], -0.4, 0.4)))


# ---------------------------------------------------------------------------------------------- framing
def reframe(image, seeds: _Seeds, max_zoom_in: float = 2.0, max_zoom_out: float = 1.0 / math.sqrt(2.0),
            max_aspect: float = 1.2, max_shift: float = 0.1):
    """One affine resampling with reflect padding: zoom (linear x``max_zoom_out``-``max_zoom_in``, i.e. the
    field shows 1/4 to 2x the area, log-uniform), aspect change (up to ``max_aspect``), rotation by any
    angle, a shift of up to ``max_shift`` of the side, and a mirror flip."""
    size = tf.cast(tf.shape(image)[0], tf.float32)
    zoom = tf.exp(seeds.uniform([], math.log(max_zoom_out), math.log(max_zoom_in)))
    aspect = tf.exp(seeds.uniform([], -math.log(max_aspect), math.log(max_aspect)) / 2.0)
    angle = seeds.uniform([], 0.0, 2.0 * math.pi)
    flip = tf.where(seeds.chance(0.5), -1.0, 1.0)
    shift = seeds.uniform([2], -max_shift, max_shift) * size
    # output pixel p maps to input c + R(angle) diag(flip / (zoom * aspect), aspect / zoom) (p - c) + shift
    sx, sy = flip / (zoom * aspect), aspect / zoom
    cos, sin = tf.cos(angle), tf.sin(angle)
    a0, a1, b0, b1 = cos * sx, -sin * sy, sin * sx, cos * sy
    centre = (size - 1.0) / 2.0
    a2 = centre - a0 * centre - a1 * centre + shift[0]
    b2 = centre - b0 * centre - b1 * centre + shift[1]
    transform = tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])[tf.newaxis]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis], transforms=transform, output_shape=tf.shape(image)[:2], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")
    return tf.ensure_shape(out[0], image.shape)


# ---------------------------------------------------------------------------------------------- artefacts
# Drawn with OpenCV on NumPy arrays (``tf.numpy_function``): its anti-aliased lines and circles cost
# microseconds, where the same strokes as tensor ops cost ~0.2 s an image on this CPU.
HAIR_SHARE, RULER_SHARE, INK_SHARE, VIGNETTE_SHARE, ERASE_SHARE = 0.3, 0.15, 0.15, 0.3, 0.25


def artefacts(image, seeds: _Seeds):
    """``draw_artefacts`` on a float32 (S, S, 3) tensor in [0, 1], seeded from ``seeds``."""
    seed = tf.random.stateless_uniform([2], seeds.next(), 0, 2**31 - 1, dtype=tf.int64)
    out = tf.numpy_function(lambda x, s: draw_artefacts(x, np.random.default_rng(s.tolist())),
                            [image, seed], tf.float32, stateful=False)
    return tf.ensure_shape(out, image.shape)


def draw_artefacts(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What dermatoscopes and clinics add to a float32 (S, S, 3) image in [0, 1], each by lot: hair (30% of
    images), a ruler-like scale (15%), ink dots (15%), a dark circular vignette (30%), random erasing (25%)."""
    image = np.array(image, np.float32, copy=True)
    if rng.random() < HAIR_SHARE:
        image = hair(image, rng)
    if rng.random() < RULER_SHARE:
        image = ruler(image, rng)
    if rng.random() < INK_SHARE:
        image = ink_dots(image, rng)
    if rng.random() < VIGNETTE_SHARE:
        image = vignette(image, rng)
    if rng.random() < ERASE_SHARE:
        image = random_erase(image, rng)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _paint(image: np.ndarray, mask: np.ndarray, colour, opacity: float = 1.0) -> np.ndarray:
    """Blend ``colour`` into ``image`` where the uint8 ``mask`` (drawn with OpenCV) is set."""
    alpha = (mask.astype(np.float32) / 255.0 * opacity)[..., None]
    return image * (1.0 - alpha) + np.asarray(colour, np.float32) * alpha


def _scale(value: float, size: int) -> float:
    """A length given for a 224-pixel image, at ``size`` pixels."""
    return value * size / 224.0


def hair(image: np.ndarray, rng: np.random.Generator, max_strands: int = 16) -> np.ndarray:
    """2-``max_strands`` hair strands, each a gently bending curve (a polyline of 8 points), 1-2 px wide,
    black to dark brown."""
    size = image.shape[0]
    mask = np.zeros(image.shape[:2], np.uint8)
    for _ in range(rng.integers(2, max_strands + 1)):
        point, heading = rng.uniform(0, size, 2), rng.uniform(0, 2 * math.pi)
        step, bend = rng.uniform(0.02, 0.07) * size, rng.normal(0, 0.1)
        points = [point]
        for _ in range(7):
            heading += bend + rng.normal(0, 0.05)
            point = point + step * np.array([math.cos(heading), math.sin(heading)])
            points.append(point)
        curve = np.round(np.array(points) * 16).astype(np.int32)  # 4 fractional bits: sub-pixel lines
        cv2.polylines(mask, [curve], False, 255, thickness=int(rng.integers(1, 3)), lineType=cv2.LINE_AA, shift=4)
    colour = rng.uniform(0.02, 0.3) * np.array([1.0, 0.8, 0.65])
    return _paint(image, mask, colour, rng.uniform(0.6, 1.0))


def ruler(image: np.ndarray, rng: np.random.Generator, ticks: int = 24) -> np.ndarray:
    """A ruler-like scale near an edge: a straight dark line with ``ticks`` ticks (every 4th longer), at any
    angle."""
    size = image.shape[0]
    spacing = _scale(rng.uniform(5, 11), size)
    angle = rng.uniform(0, 2 * math.pi)
    along = np.array([math.cos(angle), math.sin(angle)])
    across = np.array([-along[1], along[0]])
    centre = size / 2 + across * rng.uniform(0.3, 0.45) * size
    origin = centre - along * spacing * ticks / 2
    mask = np.zeros(image.shape[:2], np.uint8)

    def line(a, b):
        cv2.line(mask, tuple(np.round(a * 16).astype(int)), tuple(np.round(b * 16).astype(int)), 255, 1,
                 cv2.LINE_AA, shift=4)

    line(origin, origin + along * spacing * (ticks - 1))
    for i in range(ticks):
        start = origin + along * spacing * i
        line(start, start + across * _scale(9 if i % 4 == 0 else 5, size))
    return _paint(image, mask, [rng.uniform(0, 0.2)] * 3)


def ink_dots(image: np.ndarray, rng: np.random.Generator, max_dots: int = 4) -> np.ndarray:
    """1-``max_dots`` marker dots (2-7 px radius at 224 px) in surgical-marker violet, blue or black."""
    size = image.shape[0]
    mask = np.zeros(image.shape[:2], np.uint8)
    for _ in range(rng.integers(1, max_dots + 1)):
        centre = tuple(int(v) for v in rng.uniform(0, size, 2))
        cv2.circle(mask, centre, max(1, round(_scale(rng.uniform(2, 7), size))), 255, -1, cv2.LINE_AA)
    palette = ([0.35, 0.15, 0.55], [0.15, 0.2, 0.55], [0.05, 0.05, 0.08])
    return _paint(image, mask, palette[rng.integers(len(palette))], rng.uniform(0.6, 0.95))


def vignette(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The dark circular rim of a dermatoscope: outside a circle (radius 0.42-0.72 of the side, centre
    shifted up to 8%) the image fades to 0-12% of its brightness over a 1-8 px edge."""
    size = image.shape[0]
    centre = (size - 1) / 2 + rng.uniform(-0.08, 0.08, 2) * size
    radius, edge = rng.uniform(0.42, 0.72) * size, _scale(rng.uniform(1, 8), size)
    axis = np.arange(size, dtype=np.float32)
    distance = np.sqrt((axis[None, :] - centre[0]) ** 2 + (axis[:, None] - centre[1]) ** 2)
    outside = np.clip((distance - radius) / edge + 0.5, 0, 1)[..., None]
    return image * (1.0 - outside * (1.0 - rng.uniform(0, 0.12)))


def random_erase(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random erasing: a rectangle of 2-12% of the area (aspect 0.3-3.3) filled with uniform noise."""
    size = image.shape[0]
    area, aspect = rng.uniform(0.02, 0.12) * size * size, math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
    h = int(np.clip(math.sqrt(area * aspect), 1, size - 1))
    w = int(np.clip(math.sqrt(area / aspect), 1, size - 1))
    top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    image[top:top + h, left:left + w] = rng.random((h, w, 3), dtype=np.float32)
    return image
