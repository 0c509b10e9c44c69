"""Calibrated predictions for RGB images: the ``Prediction`` record, the preprocessing -> network ->
temperature (-> test-time augmentation) path every backend shares, and its Keras backend (``Predictor``, for
training and evaluation reports; serving uses ``lite.LitePredictor``). TensorFlow is imported only when a
``Predictor`` is built."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from skin_model.serving.calibration import apply_temperature
from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.data.imaging import scale_pixels, to_model_array
from skin_model.labels import CLASSES, CODES, MALIGNANT_CODES, NUM_CLASSES
from skin_model.bundle import ModelMetadata
from skin_model.model import load_bundle
from skin_model.serving.tta import DIHEDRAL_VIEWS, dihedral_arrays

log = logging.getLogger(__name__)


def format_probability(p: float) -> str:
    """A probability (or a threshold on one) as shown everywhere: a percentage with 1 decimal place."""
    return f"{p:.1%}"


@dataclass(frozen=True)
class Prediction:
    """Calibrated class probabilities for one image, in ``labels.CODES`` order, with the model's unsure and
    referral thresholds."""

    probabilities: tuple[float, ...]
    unsure_threshold: float
    referral_threshold: float | None = None

    @property
    def ranked(self) -> list[tuple[str, float]]:
        """(code, probability) from most to least likely."""
        return sorted(zip(CODES, self.probabilities), key=lambda cp: cp[1], reverse=True)

    @property
    def top_code(self) -> str:
        return self.ranked[0][0]

    @property
    def top_probability(self) -> float:
        return self.ranked[0][1]

    @property
    def top_name(self) -> str:
        return CLASSES[CODES.index(self.top_code)].name

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        return self.ranked[:k]

    @property
    def malignant_probability(self) -> float:
        """Sum of the probabilities of the malignant classes (``labels.MALIGNANT_CODES``)."""
        return float(sum(p for c, p in zip(CODES, self.probabilities) if c in MALIGNANT_CODES))

    @property
    def unsure(self) -> bool:
        """True when the top probability is below the threshold stored with the model."""
        return self.top_probability < self.unsure_threshold

    @property
    def refer(self) -> bool | None:
        """True when the malignant roll-up reaches the referral threshold; None when the model has none."""
        if self.referral_threshold is None:
            return None
        return self.malignant_probability >= self.referral_threshold

    @property
    def referral_sentence(self) -> str | None:
        """The referral cue in words, e.g. "malignant probability 45.0% is above the referral threshold
        20.0%: refer"; None when the model has no referral threshold."""
        if self.referral_threshold is None:
            return None
        above = "is above" if self.malignant_probability > self.referral_threshold else "reaches"
        tail = f"{above} the referral threshold {format_probability(self.referral_threshold)}: refer" \
            if self.refer else f"is below the referral threshold {format_probability(self.referral_threshold)}"
        return f"malignant probability {format_probability(self.malignant_probability)} {tail}"

    def as_dict(self) -> dict[str, object]:
        return {"top_class": self.top_code, "top_probability": self.top_probability,
                "malignant_probability": self.malignant_probability, "unsure": self.unsure,
                "referral_threshold": self.referral_threshold, "refer": self.refer,
                "probabilities": dict(zip(CODES, self.probabilities))}


@dataclass(frozen=True)
class NetworkOutputs:
    """What one pass of the network gives for a batch: its softmax, and, when the backend computes them in
    the same pass, the OOD gate's features and the last convolutional feature maps (Grad-CAM's input)."""

    probabilities: np.ndarray  # (N, 7): uncalibrated softmax from the network, calibrated from ``run``
    features: np.ndarray | None = None  # (N, C)
    feature_maps: np.ndarray | None = None  # (N, H, W, K) float32


