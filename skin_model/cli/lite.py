"""``python -m skin_model.cli.lite [--weights DIR] [--check]``: build ``model.tflite`` and ``head.npz``, the served
LiteRT copy of a bundle's ``model.keras`` and its head for Grad-CAM, unless an up-to-date copy is there
(``skin_model.serving.lite.ensure_lite``; building imports TensorFlow, from requirements.txt).

``--check`` only says whether the copy is up to date, without TensorFlow: exit status 0 when it is, 1 when it
must be (re)built (missing, altered, stale or of an older format), 2 when the bundle itself cannot be used
(no metadata, altered ``model.keras``). ``make app`` runs it first and installs TensorFlow only to build.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from skin_model.bundle import ModelIntegrityError, checked_file, read_metadata
from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.serving.lite import ensure_lite, lite_problem

log = logging.getLogger("skin_model.cli.lite")

#: Exit statuses of ``--check``.
CURRENT, NEEDS_BUILD, UNUSABLE = 0, 1, 2


def check(weights_dir: Path) -> int:
    """``CURRENT``, ``NEEDS_BUILD`` or ``UNUSABLE`` for the bundle's served copy, with the reason logged."""
    try:
        metadata = read_metadata(weights_dir)
        checked_file(weights_dir, metadata.model_file, metadata.model_sha256)
    except ModelIntegrityError as exc:
        log.error("%s", exc)
        return UNUSABLE
    problem = lite_problem(Path(weights_dir), metadata)
    if problem is not None:
        log.warning("The served copy in %s must be built: %s", weights_dir, problem)
        return NEEDS_BUILD
    log.info("The served copy in %s is up to date", weights_dir)
    return CURRENT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skin_model.cli.lite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help="model bundle folder (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="only check (no TensorFlow): exit 0 when up to date, 1 when it must be built, "
                             "2 when the bundle cannot be used")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.check:
        return check(args.weights)
    try:
        path = ensure_lite(args.weights, read_metadata(args.weights))
    except ModelIntegrityError as exc:
        log.error("%s", exc)
        return 1
    log.info("%s is up to date", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
