"""The reference Grad-CAM and Grad-CAM++: tf-keras-vis 0.8.7 on the full Keras model, with the softmax replaced
by a linear activation (``ReplaceToLinear``) so the score is the class logit, on ``model.LAST_CONV_LAYER``.

Serving uses the closed form of ``explain`` instead; this one is what it is tested against and what
``python -m skin_model.cli.localisation --reference`` measures with. Building it imports TensorFlow, Keras and
tf-keras-vis; nothing on the serving path imports this module.
"""

from __future__ import annotations

import threading

import numpy as np

from skin_model.model import LAST_CONV_LAYER
from skin_model.serving.explain import METHODS, Method


class ReferenceExplainer:
    """tf-keras-vis Grad-CAM / Grad-CAM++ for one Keras model (cloned once); ``heatmap`` calls are serialised
    with a lock (tf-keras-vis does not document its visualisers as thread-safe)."""

    def __init__(self, model) -> None:
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

        self._cams = {"gradcam": Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)}
        self._cams["gradcam++"] = GradcamPlusPlus(self._cams["gradcam"].model, clone=False)
        self._lock = threading.Lock()

    def heatmap(self, model_input: np.ndarray, class_index: int, method: Method = "gradcam") -> np.ndarray:
        """(H, W) map in [0, 1] for one preprocessed image (1, H, W, 3), at the model's input size."""
        from tf_keras_vis.utils.scores import CategoricalScore

        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; choose from {list(METHODS)}")
        with self._lock:
            cam = self._cams[method](CategoricalScore([int(class_index)]), np.asarray(model_input, np.float32),
                                     penultimate_layer=LAST_CONV_LAYER, seek_penultimate_conv_layer=False)
        return np.nan_to_num(np.asarray(cam[0], dtype=np.float32)).clip(0.0, 1.0)
