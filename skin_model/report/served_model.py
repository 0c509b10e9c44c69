"""The served model's ``metadata.json`` as the report page reads it: the model and its "unsure" threshold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skin_model.bundle import BundleFileError, ModelMetadata, is_rate, metadata_from_file


def served_metadata(metadata_json: Path) -> ModelMetadata:
    """The served model's ``metadata.json``; BundleFileError naming the problem otherwise."""
    return metadata_from_file(Path(metadata_json))


@dataclass(frozen=True)
class UnsureThreshold:
    """The app's "unsure" threshold, read from the served model's ``metadata.json``."""

    value: float
    model_version: str
    source: Path


def unsure_threshold(metadata_json: Path) -> UnsureThreshold:
    """``ModelMetadata.unsure_threshold`` and the model version; BundleFileError naming the problem otherwise."""
    path = Path(metadata_json)
    metadata = served_metadata(path)
    if not is_rate(metadata.unsure_threshold):
        raise BundleFileError(path, "'unsure_threshold' must be a number between 0 and 1, "
                                f"found {metadata.unsure_threshold!r}")
    return UnsureThreshold(float(metadata.unsure_threshold), str(metadata.version), path)
