"""Lesion scale probe: how much of the frame a lesion fills, per source and diagnosis, and what that does to a
held-out-source model.

    python benchmarks/lesion_scale_probe.py REPORT.json [REPORT.json ...] [--weights RUN_DIR] [--data-dir DIR]

The share of the 200x150 frame that each image's lesion box covers (``lesion_bboxes_200x150.csv``) is a
property of the clinic's dermatoscope and habits as much as of the lesion. For every held-out report given
(``evaluations/heldout_*.json``, per-image predictions), it prints the median share per source for melanomas
and naevi, and the report's melanoma sensitivity and melanoma-against-naevus AUC per quartile of the share.
With ``--weights`` (the run folder of a held-out model: its bundle and ``split.csv``) it also re-frames every
image around its lesion box so that the lesion covers a fixed share of the input (an oracle framing that
serving cannot do without a lesion detector) and scores the held-out source and the run's validation split.
Inference only; writes ``benchmarks/results/lesion_scale.json``. A minute or two on 2 cores with ``--weights``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skin_model.evaluation.compare import MEL, NV, FIGURES  # noqa: E402
from skin_model.config import DEFAULT_BBOXES_CSV, DEFAULT_DATA_DIR  # noqa: E402
from skin_model.labels import CODES  # noqa: E402
from skin_model.evaluation.localisation import FRAME_HEIGHT, FRAME_WIDTH, Box, read_boxes  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "lesion_scale.json"
BOXES = DEFAULT_BBOXES_CSV.name  # looked for in --data-dir
SHARES = (0.25, 0.4, 0.6)  # lesion box area / input area for the oracle framing

log = logging.getLogger("lesion_scale_probe")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, nargs="+", help="held-out evaluation reports (per-image predictions)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="a held-out run's folder (bundle + split.csv) for the oracle framing probe")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def lesion_shares(data_dir: Path, boxes: dict[str, Box]) -> pd.DataFrame:
    """HAM10000 metadata indexed by image_id with ``share``: lesion box area over the 200x150 frame."""
    meta = pd.read_csv(data_dir / "HAM10000_metadata.csv").set_index("image_id")
    meta["share"] = meta.index.map(lambda i: boxes[i].area / (FRAME_WIDTH * FRAME_HEIGHT))
    return meta


def share_table(meta: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Median lesion share per source for melanomas and naevi."""
    subset = meta[meta["dx"].isin([CODES[MEL], CODES[NV]])]
    table = subset.groupby(["dataset", "dx"])["share"].median().unstack()
    return {source: {dx: round(float(v), 3) for dx, v in row.items()} for source, row in table.iterrows()}


def by_quartile(report: Path, meta: pd.DataFrame) -> list[dict[str, float]]:
    """Melanoma sensitivity and melanoma-against-naevus AUC of a report per quartile of the melanomas' share."""
    from sklearn.metrics import roc_auc_score

    predictions = json.loads(report.read_text())["predictions"]
    frame = pd.DataFrame({"label": [CODES.index(p["label"]) for p in predictions],
                          "probs": [np.asarray(p["probs"]) for p in predictions]},
                         index=[p["image_id"] for p in predictions]).join(meta["share"])
    frame = frame[frame["label"].isin([MEL, NV])]
    edges = np.quantile(frame.loc[frame["label"] == MEL, "share"], [0, 0.25, 0.5, 0.75, 1])
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        part = frame[(frame["share"] >= low) & (frame["share"] <= high)]
        probs = np.stack(part["probs"].to_numpy())
        is_mel = (part["label"] == MEL).to_numpy()
        rows.append({"share_from": round(float(low), 3), "share_to": round(float(high), 3),
                     "melanomas": int(is_mel.sum()), "naevi": int((~is_mel).sum()),
                     "melanoma_sensitivity": round(float((probs[is_mel].argmax(axis=1) == MEL).mean()), 3),
                     "melanoma_vs_naevus_auc": round(float(roc_auc_score(is_mel, probs[:, MEL])), 3)})
    return rows


