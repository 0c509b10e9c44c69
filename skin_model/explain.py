"""Where the model looked: Grad-CAM / Grad-CAM++ heatmaps (tf-keras-vis) and their overlay on the image.

The model's softmax is replaced by a linear activation in a clone (``ReplaceToLinear``) so the score is the
class logit, as in the Grad-CAM paper; the target layer is MobileNetV2's last convolutional block.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
from tf_keras_vis.utils.scores import CategoricalScore

from skin_model.model import LAST_CONV_LAYER

Method = Literal["gradcam", "gradcam++"]
METHODS: dict[str, str] = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
#: OpenCV colour map used for heatmaps (blue = low, red = high); the app's legend says the same.
COLORMAP = cv2.COLORMAP_JET


class Explainer:
    """Grad-CAM and Grad-CAM++ for one model; build once and reuse (it clones the model once)."""

    def __init__(self, model) -> None:
        self._cams = {"gradcam": Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)}
        self._cams["gradcam++"] = GradcamPlusPlus(self._cams["gradcam"].model, clone=False)

    def heatmap(self, model_input: np.ndarray, class_index: int, method: Method = "gradcam") -> np.ndarray:
        """(H, W) map in [0, 1] for one preprocessed image (1, H, W, 3), at the model's input size."""
        if method not in self._cams:
            raise ValueError(f"Unknown method {method!r}; choose from {list(self._cams)}")
        cam = self._cams[method](CategoricalScore([class_index]), model_input,
                                 penultimate_layer=LAST_CONV_LAYER, seek_penultimate_conv_layer=False)
        return np.nan_to_num(np.asarray(cam[0], dtype=np.float32)).clip(0.0, 1.0)


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
