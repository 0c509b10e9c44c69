"""Where the model looked: Grad-CAM / Grad-CAM++ heatmaps (tf-keras-vis) and their overlay on the image.

The model's softmax is replaced by a linear activation in a clone (``ReplaceToLinear``) so the score is the
class logit, as in the Grad-CAM paper; the target layer is MobileNetV2's last convolutional block.

Speed: tf-keras-vis runs its forward and backward passes eagerly, op by op (~300 ms for MobileNetV2 at
224 px on 2 cores, against ~25 ms compiled). Grad-CAM only needs d(score)/d(feature map), and everything
between the feature map and the score is the small classification head. So the backbone up to
``LAST_CONV_LAYER`` runs once as a compiled ``tf.function`` (sharing the model's weights), and tf-keras-vis
computes Grad-CAM / Grad-CAM++ on a head-only model whose input is that feature map. The result is the
same map (tested against tf-keras-vis on the full model); ``Explainer(model, split=False)`` gives the
plain tf-keras-vis path.

TensorFlow and tf-keras-vis are imported when an ``Explainer`` is built, so the app can use this module's
names and colouring before TensorFlow has loaded.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from scipy.ndimage import zoom

from skin_model.model import LAST_CONV_LAYER

Method = Literal["gradcam", "gradcam++"]
METHODS: dict[str, str] = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
#: OpenCV colour map used for heatmaps (blue = low, red = high); the app's legend says the same.
COLORMAP = cv2.COLORMAP_JET


#: Name of the identity layer that stands for the feature map in the head-only model.
FEATURES_LAYER = "gradcam_features"


def _head_model(model, layer_name: str = LAST_CONV_LAYER):
    """The layers after ``layer_name`` as a model taking that layer's output (a chain: pool, dropout, dense)."""
    import keras

    names = [layer.name for layer in model.layers]
    start = names.index(layer_name) + 1
    features = keras.Input(shape=tuple(model.get_layer(layer_name).output.shape[1:]))
    x = keras.layers.Identity(name=FEATURES_LAYER)(features)
    for layer in model.layers[start:]:
        x = layer(x)
    if tuple(x.shape) != tuple(model.outputs[0].shape):
        raise ValueError(f"Layers after {layer_name} are not a simple chain; use Explainer(model, split=False)")
    return keras.Model(features, x, name="gradcam_head")


class Explainer:
    """Grad-CAM and Grad-CAM++ for one model; build once and reuse (models are cloned / split once).

    tf-keras-vis does not document its visualisers as thread-safe; callers sharing one Explainer between
    threads should serialise ``heatmap`` calls (``service.ClassifierService`` does, with a lock).
    """

    def __init__(self, model, split: bool = True) -> None:
        import keras
        import tensorflow as tf
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

        self._split = split
        if split:
            features = keras.Model(model.inputs, model.get_layer(LAST_CONV_LAYER).output)
            size = tuple(model.inputs[0].shape[1:])
            spec = tf.TensorSpec((None, *size), tf.float32)
            self._features = tf.function(lambda x: features(x, training=False), input_signature=[spec],
                                         autograph=False)  # no Python control flow: no AutoGraph temp files
            target = _head_model(model)
        else:
            target = model
        self._cams = {"gradcam": Gradcam(target, model_modifier=ReplaceToLinear(), clone=True)}
        self._cams["gradcam++"] = GradcamPlusPlus(self._cams["gradcam"].model, clone=False)

    def heatmap(self, model_input: np.ndarray, class_index: int, method: Method = "gradcam") -> np.ndarray:
        """(H, W) map in [0, 1] for one preprocessed image (1, H, W, 3), at the model's input size."""
        import tensorflow as tf
        from tf_keras_vis.utils import normalize, zoom_factor
        from tf_keras_vis.utils.scores import CategoricalScore

        if method not in self._cams:
            raise ValueError(f"Unknown method {method!r}; choose from {list(self._cams)}")
        score = CategoricalScore([class_index])
        if not self._split:
            cam = self._cams[method](score, model_input, penultimate_layer=LAST_CONV_LAYER,
                                     seek_penultimate_conv_layer=False)
            return np.nan_to_num(np.asarray(cam[0], dtype=np.float32)).clip(0.0, 1.0)
        feature_map = self._features(tf.convert_to_tensor(model_input, tf.float32))
        cam = self._cams[method](score, feature_map, penultimate_layer=FEATURES_LAYER,
                                 seek_penultimate_conv_layer=False, expand_cam=False, normalize_cam=False)
        cam = np.asarray(cam, dtype=np.float32)
        # Expand and normalise exactly as tf-keras-vis does with expand_cam=True on the full model.
        cam = normalize(zoom(cam, zoom_factor(cam.shape, model_input.shape), order=1))
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
