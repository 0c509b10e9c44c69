"""Does Grad-CAM point at the lesion? The share of images whose heatmap peak falls inside the lesion box.

Command line: ``python -m skin_model.cli.localisation [--weights DIR] [--data-dir DIR] [--split test]
[--reference]``.

For each image of the split (ids from ``WEIGHTS/split.csv``, files from the data folder via
``dataset.find_image_files``) the model's Grad-CAM map is computed for the predicted class and for the true class,
as the app computes it (``ServedCams``: the LiteRT model and the closed form of ``serving.explain``) or, with
``--reference``, by tf-keras-vis on the Keras model (``ReferenceCams``); the two give the same figures. The map's
peak, in model-input pixels, is mapped back to the full 200x150 frame of ``lesion_bboxes_200x150.csv`` and tested
against the image's box. The model sees the centre square of the frame (``imaging.to_model_array``), which is the
centre 150x150 of a 200x150 frame; ``images_crop224`` copies are that same square, so the mapping holds for every
copy.

The boxes' derivation is undocumented, there is one box per image, and for large lesions the box covers
most of the frame. The *chance rate* is therefore reported too: the mean share of the model's crop covered
by the box, i.e. how often a peak placed uniformly at random would land inside it.

The result is a ``bundle.LocalisationFigures`` stored in the bundle's ``localisation_<split>.json``
(independent of the evaluation reports, so it can be computed in any order); the report page only displays it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from skin_model.bundle import LocalisationFigures, read_split
from skin_model.labels import CODES, class_index
from skin_model.serving.explain import METHODS, Explainer

if TYPE_CHECKING:
    from skin_model.serving.explain_reference import ReferenceExplainer
    from skin_model.serving.inference import Predictor
    from skin_model.serving.lite import LitePredictor

log = logging.getLogger(__name__)

#: The coordinate frame of the box file: images_200x150 pixels.
FRAME_WIDTH, FRAME_HEIGHT = 200, 150
TARGETS = ("predicted", "true")
FRAME = f"{FRAME_WIDTH}x{FRAME_HEIGHT} full frame; the model sees its centre square"
BOX_SOURCE = ("lesion_bboxes_200x150.csv (../shared/data/ham10000; from the public repository "
              "mmalek06/bounding-box-detection-ham1000, derivation not documented)")
BOX_LIMITS = ("One axis-aligned box per image in 200x150 full-frame pixel coordinates; how the boxes were "
              "made is not documented; a box cannot follow the lesion's outline, and for large lesions it "
              "covers most of the frame, so compare the share inside the box with the chance rate.")


class LocalisationError(ValueError):
    """The split, box file or report cannot be used; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in continuous full-frame pixel coordinates (edges, not pixel indices)."""

    top: float
    bottom: float
    left: float
    right: float

    def contains(self, x: float, y: float) -> bool:
        """True when the point (x, y) lies inside the box or on its edge."""
        return self.left <= x <= self.right and self.top <= y <= self.bottom

    @property
    def area(self) -> float:
        return max(self.right - self.left, 0.0) * max(self.bottom - self.top, 0.0)

    def intersection(self, other: "Box") -> "Box":
        return Box(max(self.top, other.top), min(self.bottom, other.bottom),
                   max(self.left, other.left), min(self.right, other.right))


@dataclass(frozen=True)
class CentreCrop:
    """Where the model's centre square sits in a full frame of ``frame_width`` x ``frame_height`` pixels."""

    frame_width: float = FRAME_WIDTH
    frame_height: float = FRAME_HEIGHT

    @property
    def side(self) -> float:
        return min(self.frame_width, self.frame_height)

    @property
    def box(self) -> Box:
        left = (self.frame_width - self.side) / 2.0
        top = (self.frame_height - self.side) / 2.0
        return Box(top=top, bottom=top + self.side, left=left, right=left + self.side)

    def to_frame(self, row: float, col: float, input_size: int) -> tuple[float, float]:
        """Full-frame (x, y) of the centre of model-input pixel (row, col) of an ``input_size`` square."""
        scale = self.side / input_size
        return self.box.left + (col + 0.5) * scale, self.box.top + (row + 0.5) * scale

    def box_share(self, box: Box) -> float:
        """Share of the crop's area covered by ``box`` (the chance that a random crop point is inside)."""
        return box.intersection(self.box).area / self.box.area


