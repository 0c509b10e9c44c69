"""Out-of-distribution gate: is this a dermatoscopic lesion photo like the ones the model was trained on?

Features: the backbone's mid-level activations (``block_8_expand_relu``, 14x14x384 at 224 px) averaged
over space, L2-normalised and projected with PCA (scikit-learn) to ``DEFAULT_COMPONENTS`` dimensions. An
image's score is its Mahalanobis distance to the training images inside that subspace (Ledoit-Wolf shrunk
covariance) plus its distance from the subspace (PCA reconstruction error), each divided by its median on
the training images (L2 normalisation as in "Mahalanobis++", Mueller & Hein 2025).
Why that layer, measured on the shipped 224-px model of 2026-11-26 (gate fitted on 2,500 training images,
checked on all 1,431 test images and the 44 images of ``ood_images``): the pooled classifier features
(``head_pool``, 1280-d) passed 99.4% of test images but rejected only 84% (128 components) or 61% (32) of
the non-dermoscopic set, missing naked-eye close-ups, retina and histology; ``block_8_expand_relu`` with
32 components passed 99.4% and rejected all 44. Fine-tuning shapes the top features to separate the seven
diagnoses; mid-level texture statistics tell a dermatoscopic photo from other images better.
The threshold is a high percentile of training scores, raised if needed so that a target share of
validation images pass. The gate is stored beside the model as ``ood.npz`` with the sha256 of the model
it was fitted for, and its own sha256 is recorded in ``metadata.json`` (``ood_sha256``) when it is
fitted. ``load_gate`` gives one state for anything wrong with the file (missing, sha256 not recorded or
not matching, unreadable, arrays of the wrong shape or not finite, fitted for another model): the gate
is off, with the reason, which the app shows as a warning. ``measure_bundle_gate`` writes the measured
rates to the bundle's ``ood_figures.json`` (``bundle.OodFigures``). Command line: ``skin_model.cli.ood``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from skin_model.bundle import (OOD_FILE, OodCategory, OodFigures, read_split, sha256_of, update_metadata,
                               write_ood_figures)
from skin_model.model import OOD_FEATURE_LAYER as FEATURE_LAYER

log = logging.getLogger(__name__)

FIT_COMMAND = "python -m skin_model.cli.ood fit"
MEASURE_COMMAND = "python -m skin_model.cli.ood measure"
DEFAULT_COMPONENTS = 32
DEFAULT_PERCENTILE = 99.5
DEFAULT_TARGET_PASS = 0.98
#: Goals of the issue: share of dermoscopic test images passed, share of non-dermoscopic images rejected.
GOALS = {"dermoscopic_pass_rate": 0.98, "non_dermoscopic_reject_rate": 0.95}
BATCH = 64


class OodGateError(RuntimeError):
    """The gate cannot be fitted or measured (no split file, too few images, ...); the message says why."""


# ---------------------------------------------------------------------------------------------- features
class FeatureExtractor:
    """The model's ``FEATURE_LAYER`` activations, averaged over space, as a compiled, thread-safe function."""

    def __init__(self, model) -> None:
        import keras
        import tensorflow as tf

        output = model.get_layer(FEATURE_LAYER).output
        if len(output.shape) == 4:  # (N, H, W, C) -> (N, C)
            output = keras.layers.GlobalAveragePooling2D(name="ood_pool")(output)
        features = keras.Model(model.inputs, output)
        size = tuple(model.inputs[0].shape[1:])
        spec = tf.TensorSpec((None, *size), tf.float32)
        self._forward = tf.function(lambda x: features(x, training=False), input_signature=[spec],
                                    autograph=False)  # no Python control flow: no AutoGraph temp files

    def __call__(self, model_input: np.ndarray) -> np.ndarray:
        """(N, C) float64 features for a preprocessed float32 batch (run in chunks of ``BATCH``)."""
        chunks = [self._forward(model_input[i:i + BATCH].astype(np.float32)).numpy()
                  for i in range(0, len(model_input), BATCH)]
        return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, 0))


# ---------------------------------------------------------------------------------------------- gate
@dataclass(frozen=True)
class OodResult:
    """The gate's verdict for one image: its distance score and the threshold it was compared with."""

    distance: float
    threshold: float

    @property
    def flagged(self) -> bool:
        """True when the image does not look like the training images (distance above the threshold)."""
        return self.distance > self.threshold


