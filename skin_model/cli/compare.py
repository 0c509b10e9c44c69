"""``python -m skin_model.cli.compare BASELINE.json CANDIDATE.json [MORE.json ...] [--data-dir DIR]
[--output FILE]``: candidate minus baseline on the held-out protocol's figures, with paired lesion-bootstrap
intervals.

All files are evaluation reports of the same images with per-image predictions (e.g. two recipes'
``heldout_rosendahl.json``); several candidate reports are compared as their ensemble (mean probabilities).
Lesion ids come from the HAM10000 metadata under ``--data-dir``; without it each image is resampled on its
own (said in the output). It also prints, for baseline and candidate, the balanced accuracy and naevus recall
left once the melanoma probability is up-weighted until melanoma sensitivity reaches ``--sensitivity`` (the
protocol's 0.70): how far a decision threshold alone is from the bar (``compare.at_melanoma_sensitivity``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from skin_model.evaluation.compare import (ComparisonError, at_melanoma_sensitivity, differences_dict, lesion_ids,
                                mean_predictions, pair_predictions, paired_bootstrap)
from skin_model.config import DEFAULT_DATA_DIR
from skin_model.data.dataset import DatasetError, find_metadata
from skin_model.evaluation.metrics import EvaluationReport

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skin_model.cli.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="evaluation report JSON of the baseline")
    parser.add_argument("candidate", type=Path, nargs="+",
                        help="evaluation report JSON of the candidate, same images; several: their ensemble "
                             "(mean probabilities)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="HAM10000 folder, for the lesion ids (default ../shared/data/ham10000)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    parser.add_argument("--sensitivity", type=float, default=0.70,
                        help="also show what each report gives once its melanoma probability is up-weighted until "
                             "melanoma sensitivity reaches this (default 0.70, the protocol's bar)")
    parser.add_argument("--output", type=Path, default=None, help="also write the comparison as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        baseline = EvaluationReport.from_json(args.baseline)
        candidates = [EvaluationReport.from_json(path) for path in args.candidate]
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: cannot read the reports: {exc}", file=sys.stderr)
        return 2
    try:
        lesions, unit = lesion_ids(find_metadata(args.data_dir)), "lesion"
    except (DatasetError, OSError, ValueError) as exc:
        log.warning("No lesion ids (%s): resampling images one by one", exc)
        lesions, unit = None, "image"
    try:
        candidate = mean_predictions([report.predictions for report in candidates])
        pair = pair_predictions(baseline.predictions, candidate, lesions)
        differences = paired_bootstrap(pair, args.resamples, args.level, args.seed)
        points = {role: at_melanoma_sensitivity(pair.labels, probs, args.sensitivity)
                  for role, probs in (("baseline", pair.baseline), ("candidate", pair.candidate))}
    except (ComparisonError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = " + ".join(path.name for path in args.candidate)
    if len(args.candidate) > 1:
        name = f"mean of ({name})"
    print(f"{name} minus {args.baseline.name}: {len(pair.labels)} images, "
          f"{len(set(pair.groups))} {unit}s resampled {args.resamples} times")
    for d in differences:
        print(f"  {d.figure:22s} {d.baseline:.3f} -> {d.candidate:.3f}  {d.difference:+.3f}  "
              f"{args.level:.0%} interval [{d.low:+.3f}, {d.high:+.3f}]{'' if d.excludes_zero else '  (includes 0)'}")
    print(f"At melanoma sensitivity {args.sensitivity:.2f} (melanoma probability up-weighted until reached):")
    for role, point in points.items():
        print(f"  {role:9s} x{point.weight:<6.2f} balanced accuracy {point.balanced_accuracy:.3f}, "
              f"naevus recall {point.naevus_recall:.3f}")
    if args.output:
        result = {"baseline": args.baseline.name, "candidate": [path.name for path in args.candidate],
                  **differences_dict(differences, args.level, args.resamples, unit),
                  "at_melanoma_sensitivity": {role: asdict(point) for role, point in points.items()}}
        args.output.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