def heatmap_peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(row, col) of the heatmap's maximum (the first one in row-major order on ties)."""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(row), int(col)


def peak_inside_box(heatmap: np.ndarray, box: Box, crop: CentreCrop = CentreCrop()) -> tuple[bool, tuple[float, float]]:
    """Whether the square heatmap's peak, mapped to full-frame coordinates, lies in ``box``; and that point."""
    if heatmap.ndim != 2 or heatmap.shape[0] != heatmap.shape[1]:
        raise ValueError(f"Expected a square 2-D heatmap, got shape {heatmap.shape}")
    row, col = heatmap_peak(heatmap)
    x, y = crop.to_frame(row, col, heatmap.shape[0])
    return box.contains(x, y), (x, y)


# ---------------------------------------------------------------------------------------------- inputs
def read_boxes(bboxes_csv: Path) -> dict[str, Box]:
    """image_id -> Box from a CSV with columns image_id, top, bottom, left, right."""
    bboxes_csv = Path(bboxes_csv)
    if not bboxes_csv.is_file():
        raise LocalisationError(f"Box file {bboxes_csv} does not exist")
    table = pd.read_csv(bboxes_csv)
    missing = {"image_id", "top", "bottom", "left", "right"} - set(table.columns)
    if missing:
        raise LocalisationError(f"{bboxes_csv.name} lacks column(s) {sorted(missing)}")
    return {row.image_id: Box(float(row.top), float(row.bottom), float(row.left), float(row.right))
            for row in table.itertuples()}


def split_images(weights_dir_or_split_csv: Path, split: str) -> pd.DataFrame:
    """image_id and dx of the images of ``split`` in train.py's split.csv (``bundle.BundleFileError``
    naming the problem)."""
    return read_split(weights_dir_or_split_csv, split, columns=("image_id", "dx", "split"))[["image_id", "dx"]]


# ---------------------------------------------------------------------------------------------- heatmaps
#: A class index -> that class's (S, S) heatmap of one image.
HeatmapOf = Callable[[int], np.ndarray]


class CamSource(Protocol):
    """Predicts one image (single view) and draws its heatmap for any class."""

    name: str
    version: str | None

    def analyse(self, image: Image.Image, method: str) -> tuple[np.ndarray, HeatmapOf]:
        """(calibrated (7,) probabilities, class index -> heatmap)."""
        ...


@dataclass
class ServedCams:
    """As the app serves: probabilities and feature map from one LiteRT call (``lite.LitePredictor``), the
    maps in closed form (``explain.Explainer``); no TensorFlow."""

    predictor: LitePredictor
    name: str = "closed form from the served LiteRT model"
    explainer: Explainer = field(init=False)

    def __post_init__(self) -> None:
        self.explainer = Explainer(self.predictor.head, self.predictor.input_size)

    @property
    def version(self) -> str | None:
        return self.predictor.metadata.version

    def analyse(self, image: Image.Image, method: str) -> tuple[np.ndarray, HeatmapOf]:
        out = self.predictor.run(self.predictor.model_input([image]), feature_maps=True)
        feature_map = out.feature_maps[0]
        return out.probabilities[0], lambda index: self.explainer.heatmap(feature_map, index, method)


