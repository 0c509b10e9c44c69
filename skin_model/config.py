"""Where the shared data, ImageNet weights, the served model and its reports live: the one module that reads
the project's environment variables (each documented in README, "Data and paths").

Read at import: SKIN_SHARED_DIR, SKIN_DATA_DIR, SKIN_EXTRA_DATA_DIRS, SKIN_BACKBONE_WEIGHTS (defaults for the CLIs
and train.py).
Read at each call (tests and servers repoint them): SKIN_WEIGHTS_DIR, SKIN_SAMPLES_DIR, SKIN_REPORTS_DIR,
SKIN_SAFETY_RESULTS.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_ROOT = Path(os.environ.get("SKIN_SHARED_DIR", PROJECT_ROOT.parent / "shared"))

#: HAM10000 folder (metadata CSV + image folders). Env: SKIN_DATA_DIR.
DEFAULT_DATA_DIR = Path(os.environ.get("SKIN_DATA_DIR", SHARED_ROOT / "data" / "ham10000"))
#: Further labelled folders in HAM10000's layout that train.py pools with DEFAULT_DATA_DIR (the ISIC Archive
#: images of other clinics). Env: SKIN_EXTRA_DATA_DIRS, folders separated by os.pathsep (empty: none).
DEFAULT_EXTRA_DATA_DIRS = tuple(
    Path(p) for p in os.environ.get("SKIN_EXTRA_DATA_DIRS", str(SHARED_ROOT / "data" / "isic_archive")).split(os.pathsep)
    if p.strip())
#: ImageNet MobileNetV2 weights without the classifier. Env: SKIN_BACKBONE_WEIGHTS.
DEFAULT_BACKBONE_WEIGHTS = Path(
    os.environ.get(
        "SKIN_BACKBONE_WEIGHTS",
        SHARED_ROOT / "weights" / "imagenet-mobilenetv2" / "mobilenet_v2_1.0_224_imagenet_notop.weights.h5",
    )
)
#: The trained model bundle the app and CLIs serve. Env: SKIN_WEIGHTS_DIR.
DEFAULT_WEIGHTS_DIR = Path(os.environ.get("SKIN_WEIGHTS_DIR", PROJECT_ROOT / "weights"))
#: Folder of sample images offered in the app. Env: SKIN_SAMPLES_DIR.
DEFAULT_SAMPLES_DIR = Path(os.environ.get("SKIN_SAMPLES_DIR", DEFAULT_DATA_DIR / "images_600x450"))
#: Lesion boxes in images_200x150 pixel coordinates.
DEFAULT_BBOXES_CSV = DEFAULT_DATA_DIR / "lesion_bboxes_200x150.csv"


#: The safety benchmark's results (the report page's TTA section). Env: SKIN_SAFETY_RESULTS.
DEFAULT_SAFETY_RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "safety.json"
#: Unfinished train.py runs carried to another machine through the repository (skin_model.training.parking).
PARKED_RUNS_DIR = PROJECT_ROOT / "runs"
#: Sub-folder of the bundle holding further evaluation reports. Env: SKIN_REPORTS_DIR (any folder).
REPORTS_SUBDIR = "evaluations"


def served_weights_dir() -> Path:
    """The bundle to serve: SKIN_WEIGHTS_DIR read now (tests and servers repoint it), else the default."""
    return Path(os.environ.get("SKIN_WEIGHTS_DIR") or DEFAULT_WEIGHTS_DIR)


def samples_dir() -> Path:
    """Folder of sample images offered on the Classify page: SKIN_SAMPLES_DIR read now, else the default."""
    return Path(os.environ.get("SKIN_SAMPLES_DIR") or DEFAULT_SAMPLES_DIR)


def reports_dir(weights_dir: Path) -> Path:
    """Folder of further evaluation JSON: SKIN_REPORTS_DIR read now, else ``weights_dir/evaluations``."""
    return Path(os.environ.get("SKIN_REPORTS_DIR") or Path(weights_dir) / REPORTS_SUBDIR)


def safety_results_path() -> Path:
    """The safety benchmark's JSON: SKIN_SAFETY_RESULTS read now, else ``benchmarks/results/safety.json``."""
    return Path(os.environ.get("SKIN_SAFETY_RESULTS") or DEFAULT_SAFETY_RESULTS)


def display_path(path: Path | str) -> str:
    """A path as shown to users: relative to the project (``weights/metadata.json``) when inside it, else
    its last two parts (``.../bundle/metadata.json``; one below a top-level folder), never the machine's absolute
    path."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        if not path.is_absolute() and ".." not in path.parts:
            return str(path)
        tail = path.parts[-2:] if len(path.parts) > 3 else path.parts[-1:]  # never a top-level folder name
        return str(Path("...", *tail))
