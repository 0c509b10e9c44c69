"""The labelled catalogue (metadata + file discovery) of one or more folders, the lesion-grouped split and
in-memory arrays (the tf.data pipeline is ``skin_model.data.pipeline``, augmentation ``skin_model.data.augment``).

A labelled folder is in HAM10000's layout: a metadata CSV (``HAM10000_metadata.csv`` or ``metadata.csv``) with
lesion_id, image_id, dx and, usually, ``dataset`` (the source: clinic, camera or archive), and the images
anywhere under it (the official ``HAM10000_images_part_1/2`` layout, Kaggle's, or ``../shared``'s
``images_*`` folders); when an image_id exists in several copies the one with the most pixels is used.
``load_sources`` pools several folders (HAM10000 and the ISIC Archive images of other clinics) into one
catalogue with one class list; a folder may hold fewer classes. A missing or unreadable image, an unknown
diagnosis or an image id found in two folders is reported by name.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold

from skin_model.data.imaging import InvalidImageError, load_image, to_model_array, unsquash
from skin_model.labels import CODES, class_index

log = logging.getLogger(__name__)

#: Metadata file names a labelled folder may use, in order of preference.
METADATA_NAMES = ("HAM10000_metadata.csv", "metadata.csv")
#: Catalogue columns: the source of an image (clinic, camera, archive) and the folder it was read from.
SOURCE_COLUMN = "dataset"
FOLDER_COLUMN = "folder"


@dataclass(frozen=True)
class Collection:
    """A published collection of labelled dermoscopy: the sources (``dataset`` values) it holds, its credit
    and licence (recorded in metadata.json and shown on the model card)."""

    name: str
    sources: tuple[str, ...]
    credit: str
    licence: str


#: The collections the project knows; a folder of other sources is credited as "see its SOURCES.md".
HAM10000 = Collection("HAM10000", ("rosendahl", "vidir_modern", "vidir_molemax", "vienna_dias"),
                      "Tschandl et al. 2018, doi:10.1038/sdata.2018.161 (ViDIR Group, Medical University of "
                      "Vienna; Cliff Rosendahl, Queensland)", "CC BY-NC-SA 4.0")
COLLECTIONS = (
    HAM10000,
    Collection("ISIC Archive", ("isic2017", "isic_archive"),
               "International Skin Imaging Collaboration; ISIC 2017 challenge: Codella et al., ISBI 2018, "
               "arXiv:1710.05006", "CC-0 (ISIC 2017 challenge) or CC BY-NC, per image"),
)

#: Sources whose published copies were resized to squares without keeping the aspect ratio, with the width /
#: height of most of their originals (../shared/data/isic_archive/SOURCES.md: ISIC originals are mostly 4:3
#: landscape). ``train.py --restore-aspect`` stretches them back (``imaging.unsquash``) before the centre crop.
SQUASHED_SOURCES = {"isic2017": 4 / 3, "isic_archive": 4 / 3}


def source_aspects(sources: Sequence[str]) -> tuple[float | None, ...]:
    """Per image, the aspect its source's copies lost (``SQUASHED_SOURCES``), None for the others."""
    return tuple(SQUASHED_SOURCES.get(str(s)) for s in sources)


def collection_of(source: str) -> Collection | None:
    """The known collection holding ``source``, or None."""
    return next((c for c in COLLECTIONS if source in c.sources), None)


def collections_named(sources: Sequence[str]) -> str:
    """The collections behind ``sources`` in a few words ("HAM10000 + ISIC Archive"); unknown sources by name."""
    names = [c.name for c in COLLECTIONS if set(sources) & set(c.sources)]
    return " + ".join(names + sorted(s for s in set(sources) if collection_of(s) is None)) or "?"
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


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header; None when unreadable (reported by name when it is loaded)."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:
        return None


def _pixel_count(path: Path) -> int:
    size = _header_size(path)
    return size[0] * size[1] if size else -1  # an unreadable copy is never preferred


def image_copies(paths: Sequence[Path]) -> dict[str, dict]:
    """What metadata.json records of the image files a model was trained on: per copy folder (``collection
    folder/subfolder``), the number of images and how many have each short side in pixels (the side of the
    centre square the model sees), read from the files' headers."""
    copies: dict[str, dict] = {}
    for path in map(Path, paths):
        entry = copies.setdefault(f"{path.parent.parent.name}/{path.parent.name}", {"images": 0, "short_sides": {}})
        entry["images"] += 1
        size = _header_size(path)
        side = str(min(size)) if size else "unknown"
        entry["short_sides"][side] = entry["short_sides"].get(side, 0) + 1
    return dict(sorted(copies.items(), key=lambda item: -item[1]["images"]))


def licence_text(sources: Sequence[str]) -> str:
    """The model's licence line for metadata.json: the licences of the collections it was trained on."""
    known = [c for c in COLLECTIONS if set(sources) & set(c.sources)]
    terms = " and ".join(f"{c.name} ({c.licence})" for c in known) or "data of unknown licence"
    return f"Model trained on {terms}: non-commercial, share-alike."


