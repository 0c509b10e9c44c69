"""``python -m skin_model.cli.localisation [--weights DIR] [--data-dir DIR] [--split test] [--limit N]
[--reference]``: does Grad-CAM look at the lesion? The share of a split's images whose heatmap peak falls inside
the HAM10000 lesion box (``skin_model.evaluation.localisation``), saved to ``WEIGHTS/localisation_<split>.json``.

The maps are the app's: closed form from the served LiteRT model (its ``model.tflite`` must be built), without
TensorFlow. ``--reference`` computes them with tf-keras-vis on the Keras model instead (imports TensorFlow)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from skin_model.bundle import BundleFileError, LocalisationFigures, ModelIntegrityError, write_localisation
from skin_model.config import DEFAULT_BBOXES_CSV, DEFAULT_DATA_DIR, DEFAULT_WEIGHTS_DIR
from skin_model.evaluation.localisation import (LocalisationError, localise, read_boxes, reference_cams, served_cams,
                                                split_images)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skin_model.cli.localisation",
                                     description="Does Grad-CAM look at the lesion? Peak-in-lesion-box rates.")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR,
                        help=f"model bundle with split.csv (default {DEFAULT_WEIGHTS_DIR})")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"HAM10000 image folder, searched recursively (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--split", default="test", help="split of split.csv to use (default test)")
    parser.add_argument("--limit", type=int, default=0,
                        help="use a random sample of this many images of the split (0 = all)")
    parser.add_argument("--bboxes", type=Path, default=DEFAULT_BBOXES_CSV, help="lesion box CSV "
                        f"(default {DEFAULT_BBOXES_CSV})")
    parser.add_argument("--method", choices=("gradcam", "gradcam++"), default="gradcam",
                        help="saliency method (default gradcam)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    parser.add_argument("--reference", action="store_true",
                        help="compute the maps with tf-keras-vis on the Keras model (imports TensorFlow) instead "
                             "of the served closed form")
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error("--limit must be 0 or more")
    return args


def run(args: argparse.Namespace) -> tuple[LocalisationFigures, Path]:
    """Localise the split's images and save the figures in the bundle; (figures, where they went)."""
    from skin_model.data.dataset import find_image_files

    images = split_images(args.weights, args.split)
    if args.limit and args.limit < len(images):
        images = images.sample(n=args.limit, random_state=args.seed).reset_index(drop=True)
    boxes = read_boxes(args.bboxes)
    files = find_image_files(args.data_dir)
    source = reference_cams(args.weights) if args.reference else served_cams(args.weights)
    figures = localise(source, images, files, boxes, args.method, args.split)
    return figures, write_localisation(args.weights, figures)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        figures, path = run(args)
    except (LocalisationError, BundleFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModelIntegrityError as exc:
        print(f"error: cannot load the model from {args.weights}: {exc}", file=sys.stderr)
        return 2
    print(f"{figures.n_images} images: Grad-CAM peak inside the lesion box for "
          f"{figures.share_inside['predicted']:.1%} (predicted class) and {figures.share_inside['true']:.1%} "
          f"(true class); chance rate {figures.chance_rate:.1%}; {figures.seconds_per_image:.2f} s per image.\n"
          f"Saved to {path}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
