"""``python -m skin_model.cli.ood fit|measure [--weights DIR] [--data-dir DIR] [--limit N]``: fit the
out-of-distribution gate on the bundle's training split (``ood.npz``), or measure it (``ood_figures.json``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from skin_model.serving import ood
from skin_model.bundle import BundleFileError, ModelIntegrityError
from skin_model.config import DEFAULT_DATA_DIR, DEFAULT_WEIGHTS_DIR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skin_model.cli.ood", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("fit", "fit the gate on the training split and save WEIGHTS/ood.npz"),
                            ("measure", "pass/reject rates on test and non-dermoscopic images, saved to "
                                        "WEIGHTS/ood_figures.json")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="model bundle folder")
        sub.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="HAM10000 folder")
        sub.add_argument("--limit", type=int, default=None, help="use a random N images (quick runs)")
        if name == "fit":
            sub.add_argument("--components", type=int, default=ood.DEFAULT_COMPONENTS)
            sub.add_argument("--percentile", type=float, default=ood.DEFAULT_PERCENTILE)
            sub.add_argument("--target-pass", type=float, default=ood.DEFAULT_TARGET_PASS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "fit":
            gate = ood.fit_bundle_gate(args.weights, args.data_dir, args.limit, args.components, args.percentile,
                                       args.target_pass)
            print(json.dumps({"threshold": gate.threshold, **gate.info}, indent=1))
        else:
            figures = ood.measure_bundle_gate(args.weights, args.data_dir, args.limit).to_dict()
            print(json.dumps({k: v for k, v in figures.items() if k not in ("gate", "distances")}, indent=1))
    except (ood.OodGateError, BundleFileError, ModelIntegrityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