def framed(image: np.ndarray, box: Box, share: float, size: int) -> np.ndarray:
    """A square crop centred on the lesion box whose area is the box's over ``share`` (reflect-padded where it
    leaves the frame), resized to ``size``: the lesion fills about ``share`` of the input."""
    from PIL import Image

    side = max(32, int(round(np.sqrt(box.area / share))))
    padded = np.pad(image, ((side, side), (side, side), (0, 0)), mode="reflect")
    y0 = int(round((box.top + box.bottom) / 2 - side / 2)) + side
    x0 = int(round((box.left + box.right) / 2 - side / 2)) + side
    crop = padded[y0:y0 + side, x0:x0 + side]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))


def framing_probe(run: Path, meta: pd.DataFrame, boxes: dict[str, Box], held_out: list[str],
                  data_dir: Path) -> dict[str, dict]:
    """The protocol's figures of the run's network (LiteRT, single view) on its held-out source(s) and its
    validation split, as served (centre square of the frame) and framed around the lesion box at ``SHARES``."""
    from PIL import Image

    from skin_model.bundle.split import read_split
    from skin_model.data.imaging import scale_pixels, to_model_array
    from skin_model.serving.lite import LitePredictor

    predictor = LitePredictor.from_dir(run)
    sets = {"held_out": meta.index[meta["dataset"].isin(held_out)].tolist(),
            "validation": read_split(run, "val")["image_id"].tolist()}
    out: dict[str, dict] = {}
    for name, ids in sets.items():
        images = [np.asarray(Image.open(data_dir / "images_200x150" / f"{i}.jpg").convert("RGB")) for i in ids]
        labels = np.array([CODES.index(meta.loc[i, "dx"]) for i in ids])
        out[name] = {}
        for share in (None, *SHARES):
            batch = np.stack([to_model_array(Image.fromarray(im), predictor.input_size) if share is None else
                              framed(im, boxes[i], share, predictor.input_size) for im, i in zip(images, ids)])
            probs = predictor.probabilities_of(scale_pixels(batch.astype(np.float32)))
            key = "as served" if share is None else f"lesion share {share}"
            out[name][key] = {f: round(fn(labels, probs), 3) for f, fn in FIGURES.items()}
            log.info("%s, %s: %s", name, key, out[name][key])
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    boxes = read_boxes(args.data_dir / BOXES)
    meta = lesion_shares(args.data_dir, boxes)
    result: dict = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "median_lesion_share": share_table(meta), "reports": {}}
    print("Median lesion share of the frame (melanoma / naevus):")
    for source, row in result["median_lesion_share"].items():
        print(f"  {source:14s} {row.get(CODES[MEL], float('nan')):.2f} / {row.get(CODES[NV], float('nan')):.2f}")
    for report in args.reports:
        rows = by_quartile(report, meta)
        result["reports"][report.name] = rows
        print(f"{report.name}: melanoma sensitivity / melanoma-vs-naevus AUC by quartile of the melanomas' share")
        for row in rows:
            print(f"  share {row['share_from']:.2f}-{row['share_to']:.2f} ({row['melanomas']} mel, {row['naevi']} nv): "
                  f"{row['melanoma_sensitivity']:.3f} / {row['melanoma_vs_naevus_auc']:.3f}")
    if args.weights is not None:
        held_out = json.loads(args.reports[0].read_text())["dataset"]["sources"]
        result["framing"] = {"weights": args.weights.name, "held_out": held_out,
                             **framing_probe(args.weights, meta, boxes, held_out, args.data_dir)}
        for name in ("held_out", "validation"):
            for key, figures in result["framing"][name].items():
                print(f"{name:10s} {key:17s} " + "  ".join(f"{f} {v:.3f}" for f, v in figures.items()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(f"Written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
