"""What the Classify and Batch pages compute, without any UI: decode an upload, check it, predict, explain.

One :class:`ClassifierService` is built per process and shared between sessions and pages (the app
caches it with ``st.cache_resource`` in ``pages.load_service``). The prediction, the out-of-distribution
features and the last convolutional feature map come from one pass of the bundle's LiteRT model
(``lite.LitePredictor``), which loads in well under a second; Grad-CAM and Grad-CAM++ are computed from that
feature map and the head's weights in closed form (``explain.Explainer``, a few milliseconds of NumPy). No
TensorFlow, Keras or tf-keras-vis is imported. Nothing here writes to disk.

Memory: an ``Analysis`` keeps only what the pages show and explain: a display copy of the upload (longest side
at most ``DISPLAY_SIDE``; none in Batch), the model's centre square at ``EXPLAIN_DISPLAY_SIDE`` and the
identity view's feature map (7 x 7 x 1280 float32 at 224 px, 250 kB). The decoded working image
(``imaging.load_image``) and the model input are dropped after analysis.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from skin_model.bundle import ModelIntegrityError, ModelMetadata
from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.data.imaging import read_image
from skin_model.labels import class_index
from skin_model.serving.explain import METHODS, Explainer, colorize, overlay
from skin_model.serving.inference import Prediction
from skin_model.serving.lite import LitePredictor
from skin_model.serving.ood import OodGate, OodResult, load_gate
from skin_model.serving.verdict import Verdict

log = logging.getLogger(__name__)

#: Longest side of the images shown next to the heatmap (the model's centre square, upscaled).
EXPLAIN_DISPLAY_SIDE = 336
#: Longest side of the copy of the upload kept for display.
DISPLAY_SIDE = 1024


@dataclass(frozen=True)
class Analysis:
    """One decoded upload and the verdict on it (prediction, out-of-distribution check, flags)."""

    name: str
    digest: str
    image: Image.Image | None  # the upload for display (longest side <= DISPLAY_SIDE); None once dropped
    view: np.ndarray  # uint8 RGB: the centre square the model classified, at EXPLAIN_DISPLAY_SIDE
    feature_map: np.ndarray  # (H, W, K) float32: the last convolutional feature map of the identity view
    verdict: Verdict
    original_size: tuple[int, int] = (0, 0)  # (width, height) of the upload, upright

    @property
    def prediction(self) -> Prediction:
        return self.verdict.prediction

    @property
    def ood(self) -> OodResult | None:
        """The gate's result; None when no gate is fitted for the model."""
        return self.verdict.ood

    @property
    def tta(self) -> bool:
        """True when the prediction averages the 8 flipped/rotated views."""
        return self.verdict.tta

    @property
    def flagged_ood(self) -> bool:
        """True when the gate says this does not look like a dermatoscopic image."""
        return self.verdict.not_dermoscopic

    def without_image(self) -> "Analysis":
        """The same analysis without the display copy (what the Batch page keeps per file)."""
        return replace(self, image=None)


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