@dataclass
class ReferenceCams:
    """The reference: the Keras model (``inference.Predictor``) and tf-keras-vis on it
    (``explain_reference.ReferenceExplainer``); imports TensorFlow."""

    predictor: Predictor
    explainer: ReferenceExplainer
    name: str = "tf-keras-vis on the Keras model"

    @property
    def version(self) -> str | None:
        return self.predictor.metadata.version

    def analyse(self, image: Image.Image, method: str) -> tuple[np.ndarray, HeatmapOf]:
        model_input = self.predictor.model_input([image])
        probabilities = self.predictor.probabilities_of(model_input)[0]
        return probabilities, lambda index: self.explainer.heatmap(model_input, index, method)


def served_cams(weights_dir: Path) -> ServedCams:
    """``ServedCams`` of a bundle (``ModelIntegrityError`` when its served copy is missing or stale)."""
    from skin_model.serving.lite import LitePredictor

    return ServedCams(LitePredictor.from_dir(Path(weights_dir)))


def reference_cams(weights_dir: Path) -> ReferenceCams:
    """``ReferenceCams`` of a bundle's sha256-checked Keras model (imports TensorFlow and tf-keras-vis)."""
    from skin_model.serving.explain_reference import ReferenceExplainer
    from skin_model.serving.inference import Predictor

    predictor = Predictor.from_dir(Path(weights_dir))
    return ReferenceCams(predictor, ReferenceExplainer(predictor.model))


# ---------------------------------------------------------------------------------------------- result
def localise(source: CamSource, images: pd.DataFrame, files: dict[str, Path], boxes: dict[str, Box],
             method: str = "gradcam", split: str = "test") -> LocalisationFigures:
    """Grad-CAM peak-in-box for every row of ``images`` (image_id, dx) that has a file and a box, with the
    predictions and heatmaps of ``source`` (``ServedCams`` or ``ReferenceCams``)."""
    from skin_model.data.imaging import InvalidImageError, load_image

    crop = CentreCrop()
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    started = time.perf_counter()
    for image_id, dx in zip(images["image_id"], images["dx"]):
        if image_id not in files or image_id not in boxes:
            skipped.append(image_id)
            continue
        try:
            image = load_image(files[image_id])
        except InvalidImageError as exc:
            log.warning("Skipping unreadable image %s", exc)
            skipped.append(image_id)
            continue
        probs, heatmap_of = source.analyse(image, method)
        classes = {"predicted": int(np.argmax(probs)), "true": class_index(dx)}
        box = boxes[image_id]
        row: dict[str, Any] = {"image_id": image_id, "true": dx, "predicted": CODES[classes["predicted"]],
                               "box_share": round(crop.box_share(box), 4)}
        heatmaps: dict[int, np.ndarray] = {}
        for target, index in classes.items():
            if index not in heatmaps:
                heatmaps[index] = heatmap_of(index)
            inside, (x, y) = peak_inside_box(heatmaps[index], box, crop)
            row[f"inside_{target}"] = inside
            row[f"peak_{target}"] = [round(x, 2), round(y, 2)]
        rows.append(row)
        if len(rows) % 50 == 0:
            log.info("Localised %d of %d images", len(rows), len(images))
    elapsed = time.perf_counter() - started
    if skipped:
        log.warning("%d image(s) without a file, a box or readable pixels were skipped: %s", len(skipped),
                    ", ".join(skipped[:20]))
    if not rows:
        raise LocalisationError("No image of the split has both a file and a lesion box")
    return LocalisationFigures(
        method=f"{METHODS[method]} ({source.name}) on layer out_relu; peak = argmax of the map at the model's "
               "input size, mapped to full-frame coordinates; targets: predicted class and true class. The map "
               "is upsampled from the backbone's coarse feature grid (input size / 32 cells a side), so peaks "
               "fall on a coarse grid of positions",
        split=split, n_images=len(rows), box_source=BOX_SOURCE, box_limits=BOX_LIMITS, frame=FRAME,
        share_inside={t: float(np.mean([r[f"inside_{t}"] for r in rows])) for t in TARGETS},
        chance_rate=float(np.mean([r["box_share"] for r in rows])),
        seconds_per_image=round(elapsed / len(rows), 4),
        model_version=source.version,
        images=rows)
