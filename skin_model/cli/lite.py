"""``python -m skin_model.cli.lite [--weights DIR]``: build ``model.tflite``, the served LiteRT copy of a
bundle's ``model.keras``, unless an up-to-date one is there (``skin_model.serving.lite.ensure_lite``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from skin_model.bundle import ModelIntegrityError, read_metadata
from skin_model.config import DEFAULT_WEIGHTS_DIR
from skin_model.serving.lite import ensure_lite

log = logging.getLogger("skin_model.cli.lite")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skin_model.cli.lite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help="model bundle folder (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        path = ensure_lite(args.weights, read_metadata(args.weights))
    except ModelIntegrityError as exc:
        log.error("%s", exc)
        return 1
    log.info("%s is up to date", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
