"""``python -m skin_model.cli.park``: carry an unfinished train.py run to another machine through the
repository (``skin_model.training.parking``).

  python -m skin_model.cli.park park RUN_DIR NAME -- TRAIN_ARGS...   copy its resumable state to runs/NAME
  python -m skin_model.cli.park unpark NAME RUN_DIR                  copy it back; prints the resume command

Stop the run first (after an epoch has been saved); commit ``runs/NAME``; delete it once the run is harvested.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from skin_model.config import PARKED_RUNS_DIR
from skin_model.training.parking import ParkingError, park, unpark

log = logging.getLogger("skin_model.cli.park")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skin_model.cli.park", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--parked-root", type=Path, default=PARKED_RUNS_DIR,
                        help="folder of parked runs (default: runs/ of the repository)")
    commands = parser.add_subparsers(dest="command", required=True)
    to_park = commands.add_parser("park", help="copy a stopped run's resumable state into the repository")
    to_park.add_argument("run_dir", type=Path, help="the run's --output-dir")
    to_park.add_argument("name", help="name of the parked run (a folder of --parked-root)")
    to_park.add_argument("train_args", nargs=argparse.REMAINDER,
                         help="after --: the run's train.py arguments, without --output-dir and --resume")
    to_unpark = commands.add_parser("unpark", help="copy a parked run into a new run folder")
    to_unpark.add_argument("name", help="name of the parked run")
    to_unpark.add_argument("run_dir", type=Path, help="the new run folder (its --output-dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parked_dir = args.parked_root / args.name
    try:
        if args.command == "park":
            train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
            park(args.run_dir, parked_dir, train_args)
            print(f"Parked in {parked_dir}: commit it; on the other machine, "
                  f"`python -m skin_model.cli.park unpark {args.name} RUN_DIR` and resume")
        else:
            parked = unpark(parked_dir, args.run_dir)
            print(parked.resume_command(args.run_dir))
    except ParkingError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
