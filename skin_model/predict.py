"""Batch command line: ``python -m skin_model.predict FILE... [--json] [--weights DIR]``.

Prints the top class, the calibrated probabilities, the referral cue (malignant roll-up against the model's
referral threshold) and the app's out-of-distribution verdict (does it look like a dermatoscopic image?) for
each file. A file that cannot be used is reported by name and the batch goes on; the exit status is 1 if any
file failed (2 if the model could not be loaded). It predicts as the app does, through
``service.ClassifierService`` (the bundle's sha256-checked ``model.tflite`` and ``ood.npz``).
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


def ood_verdict(analysis, status: str) -> dict:
    """The out-of-distribution check of one analysis as JSON: checked or not (and why), flagged, score."""
    if analysis.ood is None:
        return {"checked": False, "flagged": None, "reason": status}
    return {"checked": True, "flagged": analysis.ood.flagged, "distance": analysis.ood.distance,
            "threshold": analysis.ood.threshold}


def format_text(name: str, result: dict) -> str:
    """Human-readable lines for one file."""
    from skin_model.inference import Prediction, format_probability
    from skin_model.labels import CODES, by_code

    top = result["top_class"]
    ood = result.get("ood", {})
    prediction = Prediction(tuple(result["probabilities"][c] for c in CODES), 0.0, result["referral_threshold"])
    lines = [f"{name}: {top} ({by_code(top).name}) {format_probability(result['top_probability'])}"
             + ("  [unsure: refer for assessment]" if result["unsure"] else "")
             + ("  [NOT A DERMATOSCOPIC IMAGE: do not rely on this result]" if ood.get("flagged") else "")]
    lines.append(f"  malignant (mel+bcc+akiec): {format_probability(result['malignant_probability'])}"
                 + (f"  [{prediction.referral_sentence}]" if prediction.referral_sentence else ""))
    ranked = sorted(result["probabilities"].items(), key=lambda kv: kv[1], reverse=True)
    lines.append("  " + "  ".join(f"{code} {format_probability(p)}" for code, p in ranked))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from skin_model.imaging import InvalidImageError, read_image
    from skin_model.model import ModelIntegrityError
    from skin_model.service import ClassifierService

    try:
        service = ClassifierService.from_dir(args.weights)  # the app's serving model: no TensorFlow import
    except (ModelIntegrityError, OSError, ValueError) as exc:
        print(f"error: cannot load the model from {args.weights}: {exc}", file=sys.stderr)
        return 2
    if not service.ood_enabled:
        print(f"warning: the dermatoscopic-image check is off: {service.ood_status}", file=sys.stderr)
    tta = service.metadata.test_time_augmentation if args.tta is None else args.tta
    failures = 0
    for path in args.files:
        try:
            decoded = read_image(path)
            analysis = service.analyse_image(decoded.image, name=path.name, tta=tta,
                                             original_size=decoded.original_size)
            result = {"file": str(path), "ok": True, **analysis.prediction.as_dict(), "tta": tta,
                      "ood": ood_verdict(analysis, service.ood_status)}
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