def load_catalogue(data_dir: Path, metadata_csv: Path | None = None) -> pd.DataFrame:
    """One folder's metadata with a ``path`` column for every image, a ``label`` index column, the ``folder``
    name, and the ``dataset`` (source) column filled with the folder name where the metadata has none.

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
    frame[FOLDER_COLUMN] = Path(data_dir).name
    if SOURCE_COLUMN not in frame.columns:
        frame[SOURCE_COLUMN] = Path(data_dir).name
    frame[SOURCE_COLUMN] = frame[SOURCE_COLUMN].fillna(Path(data_dir).name)
    log.info("Catalogue: %d images, %d lesions from %s", len(frame), frame["lesion_id"].nunique(), data_dir)
    return frame


def load_sources(data_dirs: Sequence[Path]) -> pd.DataFrame:
    """The catalogues of several labelled folders pooled into one (``load_catalogue`` each, in order).

    Raises DatasetError for a folder named twice (by its name), an image id found in two folders, or a lesion
    id shared by two folders (each folder is split on its own, so a lesion must stay in one).
    """
    data_dirs = [Path(d) for d in data_dirs]
    names = [d.name for d in data_dirs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetError(f"Folder name(s) {', '.join(twice)} given twice: each labelled folder must be named once")
    frames = [load_catalogue(d) for d in data_dirs]
    if len(frames) == 1:
        return frames[0]
    pooled = pd.concat(frames, ignore_index=True)
    for column in ("image_id", "lesion_id"):
        folders = pooled.groupby(column)[FOLDER_COLUMN].nunique()
        clash = sorted(folders[folders > 1].index)
        if clash:
            raise DatasetError(f"{len(clash)} {column}(s) found in more than one folder "
                               f"({', '.join(names)}): {_names_preview(clash)}")
    log.info("Pooled catalogue: %d images from %s", len(pooled), ", ".join(
        f"{name} ({n})" for name, n in pooled[SOURCE_COLUMN].value_counts().sort_index().items()))
    return pooled


def find_metadata(data_dir: Path) -> Path:
    """A labelled folder's metadata CSV: the first of ``METADATA_NAMES`` found directly in ``data_dir``, else
    the first anywhere below it."""
    for name in METADATA_NAMES:
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    for name in METADATA_NAMES:
        found = sorted(Path(data_dir).rglob(name))
        if found:
            return found[0]
    raise DatasetError(f"No {' or '.join(METADATA_NAMES)} found under {data_dir}")


def describe_sources(frame: pd.DataFrame, data_dirs: Sequence[Path]) -> list[dict]:
    """What metadata.json records of each folder of a (split) catalogue: its name, a fingerprint of its metadata
    CSV, and per source the collection, credit, licence and images per class and split."""
    records = []
    for data_dir in map(Path, data_dirs):
        rows = frame[frame[FOLDER_COLUMN] == data_dir.name]
        sources = []
        for source, part in rows.groupby(SOURCE_COLUMN):
            collection = collection_of(str(source))
            by_split = part.groupby("split") if "split" in part.columns else [("all", part)]
            sources.append({
                "source": str(source), "collection": collection.name if collection else data_dir.name,
                "credit": collection.credit if collection else f"see {data_dir.name}/SOURCES.md",
                "licence": collection.licence if collection else f"see {data_dir.name}/SOURCES.md",
                "counts": {str(split): {c: int(n) for c, n in group["dx"].value_counts().reindex(CODES, fill_value=0)
                                        .items() if n} for split, group in by_split}})
        metadata_csv = find_metadata(data_dir)
        records.append({"folder": data_dir.name, "metadata_file": metadata_csv.name,
                        "metadata_sha256": hashlib.sha256(metadata_csv.read_bytes()).hexdigest(),
                        "images": len(rows), "sources": sources})
    return records


def split_by_lesion(frame: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.15,
                    seed: int = 42) -> pd.DataFrame:
    """Add a ``split`` column (train/val/test): stratified by diagnosis, grouped by ``lesion_id`` so that
    every image of a lesion lands in the same split. Each folder of a pooled catalogue is split on its own,
    so every folder is in proportion in validation and test, and adding a folder moves no image of another
    (HAM10000's split is the same with or without the ISIC folder)."""
    if FOLDER_COLUMN in frame.columns and frame[FOLDER_COLUMN].nunique() > 1:
        parts = [split_by_lesion(part.reset_index(drop=True), val_fraction, test_fraction, seed)
                 for _, part in frame.groupby(FOLDER_COLUMN, sort=False)]
        return pd.concat(parts, ignore_index=True)
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
    if frame["lesion_id"].nunique() < n_splits:
        where = ", ".join(sorted(frame[FOLDER_COLUMN].unique())) if FOLDER_COLUMN in frame.columns else "the data"
        raise DatasetError(f"{where}: {frame['lesion_id'].nunique()} lesion(s) are too few to set {fraction:.0%} "
                           f"aside by lesion (at least {n_splits} needed); add images or leave the folder out")
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


def load_arrays(paths: list[Path], size: int, workers: int = 4, progress: bool = True,
                aspects: Sequence[float | None] | None = None) -> np.ndarray:
    """Decode and preprocess images into a uint8 (N, size, size, 3) array (the serving path); with ``aspects``,
    each squashed image is first stretched back to its aspect (``imaging.unsquash``).

    Raises DatasetError naming every file that could not be read.
    """
    def one(path: Path, aspect: float | None) -> np.ndarray | InvalidImageError:
        try:
            return to_model_array(unsquash(load_image(path), aspect), size)
        except InvalidImageError as exc:
            return exc

    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(one, paths, aspects if aspects is not None else [None] * len(paths))
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(paths), desc="Loading images", unit="img", mininterval=5)
        results = list(results)
    errors = [str(r) for r in results if isinstance(r, InvalidImageError)]
    if errors:
        raise DatasetError(f"{len(errors)} image(s) could not be read: {_names_preview(errors)}")
    return np.stack(results) if results else np.zeros((0, size, size, 3), np.uint8)
