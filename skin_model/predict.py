"""Batch command line: ``python -m skin_model.predict FILE... [--json] [--weights DIR]``.

Prints the top class, the calibrated probabilities and the referral cue (malignant roll-up against the
model's referral threshold) for each file. A file that cannot be used is
reported by name and the batch goes on; the exit status is 1 if any file failed (2 if the model could
not be loaded). It predicts with the bundle's ``model.tflite``, as the app does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from skin_model.config import DEFAULT_WEIGHTS_DIR

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skin_model.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="image files (JPEG, PNG, WebP, BMP or TIFF)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average the 8 flips/rotations (default: the model's test_time_augmentation "
                             "setting, as the app serves it)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help=f"model bundle folder (default {DEFAULT_WEIGHTS_DIR})")
    return parser.parse_args(argv)


def format_text(name: str, result: dict) -> str:
    """Human-readable lines for one file."""
    from skin_model.inference import Prediction, format_probability
    from skin_model.labels import CODES, by_code

    top = result["top_class"]
    prediction = Prediction(tuple(result["probabilities"][c] for c in CODES), 0.0, result["referral_threshold"])
    lines = [f"{name}: {top} ({by_code(top).name}) {format_probability(result['top_probability'])}"
             + ("  [unsure: refer for assessment]" if result["unsure"] else "")]
    lines.append(f"  malignant (mel+bcc+akiec): {format_probability(result['malignant_probability'])}"
                 + (f"  [{prediction.referral_sentence}]" if prediction.referral_sentence else ""))
    ranked = sorted(result["probabilities"].items(), key=lambda kv: kv[1], reverse=True)
    lines.append("  " + "  ".join(f"{code} {format_probability(p)}" for code, p in ranked))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from skin_model.imaging import InvalidImageError, load_image
    from skin_model.lite import LitePredictor
    from skin_model.tta import predict_probabilities_tta
    from skin_model.model import ModelIntegrityError

    try:
        predictor = LitePredictor.from_dir(args.weights)  # the app's serving model: no TensorFlow import
    except (ModelIntegrityError, OSError, ValueError) as exc:
        print(f"error: cannot load the model from {args.weights}: {exc}", file=sys.stderr)
        return 2
    tta = predictor.metadata.test_time_augmentation if args.tta is None else args.tta
    failures = 0
    for path in args.files:
        try:
            image = load_image(path)
            views = predict_probabilities_tta if tta else type(predictor).predict_probabilities
            probs = views(predictor, [image])[0]
            prediction = predictor.prediction_of(probs)
            result = {"file": str(path), "ok": True, **prediction.as_dict(), "tta": tta}
        except InvalidImageError as exc:
            failures += 1
            result = {"file": str(path), "ok": False, "error": exc.reason}
        except OSError as exc:  # unreadable file (permissions, a directory, ...)
            failures += 1
            result = {"file": str(path), "ok": False, "error": f"cannot read the file: {exc.strerror or exc}"}
        if args.json:
            print(json.dumps(result), flush=True)
        elif result["ok"]:
            print(format_text(str(path), result), flush=True)
        else:
            print(f"{path}: ERROR {result['error']}", flush=True)
    if failures:
        print(f"{failures} of {len(args.files)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
