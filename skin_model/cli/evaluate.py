"""``python -m skin_model.cli.evaluate --images DIR --labels CSV [--weights DIR] [--out FILE] [--name NAME]
[--split S] [--source NAME] [--restore-aspect|--no-restore-aspect]``:
metrics of the model bundle on any labelled image folder, predicted as the app serves
(``skin_model.evaluation.evaluate``); the report is printed and written as JSON. Exit status: 0 ok, 2 for a usage or
data error.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.evaluation.evaluate import EvaluationError, evaluate_folder, format_summary


def default_output(name: str) -> Path:
    """``evaluation_<name>.json`` in the current directory (name reduced to safe characters)."""
    return Path(f"evaluation_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('_') or 'dataset'}.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skin_model.cli.evaluate",
                                     description="Metrics of the model bundle on a labelled image folder, "
                                                 "predicted as the app serves.")
    parser.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    parser.add_argument("--labels", type=Path, required=True,
                        help="labels CSV: image_id,dx (HAM10000 metadata) or ISIC one-hot image,MEL,NV,...")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help=f"model bundle folder (default {DEFAULT_WEIGHTS_DIR})")
    parser.add_argument("--out", type=Path, help="report JSON (default evaluation_<name>.json here)")
    parser.add_argument("--name", help="dataset name in the report (default: the image folder's name)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per prediction batch (default 32)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="test-time augmentation: average the 8 flips/rotations (skin_model.serving.tta); default: "
                             "the model's metadata (test_time_augmentation), i.e. what the app serves")
    parser.add_argument("--split", help="keep only the labels whose 'split' column equals this (e.g. test, "
                                        "with --labels weights/split.csv)")
    parser.add_argument("--source", help="keep only the labels whose 'dataset' column (the source) equals this (e.g. "
                                         "isic2017); a source the model was not trained on gives a held-out report "
                                         "(the report page's 'Other clinics')")
    parser.add_argument("--restore-aspect", action=argparse.BooleanOptionalAction, default=None,
                        help="stretch the images of sources published squashed to squares (isic2017, isic_archive) "
                             "back to 4:3 before the centre crop; default: as the model was trained "
                             "(training.restore_aspect in its metadata)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = evaluate_folder(args.images, args.labels, args.weights, args.name, args.batch_size,
                                 tta=args.tta, split=args.split, source=args.source, restore_aspect=args.restore_aspect)
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or default_output(report.dataset["name"])
    report.to_json(out)
    print(format_summary(report))
    print(f"\nWrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
