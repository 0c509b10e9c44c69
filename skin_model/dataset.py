"""HAM10000 catalogue (metadata + file discovery), lesion-grouped split and in-memory arrays (the tf.data
pipeline is ``skin_model.pipeline``, augmentation ``skin_model.augment``).

Images are found anywhere under the data folder (the official ``HAM10000_images_part_1/2`` layout,
Kaggle's, or ``../shared/data/ham10000``'s ``images_*`` folders); when an image_id exists in several
copies the one with the most pixels is used. A missing or unreadable image is reported by name.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold

from skin_model.imaging import InvalidImageError, load_image, to_model_array
from skin_model.labels import CODES, class_index

log = logging.getLogger(__name__)

METADATA_NAME = "HAM10000_metadata.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # HAM10000 copies; evaluate.py passes every uploadable format
SPLITS = ("train", "val", "test")


class DatasetError(RuntimeError):
    """The dataset on disk is incomplete or unreadable; the message names the files."""


def _names_preview(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def find_image_files(data_dir: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """Map image_id (file stem) to the highest-resolution file for it anywhere under ``data_dir``."""
    candidates: dict[str, list[Path]] = {}
    for path in sorted(data_dir.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file():
            candidates.setdefault(path.stem, []).append(path)
    best: dict[str, Path] = {}
    for image_id, paths in candidates.items():
        best[image_id] = paths[0] if len(paths) == 1 else max(paths, key=_pixel_count)
    return best


def _pixel_count(path: Path) -> int:
    try:
        with Image.open(path) as im:  # reads the header only
            return im.width * im.height
    except Exception:  # an unreadable copy is never preferred; it is reported when loaded if chosen
        return -1


def load_catalogue(data_dir: Path, metadata_csv: Path | None = None) -> pd.DataFrame:
    """HAM10000 metadata with a ``path`` column for every image and a ``label`` index column.

    Raises DatasetError if the metadata is missing or any image_id has no file.
    """
    metadata_csv = metadata_csv or find_metadata(data_dir)
    frame = pd.read_csv(metadata_csv)
    missing_cols = {"lesion_id", "image_id", "dx"} - set(frame.columns)
    if missing_cols:
        raise DatasetError(f"{metadata_csv} lacks column(s) {sorted(missing_cols)}")
    unknown = sorted(set(frame["dx"]) - set(CODES))
    if unknown:
        raise DatasetError(f"{metadata_csv} has unknown diagnosis codes {unknown}")
    files = find_image_files(data_dir)
    frame["path"] = frame["image_id"].map(files)
    missing = frame.loc[frame["path"].isna(), "image_id"].tolist()
    if missing:
        raise DatasetError(f"{len(missing)} image(s) listed in {metadata_csv.name} have no file under "
                           f"{data_dir}: {_names_preview(missing)}")
    frame["label"] = frame["dx"].map(class_index).astype(int)
    log.info("Catalogue: %d images, %d lesions from %s", len(frame), frame["lesion_id"].nunique(), data_dir)
    return frame


def find_metadata(data_dir: Path) -> Path:
    """The first HAM10000_metadata.csv anywhere under ``data_dir``."""
    found = sorted(data_dir.rglob(METADATA_NAME))
    if not found:
        raise DatasetError(f"No {METADATA_NAME} found under {data_dir}")
    return found[0]


def split_by_lesion(frame: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.15,
                    seed: int = 42) -> pd.DataFrame:
    """Add a ``split`` column (train/val/test): stratified by diagnosis, grouped by ``lesion_id`` so that
    every image of a lesion lands in the same split."""
    frame = frame.copy()
    frame["split"] = "train"
    test_idx = _one_fold(frame, test_fraction, seed)
    frame.loc[frame.index[test_idx], "split"] = "test"
    rest = frame[frame["split"] == "train"]
    val_idx = _one_fold(rest, val_fraction / (1.0 - test_fraction), seed + 1)
    frame.loc[rest.index[val_idx], "split"] = "val"
    return frame


def _one_fold(frame: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    n_splits = max(2, round(1.0 / fraction))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held_out = next(folds.split(frame, frame["label"], groups=frame["lesion_id"]))
    return held_out


def subsample(frame: pd.DataFrame, max_images: int, seed: int = 42) -> pd.DataFrame:
    """A class-stratified subset of whole lesions with about ``max_images`` images (for quick runs)."""
    if max_images >= len(frame):
        return frame
    rng = np.random.default_rng(seed)
    per_class = max(1, max_images // len(CODES))
    keep: list[str] = []
    for _, group in frame.groupby("dx"):
        lesions = group["lesion_id"].unique()
        rng.shuffle(lesions)
        keep.extend(lesions[: max(3, per_class)])
    return frame[frame["lesion_id"].isin(keep)].reset_index(drop=True)


def load_arrays(paths: list[Path], size: int, workers: int = 4, progress: bool = True) -> np.ndarray:
    """Decode and preprocess images into a uint8 (N, size, size, 3) array (the serving path).

    Raises DatasetError naming every file that could not be read.
    """
    def one(path: Path) -> np.ndarray | InvalidImageError:
        try:
            return to_model_array(load_image(path), size)
        except InvalidImageError as exc:
            return exc

    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(one, paths)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(paths), desc="Loading images", unit="img", mininterval=5)
        results = list(results)
    errors = [str(r) for r in results if isinstance(r, InvalidImageError)]
    if errors:
        raise DatasetError(f"{len(errors)} image(s) could not be read: {_names_preview(errors)}")
    return np.stack(results) if results else np.zeros((0, size, size, 3), np.uint8)
