"""What the Classify and Batch pages compute, without any UI: decode an upload, check it, predict, explain.

One :class:`ClassifierService` is built per process and shared between sessions and pages (the app
caches it with ``st.cache_resource`` in ``pages.load_service``). Prediction and the out-of-distribution
check run compiled ``tf.function``\ s (thread-safe); the tf-keras-vis explainers share one cloned model
and run in eager mode, so their calls are serialised with a lock. Nothing here writes to disk.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.explain import METHODS, Explainer, colorize, overlay
from skin_model.imaging import load_image
from skin_model.inference import Prediction, Predictor
from skin_model.labels import class_index
from skin_model.model import ModelMetadata
from skin_model.ood import OodGate, OodResult, OodScorer, load_gate
from skin_model.tta import predict_probabilities_tta

log = logging.getLogger(__name__)

#: Longest side of the images shown next to the heatmap (the model's centre square, upscaled).
EXPLAIN_DISPLAY_SIDE = 336


@dataclass(frozen=True)
class Analysis:
    """One decoded upload, the model's calibrated prediction for it and the out-of-distribution check."""

    name: str
    digest: str
    image: Image.Image
    model_input: np.ndarray
    prediction: Prediction
    ood: OodResult | None = None  # None when no gate is fitted for the model
    tta: bool = False  # True when the prediction averages the 8 flipped/rotated views

    @property
    def flagged_ood(self) -> bool:
        """True when the gate says this does not look like a dermatoscopic image."""
        return self.ood is not None and self.ood.flagged


@dataclass(frozen=True)
class Explanation:
    """A Grad-CAM heatmap for one class, ready to show next to the image the model saw."""

    method: str
    class_code: str
    heatmap: np.ndarray  # (S, S) float32 in [0, 1] at the model's input size
    view: np.ndarray  # uint8 RGB: the centre square the model classified, at display size

    @property
    def heatmap_rgb(self) -> np.ndarray:
        """The heatmap coloured (blue = low, red = high attention) at display size."""
        return colorize(self.heatmap, (self.view.shape[1], self.view.shape[0]))

    def overlay(self, alpha: float) -> np.ndarray:
        """The coloured heatmap blended over the model's view with opacity ``alpha`` in [0, 1]."""
        return overlay(self.view, self.heatmap, alpha)


def centre_square(image: Image.Image, side: int = EXPLAIN_DISPLAY_SIDE) -> np.ndarray:
    """The centre square the model classifies (same crop as ``imaging.to_model_array``), at ``side`` px."""
    square = ImageOps.fit(image, (side, side), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    return np.asarray(square, dtype=np.uint8)


class ClassifierService:
    """The loaded model, its explainer and (when fitted) its out-of-distribution gate; ``analyse`` and
    ``explain`` are safe to call from many threads."""

    def __init__(self, predictor: Predictor, ood_gate: OodGate | None = None,
                 ood_status: str = "no gate given") -> None:
        self.predictor = predictor
        self._explainer = Explainer(predictor.model)
        self._explain_lock = threading.Lock()
        self._ood = OodScorer(predictor.model, ood_gate) if ood_gate is not None else None
        self.ood_status = "on" if ood_gate is not None else ood_status

    @classmethod
    def from_dir(cls, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> "ClassifierService":
        """Load and sha256-check the bundle (raises ``ModelIntegrityError`` when missing or altered) and
        the ``ood.npz`` gate fitted for it, if any (a missing or stale gate leaves the check off)."""
        predictor = Predictor.from_dir(Path(weights_dir))
        gate, status = load_gate(Path(weights_dir), predictor.metadata.model_sha256)
        return cls(predictor, gate, status)

    @property
    def ood_enabled(self) -> bool:
        return self._ood is not None

    def warm_up(self) -> None:
        """Run one prediction and one Grad-CAM on a grey image so the first upload does not pay for tracing."""
        grey = Image.new("RGB", (self.predictor.input_size,) * 2, (128, 128, 128))
        analysis = self.analyse_image(grey, name="warm-up")
        self.explain(analysis, analysis.prediction.top_code, "gradcam")

    @property
    def metadata(self) -> ModelMetadata:
        return self.predictor.metadata

    def analyse(self, data: bytes, name: str | None = None, tta: bool = False) -> Analysis:
        """Decode ``data`` in memory, check and predict. Raises ``InvalidImageError`` naming the problem."""
        image = load_image(data, name=name)
        return self.analyse_image(image, name=name or "image", digest=hashlib.sha256(data).hexdigest(), tta=tta)

    def analyse_image(self, image: Image.Image, name: str = "image", digest: str = "",
                      tta: bool = False) -> Analysis:
        """Check and predict for an already decoded RGB image (``tta``: average the 8 dihedral views)."""
        batch = self.predictor.model_input([image])
        if tta:
            probs = predict_probabilities_tta(self.predictor, [image])[0]
        else:
            probs = self.predictor.probabilities_of(batch)[0]
        prediction = Prediction(tuple(float(p) for p in probs), self.metadata.unsure_threshold)
        ood = self._ood.check(batch)[0] if self._ood is not None else None
        return Analysis(name=name, digest=digest, image=image, model_input=batch, prediction=prediction,
                        ood=ood, tta=tta)

    def explain(self, analysis: Analysis, class_code: str, method: str = "gradcam") -> Explanation:
        """Grad-CAM (``"gradcam"``) or Grad-CAM++ (``"gradcam++"``) for ``class_code``."""
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; choose from {list(METHODS)}")
        with self._explain_lock:
            heatmap = self._explainer.heatmap(analysis.model_input, class_index(class_code), method)
        return Explanation(method=method, class_code=class_code, heatmap=heatmap,
                           view=centre_square(analysis.image))
