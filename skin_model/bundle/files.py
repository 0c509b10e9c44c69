"""The files of a model bundle (the ``weights/`` folder), their sha256 checks and JSON reading.

Every file name of a bundle is defined here; the other modules of this package own one file each.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from skin_model.config import REPORTS_SUBDIR, display_path

MODEL_FILE = "model.keras"  # the Keras model (sha256 in metadata.json)
METADATA_FILE = "metadata.json"  # ModelMetadata (bundle.metadata)
LITE_FILE = "model.tflite"  # the served LiteRT copy, built from model.keras (skin_model.serving.lite)
LITE_INFO_FILE = "model.tflite.json"  # its sha256, the sha256 of the model it was built from and of head.npz
HEAD_FILE = "head.npz"  # the dense head's weights for closed-form Grad-CAM, built with model.tflite (bundle.head)
OOD_FILE = "ood.npz"  # the out-of-distribution gate (skin_model.serving.ood; sha256 in metadata.json)
OOD_FIGURES_FILE = "ood_figures.json"  # the gate's measured pass/reject rates (bundle.extras)
SPLIT_FILE = "split.csv"  # train.py's lesion-grouped split (bundle.split)
HISTORY_FILE = "history.json"  # train.py's per-epoch training history
CHECKPOINTS_DIR = "checkpoints"  # train.py's checkpoints, for --resume
EVALUATIONS_DIR = REPORTS_SUBDIR  # further evaluation reports (skin_model.evaluation.evaluate, held-out sources)


def evaluation_file(split: str) -> str:
    """train.py's evaluation report of one split: ``evaluation_<split>.json``."""
    return f"evaluation_{split}.json"


def tta_report_file(split: str) -> str:
    """The 8-view TTA report of one split over every source of the bundle (scripts/finish_bundle.sh):
    ``evaluations/<split>_tta.json``."""
    return f"{EVALUATIONS_DIR}/{split}_tta.json"


def localisation_file(split: str) -> str:
    """The Grad-CAM localisation figures of one split: ``localisation_<split>.json`` (bundle.extras)."""
    return f"localisation_{split}.json"


#: train.py's reports, in the order the report page offers them.
TRAINING_REPORTS = (evaluation_file("test"), evaluation_file("val"))


class ModelIntegrityError(RuntimeError):
    """The model file does not match the sha256 recorded in its metadata, or the bundle is incomplete."""


class BundleFileError(ValueError):
    """A bundle file is missing or malformed; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path.name} ({display_path(self.path)}): {problem}")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checked_file(weights_dir: Path, file_name: str, expected_sha256: str) -> Path:
    """``weights_dir / file_name`` after checking it exists and matches the sha256 recorded in the metadata."""
    path = Path(weights_dir) / file_name
    if not file_name or not path.is_file():
        raise ModelIntegrityError(f"Model file {path} is missing")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"{path} has sha256 {actual[:12]}..., metadata expects {expected_sha256[:12]}...: "
            "the weights were changed or corrupted")
    return path


def read_json(path: Path, missing_hint: str = "") -> Any:
    """The parsed content of a JSON file; BundleFileError naming the file if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise BundleFileError(path, "the file does not exist" + (f" ({missing_hint})" if missing_hint else ""))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleFileError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise BundleFileError(path, "not a text (UTF-8) file") from None
    except OSError as exc:
        raise BundleFileError(path, f"cannot be read ({exc.strerror or exc})") from None


def write_json(path: Path, data: Any, indent: int = 1) -> Path:
    """Write ``data`` as strict JSON (no NaN) with a final newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent, allow_nan=False) + "\n")
    return path
