"""What the app can say about a HAM10000 sample image: its reference diagnosis and its split for the served
model (a sample from the training split was learnt from, so its result says little)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from skin_model.bundle import read_split
from skin_model.labels import by_code

SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class SampleReference:
    """One sample's reference diagnosis (HAM10000 ``dx``, how it was confirmed) and split (None if unknown)."""

    image_id: str
    dx: str
    dx_type: str
    split: str | None

    @property
    def split_text(self) -> str:
        if self.split is None:
            return "split unknown"
        return f"{SPLIT_NAMES.get(self.split, self.split)} split"

    @property
    def in_training(self) -> bool:
        return self.split == "train"

    @property
    def label(self) -> str:
        """Short text for a picker: reference code and split, e.g. "nv, training split"."""
        return f"{self.dx}, {self.split_text}"

    def sentence(self) -> str:
        """The reference diagnosis and split in one markdown sentence."""
        text = (f"Reference diagnosis of this HAM10000 sample: **{by_code(self.dx).name}** (`{self.dx}`, "
                f"confirmed by {self.dx_type}); {self.split_text} of this model.")
        if self.in_training:
            text += " The model was trained on this image, so its result here says little about new images."
        return text


def sample_references(split_csv: Path, metadata_csv: Path) -> dict[str, SampleReference]:
    """image_id -> SampleReference: from the bundle's ``split.csv`` (which has dx, dx_type and split), else
    from HAM10000_metadata.csv without splits; empty when neither file exists."""
    if Path(split_csv).is_file():
        table = read_split(split_csv, columns=("image_id", "dx", "dx_type", "split"))
    elif Path(metadata_csv).is_file():
        table = pd.read_csv(metadata_csv, usecols=["image_id", "dx", "dx_type"]).assign(split=None)
    else:
        return {}
    return {row.image_id: SampleReference(row.image_id, row.dx, row.dx_type,
                                          row.split if isinstance(row.split, str) else None)
            for row in table.itertuples()}