def display_copy(image: Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """``image`` itself when its longest side is at most ``side``, else a reduced copy."""
    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def centre_square_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centre square of a ``width`` x ``height`` image: what the model sees."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def outline_centre_square(image: Image.Image, colour: tuple[int, int, int] = (255, 215, 0)) -> Image.Image:
    """A copy of ``image`` with the centre square the model classifies outlined (dark edge, bright line)."""
    from PIL import ImageDraw

    shown = image.convert("RGB").copy()
    draw = ImageDraw.Draw(shown)
    line = max(2, min(image.size) // 120)
    left, top, right, bottom = centre_square_box(*image.size)
    draw.rectangle((left, top, right - 1, bottom - 1), outline=(0, 0, 0), width=line + 2)
    draw.rectangle((left + 1, top + 1, right - 2, bottom - 2), outline=colour, width=line)
    return shown


def thumbnail_data_uri(image: Image.Image, side: int = 64) -> str:
    """A small JPEG of ``image`` (longest side ``side`` px) as a ``data:`` URI, for tables."""
    import base64
    import io

    small = image.convert("RGB").copy()
    small.thumbnail((side, side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class ClassifierService:
    """The served model (LiteRT), its out-of-distribution gate when fitted, and its closed-form Grad-CAM;
    ``analyse`` and ``explain`` are safe to call from many threads."""

    def __init__(self, predictor: LitePredictor, ood_gate: OodGate | None = None,
                 ood_status: str = "no gate given") -> None:
        if predictor.head is None:
            raise ModelIntegrityError("The served model has no head weights for Grad-CAM: load it with "
                                      "LitePredictor.from_dir")
        self.predictor = predictor
        self.explainer = Explainer(predictor.head, predictor.input_size)
        self._ood_gate = ood_gate
        self.ood_status = "on" if ood_gate is not None else ood_status

    @classmethod
    def from_dir(cls, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> "ClassifierService":
        """Load and sha256-check the served model and head (raises ``ModelIntegrityError`` when missing,
        altered or of another head) and the ``ood.npz`` gate fitted for it, if any (a missing, damaged or stale
        gate leaves the check off, ``ood_status`` saying why)."""
        predictor = LitePredictor.from_dir(Path(weights_dir))
        metadata = predictor.metadata
        gate, status = load_gate(Path(weights_dir), metadata.model_sha256, metadata.ood_sha256,
                                 predictor.feature_dim)
        return cls(predictor, gate, status)

    @property
    def ood_enabled(self) -> bool:
        return self._ood_gate is not None

    def warm_up(self) -> None:
        """Run one prediction and heatmap on a grey image so the first upload does not pay for memory
        allocation."""
        grey = Image.new("RGB", (self.predictor.input_size,) * 2, (128, 128, 128))
        analysis = self.analyse_image(grey, name="warm-up")
        self.explain(analysis, analysis.prediction.top_code).overlay(0.4)

    @property
    def metadata(self) -> ModelMetadata:
        return self.predictor.metadata

    def analyse(self, data: bytes, name: str | None = None, tta: bool | None = None) -> Analysis:
        """Decode ``data`` in memory, check and predict. Raises ``InvalidImageError`` naming the problem."""
        decoded = read_image(data, name=name)
        return self.analyse_image(decoded.image, name=name or "image", digest=hashlib.sha256(data).hexdigest(),
                                  tta=tta, original_size=decoded.original_size)

    def analyse_image(self, image: Image.Image, name: str = "image", digest: str = "",
                      tta: bool | None = None, original_size: tuple[int, int] | None = None) -> Analysis:
        """Check and predict for an already decoded RGB image (``tta``: average the 8 dihedral views of
        the model input; default: the model's ``test_time_augmentation`` setting)."""
        tta = self.metadata.test_time_augmentation if tta is None else tta
        out = self.predictor.run(self.predictor.model_input([image]), tta, feature_maps=True)
        (verdict,) = self._verdicts(out.probabilities, out.features, tta)
        return Analysis(name=name, digest=digest, image=display_copy(image), view=centre_square(image),
                        feature_map=out.feature_maps[0], verdict=verdict,
                        original_size=original_size or image.size)

    def verdicts(self, model_input: np.ndarray, tta: bool | None = None) -> list[Verdict]:
        """The verdict on each image of a preprocessed batch, from one pass of the network (``tta``: average
        the 8 dihedral views; default: the model's ``test_time_augmentation`` setting)."""
        tta = self.metadata.test_time_augmentation if tta is None else tta
        probs, features = self.predictor.outputs(model_input, tta)
        return self._verdicts(probs, features, tta)

    def _verdicts(self, probs: np.ndarray, features: np.ndarray | None, tta: bool) -> list[Verdict]:
        checks = self._ood_gate.check(features) if self._ood_gate is not None else [None] * len(probs)
        return [Verdict(self.predictor.prediction_of(p), ood, self.ood_status, tta) for p, ood in zip(probs, checks)]

    def explain(self, analysis: Analysis, class_code: str, method: str = "gradcam") -> Explanation:
        """Grad-CAM (``"gradcam"``) or Grad-CAM++ (``"gradcam++"``) for ``class_code``, from the analysis'
        feature map (of the identity view, also with test-time augmentation)."""
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; choose from {list(METHODS)}")
        heatmap = self.explainer.heatmap(analysis.feature_map, class_index(class_code), method)
        return Explanation(method=method, class_code=class_code, heatmap=heatmap, view=analysis.view)
