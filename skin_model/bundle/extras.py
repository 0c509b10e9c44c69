"""Results computed after training, each in its own file of the bundle with one schema shared by its
writer and its readers, so they can be (re)computed in any order:

- ``ood_figures.json``: the out-of-distribution gate's pass and reject rates (``OodFigures``, written by
  ``python -m skin_model.cli.ood measure``);
- ``localisation_<split>.json``: whether Grad-CAM peaks fall inside the lesion boxes (``LocalisationFigures``,
  written by ``python -m skin_model.cli.localisation``).

A reader returns None when the file is absent and raises ``BundleFileError`` naming the problem when it is
incomplete, malformed or out of range.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skin_model.bundle.files import OOD_FIGURES_FILE, BundleFileError, localisation_file, read_json, write_json


def is_rate(value: Any) -> bool:
    """A finite number between 0 and 1 (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0.0 <= value <= 1.0


# ---------------------------------------------------------------------------------------------- OOD gate
@dataclass(frozen=True)
class OodCategory:
    """Non-dermoscopic images of one kind and how many of them the gate rejected."""

    name: str
    n: int
    rejected: int

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.n


@dataclass(frozen=True)
class OodFigures:
    """What the gate lets through: the share of dermoscopic test images passed and of the non-dermoscopic
    set (``skin_model.data.ood_images``) rejected, against the project's goals."""

    measured: str
    model_sha256: str  # the model the gate was measured for
    threshold: float
    dermoscopic_pass_rate: float
    n_dermoscopic: int
    dermoscopic_split: str
    non_dermoscopic_reject_rate: float
    n_non_dermoscopic: int
    categories: tuple[OodCategory, ...]
    passed_names: tuple[str, ...]  # non-dermoscopic images the gate let through
    pass_goal: float
    reject_goal: float
    gate: dict[str, Any] = field(default_factory=dict)  # how the gate was fitted (components, layer, ...)
    distances: dict[str, float] = field(default_factory=dict)  # non-dermoscopic image -> score

    @property
    def meets_pass_goal(self) -> bool:
        return self.dermoscopic_pass_rate >= self.pass_goal

    @property
    def meets_reject_goal(self) -> bool:
        return self.non_dermoscopic_reject_rate >= self.reject_goal

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> "OodFigures":
        """Parse and check; BundleFileError naming what is incomplete or out of range."""
        try:
            figures = cls(**{**data, "categories": tuple(OodCategory(**c) for c in data["categories"]),
                             "passed_names": tuple(str(n) for n in data["passed_names"])})
            numbers = [float(figures.threshold), int(figures.n_dermoscopic), int(figures.n_non_dermoscopic)]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleFileError(path, f"incomplete or malformed ({type(exc).__name__}: {exc})") from None
        rates = [figures.dermoscopic_pass_rate, figures.non_dermoscopic_reject_rate, figures.pass_goal,
                 figures.reject_goal]
        if not all(is_rate(v) for v in rates):
            raise BundleFileError(path, "pass/reject rates and goals must lie between 0 and 1")
        if numbers[1] < 1 or numbers[2] < 1 or not math.isfinite(numbers[0]):
            raise BundleFileError(path, "needs positive image counts and a finite threshold")
        if any(not isinstance(c.n, int) or c.n < 1 or not 0 <= c.rejected <= c.n for c in figures.categories):
            raise BundleFileError(path, "each category needs 0 <= rejected <= n and n >= 1")
        return figures


def write_ood_figures(weights_dir: Path, figures: OodFigures) -> Path:
    return write_json(Path(weights_dir) / OOD_FIGURES_FILE, figures.to_dict())


def read_ood_figures(weights_dir: Path) -> OodFigures | None:
    path = Path(weights_dir) / OOD_FIGURES_FILE
    return OodFigures.from_dict(read_json(path), path) if path.is_file() else None


# ---------------------------------------------------------------------------------------------- localisation
@dataclass(frozen=True)
class LocalisationFigures:
    """Share of a split's images whose Grad-CAM peak falls inside the lesion box, with the chance rate."""

    method: str
    split: str
    n_images: int
    share_inside: dict[str, float]  # target ("predicted", "true") -> share
    chance_rate: float
    box_source: str
    box_limits: str
    frame: str
    seconds_per_image: float | None = None
    model_version: str | None = None
    images: list[dict[str, Any]] = field(default_factory=list)  # one row per image

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> "LocalisationFigures":
        """Parse and check; BundleFileError naming what is incomplete or out of range."""
        try:
            figures = cls(**{**data, "share_inside": {str(k): float(v) for k, v in data["share_inside"].items()}})
            chance, n_images = float(figures.chance_rate), int(figures.n_images)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleFileError(path, f"incomplete or malformed ({type(exc).__name__}: {exc})") from None
        if not all(is_rate(v) for v in [*figures.share_inside.values(), chance]) or n_images < 1:
            raise BundleFileError(path, "shares must lie between 0 and 1 and n_images must be positive")
        return figures


def write_localisation(weights_dir: Path, figures: LocalisationFigures) -> Path:
    return write_json(Path(weights_dir) / localisation_file(figures.split), figures.to_dict())


def read_localisation(weights_dir: Path, split: str = "test") -> LocalisationFigures | None:
    path = Path(weights_dir) / localisation_file(split)
    return LocalisationFigures.from_dict(read_json(path), path) if path.is_file() else None
