"""The data-split audit: images and lesions per class and split in train.py's ``split.csv``, and the
lesions found in more than one split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from skin_model.bundle import read_split
from skin_model.labels import CODES


@dataclass(frozen=True)
class SplitAudit:
    """Images and lesions per class per split, and the lesions found in more than one split."""

    images: pd.DataFrame  # index: class code (+ "total"), columns: splits
    lesions: pd.DataFrame
    crossing_lesions: tuple[str, ...]
    n_images: int
    n_lesions: int

    @property
    def passed(self) -> bool:
        """True when no lesion has images in two different splits."""
        return not self.crossing_lesions


def split_audit(split_csv: Path) -> SplitAudit:
    """Count images and lesions per class and split in train.py's ``split.csv`` and check that every
    lesion lies in one split only."""
    table = read_split(split_csv)
    splits = [s for s in ("train", "val", "test") if s in set(table["split"])] + \
        sorted(set(table["split"]) - {"train", "val", "test"})
    images = _per_class_per_split(table.groupby(["dx", "split"])["image_id"].nunique(), splits)
    lesions = _per_class_per_split(table.groupby(["dx", "split"])["lesion_id"].nunique(), splits)
    images.loc["total"] = table.groupby("split")["image_id"].nunique().reindex(splits, fill_value=0)
    lesions.loc["total"] = table.groupby("split")["lesion_id"].nunique().reindex(splits, fill_value=0)
    per_lesion = table.groupby("lesion_id")["split"].nunique()
    return SplitAudit(images=images, lesions=lesions,
                      crossing_lesions=tuple(sorted(per_lesion[per_lesion > 1].index)),
                      n_images=int(table["image_id"].nunique()), n_lesions=int(table["lesion_id"].nunique()))


def _per_class_per_split(series: pd.Series, splits: list[str]) -> pd.DataFrame:
    frame = series.unstack(fill_value=0).reindex(index=list(CODES), columns=splits, fill_value=0)
    return frame.astype(int)