@dataclass(frozen=True)
class OodGate:
    """PCA subspace + Mahalanobis + residual scores and a threshold, for the model with ``model_sha256``."""

    pca_mean: np.ndarray  # (D,) mean of the L2-normalised training features
    pca_components: np.ndarray  # (K, D)
    location: np.ndarray  # (K,) mean of the projected training features
    precision: np.ndarray  # (K, K) inverse of the Ledoit-Wolf covariance
    mahalanobis_scale: float  # median Mahalanobis distance of the training images
    residual_scale: float  # median reconstruction error of the training images
    threshold: float
    model_sha256: str
    info: dict[str, Any] = field(default_factory=dict)

    def parts(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Mahalanobis distance inside the PCA subspace, distance from the subspace) per feature row."""
        features = np.asarray(features, np.float64)
        unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        centred = unit - self.pca_mean
        projected = centred @ self.pca_components.T
        offset = projected - self.location
        mahalanobis = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", offset, self.precision, offset), 0.0))
        residual = np.linalg.norm(centred - projected @ self.pca_components, axis=1)
        return mahalanobis, residual

    def distances(self, features: np.ndarray) -> np.ndarray:
        """The gate's score per feature row: both parts, each in units of its training median."""
        mahalanobis, residual = self.parts(features)
        return mahalanobis / self.mahalanobis_scale + residual / self.residual_scale

    def check(self, features: np.ndarray) -> list[OodResult]:
        return [OodResult(float(d), self.threshold) for d in self.distances(features)]

    def validate(self, feature_dim: int | None = None) -> None:
        """Raise OodGateError naming the problem unless the arrays fit together (K components of
        D features, D = ``feature_dim`` when given) and every number is finite (scales positive)."""
        k, d = self.pca_components.shape if self.pca_components.ndim == 2 else (-1, -1)
        expected = {"pca_mean": (d,), "pca_components": (k, d), "location": (k,), "precision": (k, k)}
        for name, shape in expected.items():
            array = getattr(self, name)
            if k < 1 or array.shape != shape:
                raise OodGateError(f"{name} has shape {array.shape}, expected {shape}")
            if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
                raise OodGateError(f"{name} holds values that are not finite numbers")
        if feature_dim is not None and d != feature_dim:
            raise OodGateError(f"it expects {d} features, the model gives {feature_dim}")
        for name in ("mahalanobis_scale", "residual_scale", "threshold"):
            if not np.isfinite(getattr(self, name)):
                raise OodGateError(f"its {name} is not a finite number")
        if self.mahalanobis_scale <= 0 or self.residual_scale <= 0:
            raise OodGateError("its distance scales are not positive")

    def save(self, path: Path) -> None:
        """Write an ``.npz`` of plain arrays (no pickles); ``info`` travels as a JSON string."""
        np.savez(path, pca_mean=self.pca_mean, pca_components=self.pca_components, location=self.location,
                 precision=self.precision, mahalanobis_scale=np.float64(self.mahalanobis_scale),
                 residual_scale=np.float64(self.residual_scale), threshold=np.float64(self.threshold),
                 model_sha256=np.str_(self.model_sha256), info=np.str_(json.dumps(self.info)))
        log.info("Saved the OOD gate to %s (threshold %.3f)", path, self.threshold)

    @classmethod
    def load(cls, path: Path) -> "OodGate":
        with np.load(path, allow_pickle=False) as data:
            return cls(pca_mean=data["pca_mean"], pca_components=data["pca_components"],
                       location=data["location"], precision=data["precision"],
                       mahalanobis_scale=float(data["mahalanobis_scale"]),
                       residual_scale=float(data["residual_scale"]),
                       threshold=float(data["threshold"]), model_sha256=str(data["model_sha256"]),
                       info=json.loads(str(data["info"])))


