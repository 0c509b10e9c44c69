"""The bundle's LiteRT twin, ``model.tflite``: what the app serves predictions with.

Why: importing TensorFlow takes ~4 s on this 2-core machine and the first compiled call another second,
so a Keras-served app cannot show its first result within 6 s of starting. The LiteRT interpreter
(``ai-edge-litert``) imports in ~0.2 s and runs the same float32 network in ~3-6 ms per image. The app
predicts with it at once and loads TensorFlow and the Keras model only when Grad-CAM is first requested
(``service``).

The exported network has two outputs, computed in one pass: the classifier's softmax and the OOD gate's
features (``ood.FEATURE_LAYER`` averaged over space). ``train.py`` writes the file with the bundle (its
sha256 is in ``metadata.json``); for a bundle made before that, add it with

    python -m skin_model.lite [--weights DIR]

which also checks that both models agree on a few images.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

import numpy as np

from skin_model.calibration import apply_temperature
from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.inference import CalibratedPredictor
from skin_model.labels import NUM_CLASSES
from skin_model.model import (METADATA_FILE, ModelIntegrityError, ModelMetadata, checked_file, read_metadata,
                              sha256_of)

log = logging.getLogger(__name__)

LITE_FILE = "model.tflite"
SIGNATURE = "serving_default"
#: Output names of the exported signature, in the order of ``serving_network``'s outputs.
PROBABILITIES, FEATURES = "output_0", "output_1"


def serving_network(model):
    """The classifier with a second output: the OOD gate's features (``ood.FEATURE_LAYER``, pooled)."""
    import keras

    from skin_model.ood import FEATURE_LAYER

    features = keras.layers.GlobalAveragePooling2D(name="ood_pool")(model.get_layer(FEATURE_LAYER).output)
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

    @classmethod
    def from_dir(cls, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> "LitePredictor":
        """Load ``model.tflite`` after checking its sha256 against ``metadata.json``."""
        metadata = read_metadata(Path(weights_dir))
        if not metadata.lite_file:
            raise ModelIntegrityError(f"The bundle in {weights_dir} has no {LITE_FILE}: add it with "
                                      f"`python -m skin_model.lite --weights {weights_dir}`")
        path = checked_file(Path(weights_dir), metadata.lite_file, metadata.lite_sha256)
        log.info("Loaded model %s (LiteRT) from %s", metadata.version, weights_dir)
        return cls(path, metadata)

    def _run(self, model_input: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            return self._runner(**{self._input_name: np.ascontiguousarray(model_input, np.float32)})

    def raw_probabilities(self, model_input: np.ndarray) -> np.ndarray:
        return self._run(model_input)[PROBABILITIES]

    def outputs(self, model_input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated (N, 7) probabilities, (N, C) OOD features) for a preprocessed float32 batch."""
        out = self._run(model_input)
        probabilities = apply_temperature(np.asarray(out[PROBABILITIES], np.float64), self.metadata.temperature)
        return probabilities, np.asarray(out[FEATURES], np.float64)


def add_to_bundle(weights_dir: Path, check_images: int = 8, seed: int = 0) -> float:
    """Export ``model.tflite`` for the Keras bundle in ``weights_dir``, record it in ``metadata.json`` and
    return the largest probability difference between the two models on ``check_images`` noise images."""
    from skin_model.inference import Predictor

    keras_predictor = Predictor.from_dir(weights_dir)
    metadata = keras_predictor.metadata
    metadata.lite_file = LITE_FILE
    metadata.lite_sha256 = sha256_of(export_lite(keras_predictor.model, weights_dir / LITE_FILE))
    metadata.to_json(weights_dir / METADATA_FILE)
    size = metadata.input_size
    batch = np.random.default_rng(seed).uniform(-1, 1, (check_images, size, size, 3)).astype(np.float32)
    lite = LitePredictor.from_dir(weights_dir)
    return float(np.abs(lite.probabilities_of(batch) - keras_predictor.probabilities_of(batch)).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Add model.tflite (the served LiteRT twin) to a model bundle.")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help="model bundle folder (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        difference = add_to_bundle(args.weights)
    except ModelIntegrityError as exc:
        log.error("%s", exc)
        return 1
    log.info("Wrote %s; largest probability difference from the Keras model: %.2e",
             args.weights / LITE_FILE, difference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
