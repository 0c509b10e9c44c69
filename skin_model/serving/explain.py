"""Where the model looked: Grad-CAM and Grad-CAM++ in closed form from the last convolutional feature map,
and their overlay on the image. NumPy and OpenCV (colouring) only.

After ``model.LAST_CONV_LAYER`` the network is global average pooling, dropout (the identity when serving)
and one dense layer (``bundle.DenseHead``, read from the bundle's ``head.npz``). The score is the class logit
(the softmax replaced by a linear activation, as in the Grad-CAM paper), so its gradient with respect to the
feature map A (H x W x K) is the same at every position: ``kernel[k, c] / (H * W)``. Both maps follow from A
and the head alone, for any class:

- Grad-CAM: ReLU(sum_k A[:, :, k] * kernel[k, c] / (H * W));
- Grad-CAM++: tf-keras-vis 0.8.7's formula (``gradcam_plus_plus.py``) with that constant gradient g: the score's
  exponential exp(z_c) times g, g^2 and g^3 as first, second and third derivatives, the per-channel sums of A
  in the alphas' denominator, its guards against zero denominators, and ReLU of the first derivative.

Each map is then resized to the model's input size and normalised as tf-keras-vis does: linear interpolation
with the corner cells on the corner pixels (what its SciPy ``zoom(order=1)`` does, in NumPy), then
(x - min) / (max - min + 1e-7). ``explain_reference.ReferenceExplainer`` runs
tf-keras-vis itself on the Keras model; the tests hold the two within 1e-4.

The feature map comes from the same LiteRT call as the prediction (``lite.LitePredictor``); with test-time
augmentation it is the identity view's.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from skin_model.bundle import DenseHead

Method = Literal["gradcam", "gradcam++"]
METHODS: dict[str, str] = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
#: OpenCV colour map used for heatmaps (blue = low, red = high); the app's legend says the same.
COLORMAP = cv2.COLORMAP_JET
#: What tf-keras-vis adds to the range when normalising a map (Keras' default epsilon).
EPSILON = 1e-7


def score_gradient(head: DenseHead, class_index: int, cells: int) -> np.ndarray:
    """(K,) float32 gradient of the class logit with respect to every position of the feature map."""
    return (head.kernel[:, class_index] / np.float32(cells)).astype(np.float32)


def gradcam(feature_map: np.ndarray, head: DenseHead, class_index: int) -> np.ndarray:
    """(H, W) Grad-CAM before resizing: ReLU of the channels weighted by the (constant) mean gradient."""
    cells = feature_map.shape[0] * feature_map.shape[1]
    weights = score_gradient(head, class_index, cells)
    return np.maximum(np.sum(feature_map * weights, axis=-1), np.float32(0.0))


def gradcam_plus_plus(feature_map: np.ndarray, head: DenseHead, class_index: int) -> np.ndarray:
    """(H, W) Grad-CAM++ before resizing: tf-keras-vis's weights with the gradient constant over positions, so
    every sum over positions of a per-channel constant is ``cells`` times it."""
    cells = feature_map.shape[0] * feature_map.shape[1]
    grads = score_gradient(head, class_index, cells)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # tf-keras-vis lets inf/nan through
        score = np.exp(head.logits(feature_map)[class_index]).astype(np.float32)
        first = score * grads
        second = first * grads
        third = second * grads
        global_sum = feature_map.sum(axis=(0, 1), dtype=np.float32)
        alpha_denom = second * np.float32(2.0) + third * global_sum
        alpha_denom = alpha_denom + (second == 0.0).astype(np.float32)
        alphas = second / alpha_denom
        alpha_normalisation = alphas * np.float32(cells)
        alpha_normalisation = alpha_normalisation + (alpha_normalisation == 0.0).astype(np.float32)
        alphas = alphas / alpha_normalisation
        weights = np.float32(cells) * (np.maximum(first, np.float32(0.0)) * alphas)
        cam = np.sum(feature_map * weights, axis=-1)
    return np.maximum(cam, np.float32(0.0))


CAMS = {"gradcam": gradcam, "gradcam++": gradcam_plus_plus}


def _linear_axis(length: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``size`` output positions along an axis of ``length`` cells: the lower and upper cell of each and
    the weight of the upper one, the first and last cells sitting on the first and last positions."""
    step = (length - 1) / (size - 1) if size > 1 else 0.0
    position = np.arange(size, dtype=np.float64) * step
    lower = np.minimum(np.floor(position).astype(np.intp), length - 1)
    upper = np.minimum(lower + 1, length - 1)
    return lower, upper, position - lower