def fit_gate(train_features: np.ndarray, val_features: np.ndarray, model_sha256: str, *,
             components: int = DEFAULT_COMPONENTS, percentile: float = DEFAULT_PERCENTILE,
             target_pass: float = DEFAULT_TARGET_PASS) -> OodGate:
    """Fit PCA + Ledoit-Wolf on L2-normalised training features; threshold = the ``percentile`` of training
    scores, raised to the ``target_pass`` quantile of validation scores when that is higher."""
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    n_train = len(train_features)
    if n_train < 10 or len(val_features) < 1:
        raise OodGateError(f"Too few images to fit the OOD gate ({n_train} train, {len(val_features)} val)")
    k = min(components, n_train - 1, train_features.shape[1])
    unit = train_features / np.maximum(np.linalg.norm(train_features, axis=1, keepdims=True), 1e-12)
    pca = PCA(n_components=k, random_state=0).fit(unit)
    covariance = LedoitWolf().fit(pca.transform(unit))
    unscaled = OodGate(pca_mean=pca.mean_, pca_components=pca.components_, location=covariance.location_,
                       precision=covariance.precision_, mahalanobis_scale=1.0, residual_scale=1.0,
                       threshold=0.0, model_sha256=model_sha256)
    mahalanobis, residual = unscaled.parts(train_features)
    gate = replace(unscaled, mahalanobis_scale=float(np.median(mahalanobis)),
                   residual_scale=float(np.median(residual)))
    train_d, val_d = gate.distances(train_features), gate.distances(val_features)
    from_train = float(np.percentile(train_d, percentile))
    from_val = float(np.quantile(val_d, target_pass, method="higher"))
    threshold = max(from_train, from_val)
    info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "feature_layer": FEATURE_LAYER,
            "components": int(k), "explained_variance": float(pca.explained_variance_ratio_.sum()),
            "shrinkage": float(covariance.shrinkage_), "percentile": percentile, "target_pass": target_pass,
            "threshold_from_train": from_train, "threshold_from_val": from_val,
            "n_train": int(n_train), "n_val": int(len(val_features)),
            "train_pass_rate": float((train_d <= threshold).mean()),
            "val_pass_rate": float((val_d <= threshold).mean())}
    log.info("OOD gate: %d components, threshold %.3f (train p%.1f %.3f, val q%.3f %.3f), val pass %.1f%%",
             k, threshold, percentile, from_train, target_pass, from_val, 100 * info["val_pass_rate"])
    return replace(gate, threshold=threshold, info=info)


def load_gate(weights_dir: Path, model_sha256: str, expected_sha256: str,
              feature_dim: int | None = None) -> tuple[OodGate | None, str]:
    """The gate stored with the model, checked against the sha256 recorded in the metadata
    (``expected_sha256``) and validated; or None and the reason it is off."""
    path = Path(weights_dir) / OOD_FILE
    if not path.is_file():
        log.info("No %s in %s: the out-of-distribution gate is off", OOD_FILE, weights_dir)
        return None, f"no {OOD_FILE} has been fitted for this model"
    refit = f"refit it with `{FIT_COMMAND}`"
    if not expected_sha256:
        reason = f"metadata.json records no sha256 for {OOD_FILE} ({refit})"
    elif sha256_of(path) != expected_sha256:
        reason = (f"{OOD_FILE} does not match the sha256 recorded in metadata.json: it is damaged or was "
                  f"replaced ({refit})")
    else:
        try:
            gate = OodGate.load(path)
            gate.validate(feature_dim)
        except Exception as exc:  # BadZipFile, missing arrays, bad shapes, NaN, ...
            reason = f"{OOD_FILE} is unreadable or invalid: {exc} ({refit})"
        else:
            if gate.model_sha256 == model_sha256:
                return gate, "on"
            reason = f"{OOD_FILE} was fitted for another model ({refit})"
    log.warning("Out-of-distribution gate %s is off: %s", path, reason)
    return None, reason


def record_gate_sha256(weights_dir: Path) -> str:
    """Write the sha256 of ``ood.npz`` into ``metadata.json`` (``ood_sha256``), keeping every other field."""
    digest = sha256_of(Path(weights_dir) / OOD_FILE)
    update_metadata(weights_dir, ood_sha256=digest)
    return digest


# ---------------------------------------------------------------------------------------------- data
def split_paths(weights_dir: Path, data_dir: Path, split: str, limit: int | None = None,
                seed: int = 0) -> list[Path]:
    """Image files of one split of ``weights_dir/split.csv`` (a random ``limit`` of them if given)."""
    from skin_model.data.dataset import find_image_files

    ids = read_split(weights_dir, split, columns=("image_id", "split"))["image_id"].tolist()
    if limit is not None and limit < len(ids):
        ids = sorted(np.random.default_rng(seed).choice(ids, size=limit, replace=False).tolist())
    files = find_image_files(Path(data_dir))
    missing = [i for i in ids if i not in files]
    if missing:
        raise OodGateError(f"{len(missing)} {split} image(s) of the split have no file under {data_dir}: "
                           f"{', '.join(missing[:5])}")
    return [files[i] for i in ids]


