"""Weight-average probe: two trained bundles of one split, each alone, their weights averaged (a "model soup",
Wortsman et al. 2022) and their probabilities averaged (a two-network ensemble), on validation as served.

    python benchmarks/weight_average_probe.py RUN_A RUN_B [--data-dirs DIR ...] [--resamples N] [--output FILE]

Both bundles must hold the same split.csv (a second seed on the same split: `train.py --seed 43 --split-seed 42`).
Each network is run through its LiteRT copy, its temperature refitted on validation as train.py does; the
ensemble averages the two calibrated outputs. Printed and written to benchmarks/results/weight_average.json:
balanced accuracy, melanoma AUC and sensitivity, macro AUC and ECE, single view and 8-view TTA, and a
lesion-paired bootstrap of each candidate against RUN_A in the view RUN_A serves. Validation only: this chooses
what to ship, so the test split is not looked at. About 8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skin_model.config import DEFAULT_DATA_DIR, DEFAULT_EXTRA_DATA_DIRS  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "weight_average.json"
FIGURES = ("balanced_accuracy", "macro_auc", "melanoma_sensitivity", "ece")
VIEWS = {"single_view": False, "tta": True}

log = logging.getLogger("weight_average_probe")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path, help="the baseline bundle (e.g. weights)")
    parser.add_argument("run_b", type=Path, help="a second bundle trained on the same split")
    parser.add_argument("--data-dirs", type=Path, nargs="+", default=[DEFAULT_DATA_DIR, *DEFAULT_EXTRA_DATA_DIRS],
                        help="the labelled folders the bundles were trained on (default: HAM10000 + the ISIC folder)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def averaged_weights(first: "keras.Model", second: "keras.Model") -> "keras.Model":
    """A copy of ``first`` whose every weight (batch-norm statistics included) is the mean of both networks'."""
    import keras

    soup = keras.models.clone_model(first)
    soup.set_weights([(a + b) / 2 for a, b in zip(first.get_weights(), second.get_weights())])
    return soup


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from skin_model.bundle import read_split
    from skin_model.data.dataset import load_arrays, load_sources
    from skin_model.evaluation.compare import PairedImages, differences_dict, paired_bootstrap
    from skin_model.evaluation.metrics import evaluate_probabilities
    from skin_model.model import load_bundle
    from skin_model.serving.calibration import fit_temperature
    from skin_model.serving.lite import LitePredictor, export_lite
    from skin_model.training.stages import in_training_metadata, served_probabilities

    split_a, split_b = (read_split(run) for run in (args.run_a, args.run_b))
    if not split_a[["image_id", "split"]].equals(split_b[["image_id", "split"]]):
        sys.exit(f"{args.run_a} and {args.run_b} hold different splits: train the second with --split-seed")
    (net_a, meta_a), (net_b, meta_b) = load_bundle(args.run_a), load_bundle(args.run_b)
    val = split_a[split_a["split"] == "val"].merge(load_sources(args.data_dirs)[["image_id", "path"]], on="image_id")
    labels, ids, lesions = val["label"].astype(int).to_numpy(), list(val["image_id"]), val["lesion_id"].to_numpy()
    images = load_arrays(list(val["path"]), meta_a.input_size, progress=False)

    served: dict[str, dict[str, np.ndarray]] = {}
    temperatures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        networks = {"a": net_a, "b": net_b, "weight_average": averaged_weights(net_a, net_b)}
        for name, network in networks.items():
            lite = export_lite(network, Path(tmp) / f"{name}.tflite")
            raw = served_probabilities(LitePredictor(lite, in_training_metadata(meta_a.input_size, 1.0)), images)
            temperatures[name] = fit_temperature(raw, labels)
            predictor = LitePredictor(lite, in_training_metadata(meta_a.input_size, temperatures[name]))
            served[name] = {view: served_probabilities(predictor, images, tta=tta) for view, tta in VIEWS.items()}
    served["ensemble"] = {view: (served["a"][view] + served["b"][view]) / 2 for view in VIEWS}

    def figures(probs: np.ndarray) -> dict[str, float | None]:
        report = evaluate_probabilities(labels, probs, ids, dataset={}, model={})
        return {"melanoma_auc": report.per_class["mel"]["auc"], **{k: getattr(report, k) for k in FIGURES}}

    baseline_view = "tta" if meta_a.test_time_augmentation else "single_view"
    results = {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "split": "val",
               "n_images": len(ids), "a": meta_a.version, "b": meta_b.version, "bootstrap_view": baseline_view,
               "models": {}}
    for name, views in served.items():
        entry = {"temperature": temperatures.get(name), **{view: figures(p) for view, p in views.items()}}
        if name != "a":
            pair = PairedImages(labels, served["a"][baseline_view], views[baseline_view], lesions)
            entry["against_a"] = differences_dict(paired_bootstrap(pair, args.resamples), 0.95, args.resamples,
                                                  "lesion")
        results["models"][name] = entry
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"validation, {len(ids)} images: {args.run_a} = a ({meta_a.version}), {args.run_b} = b ({meta_b.version})")
    print(f"{'model':<16}{'view':<13}" + "".join(f"{k:>22}" for k in ("melanoma_auc", *FIGURES)))
    for name, entry in results["models"].items():
        for view in VIEWS:
            print(f"{name:<16}{view:<13}" + "".join(f"{v:>22.3f}" for v in entry[view].values()))
    log.info("Wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
