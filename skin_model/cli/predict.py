"""Batch command line: ``python -m skin_model.cli.predict FILE... [--json] [--weights DIR] [--overlay DIR
[--method gradcam|gradcam++]]``.

Prints the app's verdict (``verdict.Verdict``) for each file: the top class, the calibrated probabilities,
the referral cue (malignant roll-up against the model's referral threshold), "unsure", and the
out-of-distribution check (does it look like a dermatoscopic image? if not, the result is marked withheld).
``--json`` prints the same verdict as one JSON object per line. A file that cannot be used is reported by
name and the batch goes on; the exit status is 1 if any file failed (2 if the model could not be loaded).
It predicts as the app does, through ``service.ClassifierService`` (the bundle's sha256-checked
``model.tflite``, ``head.npz`` and ``ood.npz``), without TensorFlow. ``--overlay DIR`` also saves, for each
usable file, the app's heatmap overlay for the top class (Grad-CAM, or Grad-CAM++ with ``--method``) on the
centre square the model classified, as ``DIR/<name>.<method>.png`` (named in the output).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.labels import MALIGNANT_SHORT, by_code
from skin_model.serving.explain import METHODS
from skin_model.serving.inference import format_probability
from skin_model.serving.verdict import Verdict

if TYPE_CHECKING:
    from skin_model.serving.service import Analysis, ClassifierService

#: Opacity of the saved overlays (the app's default).
OVERLAY_ALPHA = 0.4

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
    parser.add_argument("--overlay", type=Path, metavar="DIR",
                        help="save each file's heatmap overlay for its top class as DIR/<name>.<method>.png")
    parser.add_argument("--method", choices=list(METHODS), default="gradcam",
                        help="heatmap of --overlay (default gradcam)")
    return parser.parse_args(argv)


def overlay_path(out_dir: Path, source: Path, method: str, taken: set[Path]) -> Path:
    """``out_dir/<source name>.<method>.png``, numbered when two inputs share a name."""
    stem = f"{source.stem}.{method.replace('+', 'plus')}"
    path, number = out_dir / f"{stem}.png", 1
    while path in taken:
        number += 1
        path = out_dir / f"{stem}.{number}.png"
    taken.add(path)
    return path


def save_overlay(service: ClassifierService, analysis: Analysis, method: str, path: Path) -> None:
    """The app's overlay of ``method`` for the top class, on the centre square the model classified."""
    explanation = service.explain(analysis, analysis.prediction.top_code, method)
    Image.fromarray(explanation.overlay(OVERLAY_ALPHA)).save(path)


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
    if args.overlay is not None:
        try:
            args.overlay.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: cannot create the overlay folder {args.overlay}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    taken: set[Path] = set()
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
        if result["ok"] and args.overlay is not None:
            target = overlay_path(args.overlay, path, args.method, taken)
            try:
                save_overlay(service, analysis, args.method, target)
                result["overlay"] = str(target)
            except OSError as exc:
                failures += 1
                result = {**result, "ok": False, "error": f"cannot write the overlay {target}: {exc.strerror or exc}"}
        if args.json:
            print(json.dumps(result), flush=True)
        elif result["ok"]:
            print(format_text(str(path), analysis.verdict)
                  + (f"\n  {METHODS[args.method]} overlay: {result['overlay']}" if "overlay" in result else ""),
                  flush=True)
        else:
            print(f"{path}: ERROR {result['error']}", flush=True)
    if failures:
        print(f"{failures} of {len(args.files)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
