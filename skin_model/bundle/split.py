"""``split.csv``: train.py's lesion-grouped split (one row per image: image_id, lesion_id, dx, split and
the catalogue's other columns), and its one reader and writer."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from skin_model.bundle.files import SPLIT_FILE, BundleFileError

#: Columns every split.csv has.
SPLIT_COLUMNS = ("image_id", "lesion_id", "dx", "split")


def split_path(weights_dir_or_file: Path) -> Path:
    """``split.csv`` of a bundle folder (or the file itself when given one)."""
    path = Path(weights_dir_or_file)
    return path / SPLIT_FILE if path.is_dir() else path


def write_split(out_dir: Path, table: pd.DataFrame) -> Path:
    """Write ``split.csv`` into a bundle folder."""
    missing = set(SPLIT_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"A split needs column(s) {sorted(missing)}")
    path = Path(out_dir) / SPLIT_FILE
    table.to_csv(path, index=False)
    return path


def read_split(weights_dir_or_file: Path, split: str | None = None,
               columns: Iterable[str] = SPLIT_COLUMNS) -> pd.DataFrame:
    """The rows of ``split.csv`` (all, or those of ``split``) as strings, with at least ``columns``.

    BundleFileError naming the problem: missing, unreadable, missing columns, or no image in ``split``.
    """
    path = split_path(weights_dir_or_file)
    if not path.is_file():
        raise BundleFileError(path, "the file does not exist (train.py writes it next to the model)")
    try:
        table = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise BundleFileError(path, f"not a readable CSV file ({exc})") from None
    missing = set(columns) - set(table.columns)
    if missing:
        raise BundleFileError(path, f"missing column(s) {', '.join(sorted(missing))}")
    if split is None:
        return table
    chosen = table[table["split"] == split].reset_index(drop=True)
    if chosen.empty:
        raise BundleFileError(path, f"no image in split {split!r} "
                                    f"(splits present: {sorted(table['split'].dropna().unique())})")
    return chosen