def linear_zoom(cam: np.ndarray, size: int) -> np.ndarray:
    """(H, W) map to (size, size) by linear interpolation, as ``scipy.ndimage.zoom(cam, factors, order=1)``
    (computed in float64, returned in float32)."""
    cam = np.asarray(cam, np.float64)
    lower, upper, weight = _linear_axis(cam.shape[0], size)
    rows = cam[lower] * (1.0 - weight)[:, np.newaxis] + cam[upper] * weight[:, np.newaxis]
    lower, upper, weight = _linear_axis(cam.shape[1], size)
    return (rows[:, lower] * (1.0 - weight) + rows[:, upper] * weight).astype(np.float32)


def expand_and_normalise(cam: np.ndarray, size: int) -> np.ndarray:
    """(size, size) map in [0, 1]: tf-keras-vis's expansion and normalisation of a coarse (H, W) map; a map
    that is not finite (an overflowed score) becomes zeros."""
    expanded = linear_zoom(cam, size)
    with np.errstate(invalid="ignore"):
        low, high = expanded.min(), expanded.max()
        normalised = (expanded - low) / (high - low + np.float32(EPSILON))
    return np.nan_to_num(normalised.astype(np.float32)).clip(0.0, 1.0)


class Explainer:
    """Grad-CAM and Grad-CAM++ of one bundle's head: pure array arithmetic, safe to share between threads."""

    def __init__(self, head: DenseHead, input_size: int) -> None:
        self.head = head
        self.input_size = int(input_size)

    def cam(self, feature_map: np.ndarray, class_index: int, method: Method = "gradcam") -> np.ndarray:
        """The coarse (H, W) map of ``method`` for one image's (H, W, K) feature map, before resizing."""
        if method not in CAMS:
            raise ValueError(f"Unknown method {method!r}; choose from {list(CAMS)}")
        feature_map = np.asarray(feature_map, np.float32)
        if feature_map.ndim == 4 and feature_map.shape[0] == 1:
            feature_map = feature_map[0]
        if feature_map.ndim != 3 or feature_map.shape[-1] != self.head.channels:
            raise ValueError(f"Expected one (H, W, {self.head.channels}) feature map, got shape {feature_map.shape}")
        if not 0 <= int(class_index) < self.head.classes:
            raise ValueError(f"Class index {class_index} is outside 0..{self.head.classes - 1}")
        return CAMS[method](feature_map, self.head, int(class_index))

    def heatmap(self, feature_map: np.ndarray, class_index: int, method: Method = "gradcam") -> np.ndarray:
        """(S, S) map in [0, 1] at the model's input size for one image's feature map."""
        return expand_and_normalise(self.cam(feature_map, class_index, method), self.input_size)


def colorize(heatmap: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Heatmap in [0, 1] to a uint8 RGB colour image, resized to ``size`` = (width, height)."""
    if size is not None:
        heatmap = cv2.resize(heatmap, size, interpolation=cv2.INTER_LINEAR)
    bgr = cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), COLORMAP)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend the coloured heatmap over a uint8 RGB image (any size) with opacity ``alpha``."""
    colour = colorize(heatmap, (image.shape[1], image.shape[0]))
    return cv2.addWeighted(colour, float(alpha), image, 1.0 - float(alpha), 0.0)
