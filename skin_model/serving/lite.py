"""The served copy of the model: ``model.tflite``, a LiteRT flat buffer built from ``model.keras``.

Why: importing TensorFlow takes ~4 s on this 2-core machine and the first compiled call another second,
so a Keras-served app cannot show its first result within 6 s of starting. The LiteRT interpreter
(``ai-edge-litert``) imports in ~0.2 s and runs the same float32 network in ~3-6 ms per image. The app
predicts with it at once and loads TensorFlow and the Keras model only when Grad-CAM is first requested
(``service``).

The exported network has two outputs, computed in one pass: the classifier's softmax and the OOD gate's
features (``model.OOD_FEATURE_LAYER`` averaged over space). The file is derived, not shipped: building it is
an explicit step (``build_lite``: train.py does it after saving, ``make app`` before serving, or by hand
``python -m skin_model.cli.lite [--weights DIR]``), recorded in ``model.tflite.json`` with the sha256 of the
model it was built from and its own. Serving only loads: every load (the app, ``predict``, ``evaluate``)
checks ``model.keras`` against the sha256 in ``metadata.json`` and ``model.tflite`` against its record, and a
copy that is missing, altered or built from another model is refused (``ModelIntegrityError`` naming the
reason and the command that rebuilds it).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from skin_model.bundle import (LITE_FILE, LITE_INFO_FILE, ModelIntegrityError, ModelMetadata, checked_file,
                               read_metadata, sha256_of, write_json)
from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.serving.inference import CalibratedPredictor, Predictor
from skin_model.labels import NUM_CLASSES
from skin_model.model import OOD_FEATURE_LAYER, load_bundle

log = logging.getLogger(__name__)

#: Largest probability difference from the Keras model accepted when building (measured: ~3e-6).
MAX_DIFFERENCE = 1e-4
SIGNATURE = "serving_default"
BUILD_COMMAND = "python -m skin_model.cli.lite"
#: Output names of the exported signature, in the order of ``serving_network``'s outputs.
PROBABILITIES, FEATURES = "output_0", "output_1"


def serving_network(model):
    """The classifier with a second output: the OOD gate's features (``model.OOD_FEATURE_LAYER``, pooled)."""
    import keras

    features = keras.layers.GlobalAveragePooling2D(name="ood_pool")(model.get_layer(OOD_FEATURE_LAYER).output)
    return keras.Model(model.inputs, [model.outputs[0], features], name=f"{model.name}_serving")


def export_lite(model, path: Path) -> Path:
    """Convert ``model`` (+ its OOD features output) to a float32 LiteRT file at ``path``."""
    serving_network(model).export(str(path), format="litert", verbose=False)
    log.info("Exported %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


class LitePredictor(CalibratedPredictor):
    """``model.tflite`` in a LiteRT interpreter: calibrated probabilities and OOD features in one pass.

    One interpreter is shared by every session; its calls are serialised with a lock (an interpreter is not
    thread-safe, and one call takes a few milliseconds).
    """

    def __init__(self, path: Path, metadata: ModelMetadata, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(metadata)
        threads = num_threads or min(4, os.cpu_count() or 1)
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._runner = self._interpreter.get_signature_runner(SIGNATURE)
        self._lock = threading.Lock()
        shapes = {name: tuple(d["shape_signature"]) for name, d in self._runner.get_output_details().items()}
        if set(shapes) != {PROBABILITIES, FEATURES} or shapes[PROBABILITIES][-1] != NUM_CLASSES:
            raise ModelIntegrityError(f"{path} does not have the expected outputs (found {shapes})")
        (self._input_name,) = self._runner.get_input_details()
        self.feature_dim = int(shapes[FEATURES][-1])

    @classmethod
    def from_dir(cls, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> "LitePredictor":
        """The bundle's LiteRT copy, after checking ``model.keras`` and ``model.tflite`` (raises
        ``ModelIntegrityError`` naming the problem; nothing is rebuilt here)."""
        weights_dir = Path(weights_dir)
        metadata = read_metadata(weights_dir)
        checked_file(weights_dir, metadata.model_file, metadata.model_sha256)
        problem = lite_problem(weights_dir, metadata)
        if problem is not None:
            raise ModelIntegrityError(f"{problem}: build the served copy with `{BUILD_COMMAND} --weights "
                                      f"{weights_dir}` (`make app` does it for weights/)")
        log.info("Loaded model %s (LiteRT) from %s", metadata.version, weights_dir)
        return cls(weights_dir / LITE_FILE, metadata)

    def network_outputs(self, model_input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            out = self._runner(**{self._input_name: np.ascontiguousarray(model_input, np.float32)})
        return out[PROBABILITIES], out[FEATURES]


def lite_problem(weights_dir: Path, metadata: ModelMetadata) -> str | None:
    """Why ``model.tflite`` cannot be served as it is (missing, no record, altered, built from another
    model.keras), or None when it matches its recorded sha256 and the bundle's model."""
    path, info_path = weights_dir / LITE_FILE, weights_dir / LITE_INFO_FILE
    if not path.is_file():
        return f"{LITE_FILE} is missing"
    try:
        info = json.loads(info_path.read_text())
        recorded, source = str(info["sha256"]), str(info["source_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{LITE_INFO_FILE}, the record of its sha256, is missing or unreadable ({type(exc).__name__})"
    actual = sha256_of(path)
    if actual != recorded:
        return f"{LITE_FILE} has sha256 {actual[:12]}..., its record says {recorded[:12]}...: it was altered or damaged"
    if source != metadata.model_sha256:
        return f"{LITE_FILE} was built from another {metadata.model_file} (sha256 {source[:12]}...)"
    return None


def is_current(weights_dir: Path, metadata: ModelMetadata) -> bool:
    """True when ``model.tflite`` exists, matches its record and was built from the bundle's model.keras."""
    return lite_problem(weights_dir, metadata) is None


def build_lite(weights_dir: Path, check_images: int = 8, seed: int = 0) -> Path:
    """Export ``model.tflite`` from the bundle's sha256-checked Keras model, check both agree on
    ``check_images`` noise images and record it in ``model.tflite.json``."""
    loaded, metadata = load_bundle(weights_dir)
    path = export_lite(loaded, weights_dir / LITE_FILE)
    size = metadata.input_size
    batch = np.random.default_rng(seed).uniform(-1, 1, (check_images, size, size, 3)).astype(np.float32)
    difference = float(np.abs(LitePredictor(path, metadata).probabilities_of(batch)
                              - Predictor(loaded, metadata).probabilities_of(batch)).max())
    if difference > MAX_DIFFERENCE:
        path.unlink()
        raise ModelIntegrityError(f"The LiteRT copy differs from {metadata.model_file} by {difference:.2e}")
    write_json(weights_dir / LITE_INFO_FILE,
               {"source_file": metadata.model_file, "source_sha256": metadata.model_sha256,
                "sha256": sha256_of(path), "max_probability_difference": difference})
    log.info("Built %s from %s (largest probability difference %.1e)", path, metadata.model_file, difference)
    return path


def ensure_lite(weights_dir: Path, metadata: ModelMetadata) -> Path:
    """``model.tflite`` of the bundle, after checking ``model.keras`` against the metadata's sha256
    (``ModelIntegrityError`` if altered); (re)built, with a logged reason, when missing, altered or stale
    (imports TensorFlow): the explicit build step of train.py, ``make app`` and the lite CLI."""
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
