"""``python -m skin_model.cli.metadata_update [--weights DIR] [--val-report FILE] [--test-report FILE]``:
fill metadata.json fields that stored evaluations determine, without retraining (``skin_model.evaluation.metadata_update``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from skin_model.bundle import evaluation_file, read_metadata, tta_report_file, write_metadata
from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.evaluation.metadata_update import check_report_matches, update_metadata
from skin_model.evaluation.metrics import EvaluationReport

log = logging.getLogger("skin_model.cli.metadata_update")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skin_model.cli.metadata_update",
                                     description="Fill metadata.json fields that stored evaluations determine.")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="model bundle folder")
    parser.add_argument("--val-report", type=Path, default=None,
                        help="validation evaluation JSON as served (default: evaluations/val_tta.json "
                             "for a TTA model, else evaluation_val.json)")
    parser.add_argument("--test-report", type=Path, default=None,
                        help="test evaluation JSON with TTA (default: evaluations/test_tta.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    metadata = read_metadata(args.weights)
    tta = metadata.test_time_augmentation
    val_path = args.val_report or args.weights / (tta_report_file("val") if tta else evaluation_file("val"))
    test_path = args.test_report or args.weights / tta_report_file("test")
    val = EvaluationReport.from_json(val_path)
    test = EvaluationReport.from_json(test_path) if tta and test_path.is_file() else None
    try:
        check_report_matches(val, metadata, "val", val_path)
        if test is not None:
            check_report_matches(test, metadata, "test", test_path)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    path = write_metadata(args.weights, update_metadata(metadata, val, test))
    log.info("%s: referral threshold %.2f (from %s)%s", path.name, metadata.referral_threshold,
             val_path.name, f", test_tta metrics from {test_path.name}" if test is not None else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
