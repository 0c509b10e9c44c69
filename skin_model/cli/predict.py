"""Batch command line: ``python -m skin_model.cli.predict FILE... [--json] [--weights DIR]``.

Prints the app's verdict (``verdict.Verdict``) for each file: the top class, the calibrated probabilities,
the referral cue (malignant roll-up against the model's referral threshold), "unsure", and the
out-of-distribution check (does it look like a dermatoscopic image? if not, the result is marked withheld).
``--json`` prints the same verdict as one JSON object per line. A file that cannot be used is reported by
name and the batch goes on; the exit status is 1 if any file failed (2 if the model could not be loaded).
It predicts as the app does, through ``service.ClassifierService`` (the bundle's sha256-checked
``model.tflite`` and ``ood.npz``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.serving.inference import format_probability
from skin_model.labels import MALIGNANT_SHORT, by_code
from skin_model.serving.verdict import Verdict

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skin_model.cli.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="image files (JPEG, PNG, WebP, BMP or TIFF)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average the 8 flips/rotations (default: the model's test_time_augmentation "
                             "setting, as the app serves it)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help=f"model bundle folder (default {DEFAULT_WEIGHTS_DIR})")
    return parser.parse_args(argv)


def format_text(name: str, verdict: Verdict) -> str:
    """Human-readable lines for one file."""
    p = verdict.prediction
    lines = [f"{name}: {p.top_code} ({by_code(p.top_code).name}) {format_probability(p.top_probability)}"
             + ("  [NOT A DERMATOSCOPIC IMAGE: do not rely on this result]" if verdict.not_dermoscopic else "")
             + ("  [unsure: refer for assessment]" if verdict.unsure else "")]
    lines.append(f"  malignant ({MALIGNANT_SHORT}): {format_probability(p.malignant_probability)}"
                 + (f"  [{p.referral_sentence}]" if p.referral_sentence else ""))
    lines.append("  " + "  ".join(f"{code} {format_probability(prob)}" for code, prob in p.ranked))
    lines.append(f"  dermatoscopic-image check: {verdict.ood_note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from skin_model.bundle import ModelIntegrityError
    from skin_model.data.imaging import InvalidImageError, read_image
    from skin_model.serving.service import ClassifierService

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
            result = {"file": str(path), "ok": True, **analysis.verdict.as_dict()}
        except InvalidImageError as exc:
            failures += 1
            result = {"file": str(path), "ok": False, "error": exc.reason}
        except OSError as exc:  # unreadable file (permissions, a directory, ...)
            failures += 1
            result = {"file": str(path), "ok": False, "error": f"cannot read the file: {exc.strerror or exc}"}
        if args.json:
            print(json.dumps(result), flush=True)
        elif result["ok"]:
            print(format_text(str(path), analysis.verdict), flush=True)
        else:
            print(f"{path}: ERROR {result['error']}", flush=True)
    if failures:
        print(f"{failures} of {len(args.files)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
