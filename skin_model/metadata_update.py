"""Fill metadata.json fields that stored evaluations determine, without retraining:
``python -m skin_model.metadata_update [--weights DIR] [--val-report FILE] [--test-report FILE]``.

- ``referral_threshold``: ``metrics.choose_referral_threshold`` on the validation probabilities as the
  model is served (the per-image predictions of ``--val-report``, e.g. ``evaluations/ham10000_val_tta.json``
  for a model served with 8-view TTA), as train.py does for new models;
- ``metrics["test_tta"]``: the headline of ``--test-report`` (test split with TTA) for the model card;
- ``known_limits``: ``model.HAM10000_KNOWN_LIMITS`` when the list is empty.

Each report must be for this model (its ``model_sha256`` or version) and predicted the way the model is
served (its ``tta`` flag); ``model.keras`` and its sha256 are not touched.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.labels import class_index
from skin_model.metrics import EvaluationReport, choose_referral_threshold
from skin_model.model import HAM10000_KNOWN_LIMITS, METADATA_FILE, ModelMetadata

log = logging.getLogger(__name__)


def check_report_matches(report: EvaluationReport, metadata: ModelMetadata, split: str, path: Path) -> None:
    """Raise ValueError unless ``report`` is ``split`` of this model, predicted as it is served."""
    model = report.model
    same_model = model.get("model_sha256") == metadata.model_sha256 if model.get("model_sha256") \
        else model.get("version") == metadata.version
    problems = [f"it is for another model ({model.get('version')})"] if not same_model else []
    if report.dataset.get("split") != split:
        problems.append(f"it is the {report.dataset.get('split')!r} split, not {split!r}")
    if bool(model.get("tta")) != metadata.test_time_augmentation:
        problems.append(f"its TTA setting ({bool(model.get('tta'))}) is not the served one "
                        f"({metadata.test_time_augmentation})")
    if not report.predictions:
        problems.append("it stores no per-image predictions")
    if problems:
        raise ValueError(f"{path.name}: " + "; ".join(problems))


def labels_and_probs(report: EvaluationReport) -> tuple[np.ndarray, np.ndarray]:
    """The per-image integer labels and (N, 7) probabilities stored in a report."""
    labels = np.array([class_index(p["label"]) for p in report.predictions])
    return labels, np.array([p["probs"] for p in report.predictions], dtype=np.float64)


def update_metadata(metadata: ModelMetadata, val: EvaluationReport, test: EvaluationReport | None) -> ModelMetadata:
    """``metadata`` with the referral threshold (from ``val``), the test-TTA headline (from ``test``, when
    the model is served with TTA) and the known limits filled in."""
    metadata.referral_threshold = choose_referral_threshold(*labels_and_probs(val))
    if test is not None and metadata.test_time_augmentation:
        metadata.metrics = {**metadata.metrics, "test_tta": test.headline()}
    if not metadata.known_limits:
        metadata.known_limits = list(HAM10000_KNOWN_LIMITS)
    return metadata


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skin_model.metadata_update", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="model bundle folder")
    parser.add_argument("--val-report", type=Path, default=None,
                        help="validation evaluation JSON as served (default: evaluations/ham10000_val_tta.json "
                             "for a TTA model, else evaluation_val.json)")
    parser.add_argument("--test-report", type=Path, default=None,
                        help="test evaluation JSON with TTA (default: evaluations/ham10000_test_tta.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    meta_path = args.weights / METADATA_FILE
    metadata = ModelMetadata.from_json(meta_path)
    tta = metadata.test_time_augmentation
    val_path = args.val_report or args.weights / ("evaluations/ham10000_val_tta.json" if tta else "evaluation_val.json")
    test_path = args.test_report or args.weights / "evaluations/ham10000_test_tta.json"
    val = EvaluationReport.from_json(val_path)
    test = EvaluationReport.from_json(test_path) if tta and test_path.is_file() else None
    try:
        check_report_matches(val, metadata, "val", val_path)
        if test is not None:
            check_report_matches(test, metadata, "test", test_path)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    update_metadata(metadata, val, test).to_json(meta_path)
    log.info("%s: referral threshold %.2f (from %s)%s", meta_path.name, metadata.referral_threshold,
             val_path.name, f", test_tta metrics from {test_path.name}" if test is not None else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
