"""Safety features: out-of-distribution gate rates and latency, test-time augmentation effect and cost.

    python benchmarks/safety_benchmark.py [--weights DIR] [--data-dir DIR] [--val-limit N] [--test-limit N]
                                          [--latency-images 20]

Figures (printed and written to benchmarks/results/safety.json):

* ``ood``: share of dermoscopic test-split images the gate passes (goal >= 98%), share of the
  non-dermoscopic set (``skin_model.data.ood_images``) it rejects (goal >= 95%), per category; and the
  latency, as served (LiteRT), of one preprocessed image's prediction + gate check, next to one plain
  prediction's (decode excluded / included).
  Skipped (with the reason) when no gate is fitted for the model (``python -m skin_model.cli.ood fit``).
* ``tta``: balanced accuracy, accuracy, macro AUC and ECE on the validation split with a single view and
  with the 8-view average (``skin_model.serving.tta``), and the latency of one image each way (p50/p95 ms), with
  the served LiteRT model.

Use ``--val-limit`` / ``--test-limit`` for a quick check; the full run (all val and test images, TTA
on every val image) takes several minutes on 2 cores. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skin_model.config import DEFAULT_DATA_DIR, DEFAULT_WEIGHTS_DIR  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "safety.json"

log = logging.getLogger("safety_benchmark")


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = np.asarray(values_s) * 1000
    return {"n": int(ms.size), "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "mean": float(ms.mean())}


def timed(function, inputs: list) -> dict[str, float]:
    """Per-call wall time of ``function(x)`` over ``inputs`` after one warm-up call."""
    function(inputs[0])
    times = []
    for item in inputs:
        start = time.perf_counter()
        function(item)
        times.append(time.perf_counter() - start)
    return summary_ms(times)


def split_labels(weights: Path, paths: list[Path]) -> np.ndarray:
    from skin_model.bundle import read_split
    from skin_model.labels import class_index

    dx = read_split(weights).set_index("image_id")["dx"]
    return np.array([class_index(dx[p.stem]) for p in paths])


def classification_figures(labels: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    from skin_model.evaluation.metrics import expected_calibration_error

    preds = probs.argmax(axis=1)
    present = np.unique(labels)
    auc = None
    if len(present) == probs.shape[1]:
        auc = float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    return {"balanced_accuracy": float(balanced_accuracy_score(labels, preds)),
            "accuracy": float(accuracy_score(labels, preds)), "macro_auc": auc,
            "ece": expected_calibration_error(labels, probs)}


def ood_benchmark(predictor, served, weights: Path, data_dir: Path, test_limit: int | None,
                  latency_n: int) -> dict:
    from skin_model.serving import ood
    from skin_model.data.imaging import load_image
    from skin_model.data.ood_images import non_dermoscopic_images

    gate, status = ood.load_gate(weights, predictor.metadata.model_sha256, predictor.metadata.ood_sha256)
    if gate is None:
        return {"skipped": status}
    extractor = ood.FeatureExtractor(predictor.model)
    size = predictor.input_size
    test_paths = ood.split_paths(weights, data_dir, "test", test_limit)
    passed = gate.distances(ood.features_of_files(extractor, test_paths, size)) <= gate.threshold
    others = non_dermoscopic_images()
    rejected = gate.distances(ood.features_of_images(extractor, [o.image for o in others], size)) > gate.threshold
    categories: dict[str, list[bool]] = {}
    for item, was_rejected in zip(others, rejected):
        categories.setdefault(item.category, []).append(bool(was_rejected))
    batches = [predictor.model_input([load_image(p)]) for p in test_paths[:latency_n]]
    images = [load_image(p) for p in test_paths[:latency_n]]
    return {
        "threshold": gate.threshold, "gate": gate.info,
        "dermoscopic_pass_rate": float(passed.mean()), "n_dermoscopic": len(test_paths),
        "non_dermoscopic_reject_rate": float(rejected.mean()), "n_non_dermoscopic": len(others),
        "reject_rate_by_category": {k: float(np.mean(v)) for k, v in categories.items()},
        "non_dermoscopic_passed": [o.name for o, r in zip(others, rejected) if not r],
        "goals": ood.GOALS,
        # As served: one LiteRT pass gives the probabilities and the gate's features; then the gate's distance.
        "latency_ms": {"prediction_and_ood_check": timed(lambda b: gate.check(served.outputs(b)[1]), batches),
                       "plain_prediction": timed(lambda im: served.predict_probabilities([im]), images)},
    }


def tta_benchmark(predictor, weights: Path, data_dir: Path, val_limit: int | None, latency_n: int) -> dict:
    from skin_model.data.imaging import load_image
    from skin_model.serving.ood import split_paths

    paths = split_paths(weights, data_dir, "val", val_limit)
    labels = split_labels(weights, paths)
    images = [load_image(p) for p in paths]
    plain = np.concatenate([predictor.predict_probabilities(images[i:i + 64]) for i in range(0, len(images), 64)])
    averaged = predictor.predict_probabilities(images, tta=True)
    sample = images[:latency_n]
    return {
        "n_val": len(paths), "split": "val" + ("" if val_limit is None else f" (random {len(paths)})"),
        "single_view": classification_figures(labels, plain),
        "tta_8_views": classification_figures(labels, averaged),
        "latency_ms": {"single_view": timed(lambda im: predictor.predict_probabilities([im]), sample),
                       "tta_8_views": timed(lambda im: predictor.predict_probabilities([im], tta=True), sample)},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--val-limit", type=int, default=None, help="random N val images (default: all)")
    parser.add_argument("--test-limit", type=int, default=None, help="random N test images (default: all)")
    parser.add_argument("--latency-images", type=int, default=20)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from skin_model.serving.inference import Predictor
    from skin_model.serving.lite import LitePredictor

    predictor = Predictor.from_dir(args.weights)  # Keras: the gate's features for whole splits
    served = LitePredictor.from_dir(args.weights)  # what the app serves: TTA figures and latencies
    results = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "model": {"version": predictor.metadata.version, "sha256": predictor.metadata.model_sha256,
                  "input_size": predictor.input_size},
        "ood": ood_benchmark(predictor, served, args.weights, args.data_dir, args.test_limit, args.latency_images),
        "tta": tta_benchmark(served, args.weights, args.data_dir, args.val_limit, args.latency_images),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    log.info("Wrote %s", args.output)
    print(json.dumps({k: results[k] for k in ("ood", "tta")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
