"""Input-size probe (FixRes-style): the trained weights evaluated on validation at other input sizes.

    python benchmarks/input_size_benchmark.py [--weights DIR] [--data-dir DIR] [--sizes 224 256] [--val-limit N]

Training crops 60-100% of each image and resizes the crop to the input size, so lesions look larger in
training than in serving; evaluating at a larger input can compensate (Touvron et al. 2019, "Fixing the
train-test resolution discrepancy"). For each size the same weights are rebuilt at that input size, the
temperature is refitted on validation, and validation figures are printed and written to
benchmarks/results/input_size.json for the single view and the 8-view average (as the app serves it).
Validation only: this chooses a serving setting, so the test split is not looked at. Several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skin_model.config import DEFAULT_DATA_DIR, DEFAULT_WEIGHTS_DIR  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "input_size.json"
FIGURES = ("balanced_accuracy", "accuracy", "macro_auc", "melanoma_sensitivity", "ece")

log = logging.getLogger("input_size_benchmark")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 256])
    parser.add_argument("--val-limit", type=int, default=None, help="random N val images (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from skin_model.bundle import read_split
    from skin_model.serving.calibration import fit_temperature
    from skin_model.data.dataset import load_arrays, load_catalogue
    from skin_model.evaluation.metrics import evaluate_probabilities
    from skin_model.model import build_classifier, load_bundle
    from skin_model.serving.inference import Predictor
    from skin_model.training.stages import in_training_metadata, predict_arrays, served_probabilities

    trained, metadata = load_bundle(args.weights)
    val = read_split(args.weights, "val", columns=("image_id", "split", "label")).astype({"label": int}).merge(load_catalogue(args.data_dir)[["image_id", "path"]], on="image_id")
    val = val.sample(n=min(args.val_limit, len(val)), random_state=0) if args.val_limit else val
    labels, ids = val["label"].to_numpy(), list(val["image_id"])

    def figures(probs: np.ndarray) -> dict[str, float | None]:
        report = evaluate_probabilities(labels, probs, ids, dataset={}, model={})
        return {k: getattr(report, k) for k in FIGURES}

    sizes = {}
    for size in args.sizes:
        model = build_classifier(size, None)
        model.set_weights(trained.get_weights())
        images = load_arrays(list(val["path"]), size, progress=False)
        raw = predict_arrays(model, images)
        temperature = fit_temperature(raw, labels)
        predictor = Predictor(model, in_training_metadata(size, temperature))
        sizes[str(size)] = {"temperature": temperature,
                            "single_view": figures(served_probabilities(predictor, images)),
                            "tta": figures(served_probabilities(predictor, images, tta=True))}
        log.info("%d px: %s", size, json.dumps(sizes[str(size)]))
    results = {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "model": {"version": metadata.version, "trained_input_size": metadata.input_size},
               "split": "val", "n_images": len(ids), "sizes": sizes}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    log.info("Wrote %s", args.output)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
