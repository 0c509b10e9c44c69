"""The served copy of the model: ``model.tflite``, a LiteRT flat buffer built from ``model.keras``, and
``head.npz``, the dense head that closed-form Grad-CAM reads.

Why: the LiteRT interpreter (``ai-edge-litert``) imports in ~0.2 s and runs the float32 network in a few
milliseconds per image; importing TensorFlow alone takes ~4 s on 2 cores and ~0.7 GB of memory. Serving (the
app, ``predict``, ``evaluate``) therefore never imports TensorFlow, Keras or tf-keras-vis.

The exported network has three outputs, computed in one pass: the classifier's softmax, the OOD gate's
features (``model.OOD_FEATURE_LAYER`` averaged over space) and the last convolutional feature map
(``model.LAST_CONV_LAYER``), from which ``explain`` computes Grad-CAM and Grad-CAM++ with the head's weights.
Both files are derived, not shipped: building them is an explicit step (``build_lite``: train.py does it after
saving, ``make app`` before serving, or by hand ``python -m skin_model.cli.lite [--weights DIR]``; it needs
TensorFlow), recorded in ``model.tflite.json`` with the record's format, the sha256 of the model they were
built from and their own. Serving only loads: every load checks ``model.keras`` against the sha256 in
``metadata.json`` and ``model.tflite`` and ``head.npz`` against their record, and a copy that is missing,
altered, built from another model or of an older format (no feature-map output) is refused
(``ModelIntegrityError`` naming the reason and the command that rebuilds it).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from skin_model.bundle import (HEAD_FILE, LITE_FILE, LITE_INFO_FILE, DenseHead, ModelIntegrityError, ModelMetadata,
                               checked_file, read_head, read_metadata, sha256_of, write_head, write_json)
from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.serving.inference import CalibratedPredictor, NetworkOutputs, Predictor
from skin_model.labels import NUM_CLASSES
from skin_model.model import LAST_CONV_LAYER, OOD_FEATURE_LAYER, dense_head, load_bundle

log = logging.getLogger(__name__)

#: Largest probability difference from the Keras model accepted when building (measured: ~3e-6), and between
#: the LiteRT softmax and the one recomputed from its feature map with ``head.npz``.
MAX_DIFFERENCE = 1e-4
SIGNATURE = "serving_default"
BUILD_COMMAND = "python -m skin_model.cli.lite"
#: Output names of the exported signature, in the order of ``serving_network``'s outputs.
PROBABILITIES, FEATURES, FEATURE_MAP = "output_0", "output_1", "output_2"
#: The record's format: 2 = three outputs (the feature map for Grad-CAM) and ``head.npz``. Older copies are stale.
LITE_FORMAT = 2


def serving_network(model):
    """The classifier with two more outputs: the OOD gate's features (``model.OOD_FEATURE_LAYER``, pooled) and
    the last convolutional feature map (``model.LAST_CONV_LAYER``) for Grad-CAM."""
    import keras

    features = keras.layers.GlobalAveragePooling2D(name="ood_pool")(model.get_layer(OOD_FEATURE_LAYER).output)
    feature_map = model.get_layer(LAST_CONV_LAYER).output
    return keras.Model(model.inputs, [model.outputs[0], features, feature_map], name=f"{model.name}_serving")


def export_lite(model, path: Path) -> Path:
    """Convert ``model`` (+ its OOD features and feature-map outputs) to a float32 LiteRT file at ``path``."""
    serving_network(model).export(str(path), format="litert", verbose=False)
    log.info("Exported %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


class LitePredictor(CalibratedPredictor):
    """``model.tflite`` in a LiteRT interpreter: calibrated probabilities, OOD features and the last
    convolutional feature map in one pass, and ``head``, the dense head Grad-CAM needs (``from_dir`` always
    loads it; None for an export that only predicts, such as train.py's checkpoint copy).

    One interpreter is shared by every session; its calls are serialised with a lock (an interpreter is not
    thread-safe, and one call takes a few milliseconds).
    """

    def __init__(self, path: Path, metadata: ModelMetadata, head: DenseHead | None = None,
                 num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(metadata)
        threads = num_threads or min(4, os.cpu_count() or 1)
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._runner = self._interpreter.get_signature_runner(SIGNATURE)
        self._lock = threading.Lock()
        shapes = {name: tuple(d["shape_signature"]) for name, d in self._runner.get_output_details().items()}
        if set(shapes) != {PROBABILITIES, FEATURES, FEATURE_MAP} or shapes[PROBABILITIES][-1] != NUM_CLASSES \
                or len(shapes[FEATURE_MAP]) != 4:
            raise ModelIntegrityError(f"{path.name} does not have the expected outputs (found {shapes}): rebuild it "
                                      f"with `{BUILD_COMMAND} --weights {path.parent}`")
        if head is not None and (shapes[FEATURE_MAP][-1] != head.channels or head.classes != NUM_CLASSES):
            raise ModelIntegrityError(f"{HEAD_FILE} ({head.channels} x {head.classes}) does not fit {path.name}'s "
                                      f"feature map {shapes[FEATURE_MAP]}")
        (self._input_name,) = self._runner.get_input_details()
        self.feature_dim = int(shapes[FEATURES][-1])
        self.head = head

    @classmethod
    def from_dir(cls, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> "LitePredictor":
        """The bundle's LiteRT copy and head, after checking ``model.keras``, ``model.tflite`` and ``head.npz``
        (raises ``ModelIntegrityError`` naming the problem; nothing is rebuilt here)."""
        weights_dir = Path(weights_dir)
        metadata = read_metadata(weights_dir)
        checked_file(weights_dir, metadata.model_file, metadata.model_sha256)
        problem = lite_problem(weights_dir, metadata)
        if problem is not None:
            raise ModelIntegrityError(f"{problem}: build the served copy with `{BUILD_COMMAND} --weights "
                                      f"{weights_dir}` (`make app` does it for weights/)")
        head = read_head(weights_dir, read_record(weights_dir)["head_sha256"])
        log.info("Loaded model %s (LiteRT) from %s", metadata.version, weights_dir)
        return cls(weights_dir / LITE_FILE, metadata, head)

    def network_outputs(self, model_input: np.ndarray) -> NetworkOutputs:
        with self._lock:
            out = self._runner(**{self._input_name: np.ascontiguousarray(model_input, np.float32)})
        return NetworkOutputs(out[PROBABILITIES], out[FEATURES], out[FEATURE_MAP])


def read_record(weights_dir: Path) -> dict:
    """``model.tflite.json`` as a dict (``OSError`` / ``ValueError`` when missing or not JSON)."""
    info = json.loads((Path(weights_dir) / LITE_INFO_FILE).read_text())
    if not isinstance(info, dict):
        raise ValueError(f"{LITE_INFO_FILE} is not a JSON object")
    return info


def lite_problem(weights_dir: Path, metadata: ModelMetadata) -> str | None:
    """Why ``model.tflite`` and ``head.npz`` cannot be served as they are (missing, no record, an older format
    without the feature-map output, altered, built from another model.keras), or None when both match their
    record and the bundle's model."""
    path = weights_dir / LITE_FILE
    if not path.is_file():
        return f"{LITE_FILE} is missing"
    try:
        info = read_record(weights_dir)
        recorded, source = str(info["sha256"]), str(info["source_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{LITE_INFO_FILE}, the record of its sha256, is missing or unreadable ({type(exc).__name__})"
    if info.get("format") != LITE_FORMAT:
        return (f"{LITE_FILE} is of an older format ({info.get('format', 1)}, serving needs {LITE_FORMAT}): it has "
                f"no feature-map output for Grad-CAM")
    actual = sha256_of(path)
    if actual != recorded:
        return f"{LITE_FILE} has sha256 {actual[:12]}..., its record says {recorded[:12]}...: it was altered or damaged"
    if source != metadata.model_sha256:
        return f"{LITE_FILE} was built from another {metadata.model_file} (sha256 {source[:12]}...)"
    head_path = weights_dir / HEAD_FILE
    if not head_path.is_file():
        return f"{HEAD_FILE}, the head's weights for Grad-CAM, is missing"
    head_sha = sha256_of(head_path)
    if head_sha != str(info.get("head_sha256")):
        return (f"{HEAD_FILE} has sha256 {head_sha[:12]}..., its record says {str(info.get('head_sha256'))[:12]}...: "
                f"it was altered or damaged")
    return None


def is_current(weights_dir: Path, metadata: ModelMetadata) -> bool:
    """True when ``model.tflite`` exists, matches its record and was built from the bundle's model.keras."""
    return lite_problem(weights_dir, metadata) is None


def build_lite(weights_dir: Path, check_images: int = 8, seed: int = 0) -> Path:
    """Export ``model.tflite`` and ``head.npz`` from the bundle's sha256-checked Keras model, check on
    ``check_images`` noise images that the LiteRT softmax equals the Keras one and the one recomputed from its
    feature map with the head, and record both files in ``model.tflite.json``.

    ``UnsupportedHeadError`` (nothing written) when the model's head is not pooling + dropout + dense."""
    loaded, metadata = load_bundle(weights_dir)
    head = dense_head(loaded)
    path = export_lite(loaded, weights_dir / LITE_FILE)
    size = metadata.input_size
    batch = np.random.default_rng(seed).uniform(-1, 1, (check_images, size, size, 3)).astype(np.float32)
    raw = LitePredictor(path, metadata, head).network_outputs(batch)
    differences = {"keras": float(np.abs(raw.probabilities - Predictor(loaded, metadata).network_outputs(batch)
                                         .probabilities).max()),
                   "head": float(np.abs(raw.probabilities - softmax(head.logits(raw.feature_maps))).max())}
    if max(differences.values()) > MAX_DIFFERENCE:
        path.unlink()
        raise ModelIntegrityError(f"The LiteRT copy's probabilities differ from {metadata.model_file} by "
                                  f"{differences['keras']:.2e} and from its feature map and head by "
                                  f"{differences['head']:.2e}")
    head_path = write_head(weights_dir / HEAD_FILE, head)
    write_json(weights_dir / LITE_INFO_FILE,
               {"format": LITE_FORMAT, "source_file": metadata.model_file, "source_sha256": metadata.model_sha256,
                "sha256": sha256_of(path), "head_file": HEAD_FILE, "head_sha256": sha256_of(head_path),
                "feature_layer": head.feature_layer, "max_probability_difference": differences["keras"],
                "max_head_probability_difference": differences["head"]})
    log.info("Built %s and %s from %s (largest probability difference %.1e; from the head %.1e)", path.name,
             HEAD_FILE, metadata.model_file, differences["keras"], differences["head"])
    return path


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (float64)."""
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def ensure_lite(weights_dir: Path, metadata: ModelMetadata) -> Path:
    """``model.tflite`` (and ``head.npz``) of the bundle, after checking ``model.keras`` against the metadata's
    sha256 (``ModelIntegrityError`` if altered); (re)built, with a logged reason, when missing, altered, stale
    or of an older format (imports TensorFlow): the explicit build step of train.py, ``make app`` and the lite
    CLI."""
    checked_file(weights_dir, metadata.model_file, metadata.model_sha256)
    problem = lite_problem(weights_dir, metadata)
    if problem is not None:
        log.warning("Rebuilding %s from %s because %s (this imports TensorFlow once)",
                    LITE_FILE, metadata.model_file, problem)
        try:
            build_lite(weights_dir)
        except OSError as exc:
            raise ModelIntegrityError(f"Cannot write {LITE_FILE} in {weights_dir} ({exc}); build it where the "
                                      f"folder is writable: `{BUILD_COMMAND} --weights DIR`") from exc
    return weights_dir / LITE_FILE