class CalibratedPredictor:
    """The one prediction path every backend shares: preprocessing, the network, temperature scaling and,
    as a parameter, test-time augmentation (the 8 dihedral views of the model input, ``skin_model.serving.tta``).

    Subclasses supply ``network_outputs``: the network's softmax for a preprocessed batch and, when the
    backend computes them in the same pass, the out-of-distribution gate's features and the feature maps.
    """

    #: Images per call of the network (x 8 views with TTA), to bound memory.
    batch_images = 32

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        self.input_size = metadata.input_size

    def network_outputs(self, model_input: np.ndarray) -> NetworkOutputs:
        """One pass of the network over a preprocessed batch (uncalibrated softmax)."""
        raise NotImplementedError

    def model_input(self, images: list[Image.Image]) -> np.ndarray:
        """The float32 batch the model sees for these images (the shared preprocessing path)."""
        return scale_pixels(np.stack([to_model_array(im, self.input_size) for im in images]).astype(np.float32))

    def run(self, model_input: np.ndarray, tta: bool = False, feature_maps: bool = False) -> NetworkOutputs:
        """Calibrated (N, 7) probabilities for a preprocessed batch with the OOD features (or None) and, when
        ``feature_maps`` is set, the feature maps (or None) of the images as given. With ``tta`` the
        probabilities are the mean over the 8 views, computed in the same pass; features and maps are those
        of the identity view."""
        probabilities, features, maps = [], [], []
        for start in range(0, len(model_input), self.batch_images):
            chunk = model_input[start:start + self.batch_images]
            views = np.concatenate(dihedral_arrays(chunk)) if tta else chunk  # view-major, identity first
            out = self.network_outputs(views)
            calibrated = apply_temperature(np.asarray(out.probabilities, np.float64), self.metadata.temperature)
            if tta:
                calibrated = calibrated.reshape(len(DIHEDRAL_VIEWS), len(chunk), -1).mean(axis=0)
            probabilities.append(calibrated)
            features.append(None if out.features is None else np.asarray(out.features[:len(chunk)], np.float64))
            if feature_maps:
                maps.append(None if out.feature_maps is None
                            else np.array(out.feature_maps[:len(chunk)], np.float32))  # a copy: the views go
        if not probabilities:
            return NetworkOutputs(np.zeros((0, NUM_CLASSES)))
        return NetworkOutputs(np.concatenate(probabilities),
                              None if features[0] is None else np.concatenate(features),
                              None if not maps or maps[0] is None else np.concatenate(maps))

    def outputs(self, model_input: np.ndarray, tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(calibrated (N, 7) probabilities, OOD features of the images as given or None): ``run`` without
        the feature maps."""
        out = self.run(model_input, tta)
        return out.probabilities, out.features

    def probabilities_of(self, model_input: np.ndarray, tta: bool = False) -> np.ndarray:
        """Calibrated (N, 7) probabilities for a batch already through ``model_input``."""
        return self.outputs(model_input, tta)[0]

    def predict_probabilities(self, images: list[Image.Image], tta: bool = False) -> np.ndarray:
        """Calibrated (N, 7) probabilities for decoded RGB images."""
        parts = [self.probabilities_of(self.model_input(list(images[start:start + self.batch_images])), tta)
                 for start in range(0, len(images), self.batch_images)]
        return np.concatenate(parts) if parts else np.zeros((0, NUM_CLASSES))

    def prediction_of(self, probabilities: np.ndarray) -> Prediction:
        """One image's calibrated probabilities as a Prediction with this model's thresholds."""
        return Prediction(tuple(float(p) for p in probabilities), self.metadata.unsure_threshold,
                          self.metadata.referral_threshold)

    def predict(self, image: Image.Image, tta: bool = False) -> Prediction:
        return self.prediction_of(self.predict_probabilities([image], tta)[0])


class Predictor(CalibratedPredictor):
    """The Keras model of a bundle (training reports, building the LiteRT copy, the reference Grad-CAM);
    ``predict`` is thread-safe and runs a compiled tf.function. Serving uses ``lite.LitePredictor`` instead."""

    def __init__(self, model, metadata: ModelMetadata) -> None:
        import tensorflow as tf

        super().__init__(metadata)
        self.model = model
        spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec],
                                    autograph=False)  # no Python control flow: no AutoGraph temp files

    @classmethod
    def from_dir(cls, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> "Predictor":
        model, metadata = load_bundle(Path(weights_dir))
        log.info("Loaded model %s from %s", metadata.version, weights_dir)
        return cls(model, metadata)

    def network_outputs(self, model_input: np.ndarray) -> NetworkOutputs:
        return NetworkOutputs(self._forward(model_input).numpy())