def features_of_files(extractor: FeatureExtractor, paths: list[Path], size: int, chunk: int = 512) -> np.ndarray:
    """Features of image files through the serving preprocessing, loaded ``chunk`` files at a time."""
    from skin_model.data.dataset import load_arrays
    from skin_model.data.imaging import scale_pixels

    parts = [extractor(scale_pixels(load_arrays(paths[i:i + chunk], size, progress=False).astype(np.float32)))
             for i in range(0, len(paths), chunk)]
    return np.concatenate(parts)


def features_of_images(extractor: FeatureExtractor, images: list[Image.Image], size: int) -> np.ndarray:
    """Features of decoded RGB images through the serving preprocessing."""
    from skin_model.data.imaging import to_model_input

    return extractor(to_model_input(list(images), size))


# ---------------------------------------------------------------------------------------------- bundle
def fit_bundle_gate(weights_dir: Path, data_dir: Path, limit: int | None, components: int, percentile: float,
                target_pass: float) -> OodGate:
    """Fit the gate on the model's training split and save it as ``weights_dir/ood.npz``."""
    from skin_model.serving.inference import Predictor

    predictor = Predictor.from_dir(weights_dir)
    extractor = FeatureExtractor(predictor.model)
    size = predictor.input_size
    train = features_of_files(extractor, split_paths(weights_dir, data_dir, "train", limit), size)
    val_limit = None if limit is None else max(20, limit // 4)
    val = features_of_files(extractor, split_paths(weights_dir, data_dir, "val", val_limit), size)
    gate = fit_gate(train, val, predictor.metadata.model_sha256, components=components,
                    percentile=percentile, target_pass=target_pass)
    gate.save(Path(weights_dir) / OOD_FILE)
    record_gate_sha256(Path(weights_dir))
    return gate


def measure_bundle_gate(weights_dir: Path, data_dir: Path, limit: int | None) -> OodFigures:
    """Share of dermoscopic test images passed and of non-dermoscopic images rejected, written to the
    bundle's ``ood_figures.json``."""
    from skin_model.serving.inference import Predictor
    from skin_model.data.ood_images import non_dermoscopic_images

    predictor = Predictor.from_dir(weights_dir)
    gate, status = load_gate(weights_dir, predictor.metadata.model_sha256, predictor.metadata.ood_sha256)
    if gate is None:
        raise OodGateError(f"The OOD gate is off for {weights_dir}: {status}. Run `{FIT_COMMAND}`")
    extractor = FeatureExtractor(predictor.model)
    size = predictor.input_size
    others = non_dermoscopic_images()
    other_d = gate.distances(features_of_images(extractor, [o.image for o in others], size))
    test_paths = split_paths(weights_dir, data_dir, "test", limit)
    test_passed = gate.distances(features_of_files(extractor, test_paths, size)) <= gate.threshold
    rejected = other_d > gate.threshold
    by_category: dict[str, list[int]] = {}
    for item, was_rejected in zip(others, rejected):
        counts = by_category.setdefault(item.category, [0, 0])
        counts[0] += 1
        counts[1] += int(was_rejected)
    figures = OodFigures(
        measured=datetime.now(timezone.utc).isoformat(timespec="seconds"), model_sha256=gate.model_sha256,
        threshold=gate.threshold, gate=gate.info,
        dermoscopic_pass_rate=float(test_passed.mean()), n_dermoscopic=int(len(test_paths)),
        dermoscopic_split="test" + ("" if limit is None else f" (random {len(test_paths)})"),
        non_dermoscopic_reject_rate=float(rejected.mean()), n_non_dermoscopic=len(others),
        categories=tuple(OodCategory(name, n, r) for name, (n, r) in by_category.items()),
        passed_names=tuple(o.name for o, r in zip(others, rejected) if not r),
        distances={o.name: round(float(d), 3) for o, d in zip(others, other_d)},
        pass_goal=GOALS["dermoscopic_pass_rate"], reject_goal=GOALS["non_dermoscopic_reject_rate"])
    path = write_ood_figures(weights_dir, figures)
    log.info("Wrote the OOD figures to %s", path)
    return figures
