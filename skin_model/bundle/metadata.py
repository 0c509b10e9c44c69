"""``metadata.json``: everything that travels with the weights (MONAI-bundle style), and its one reader
and writer. Reading it imports neither TensorFlow nor Keras."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from skin_model.bundle.files import METADATA_FILE, MODEL_FILE, BundleFileError, ModelIntegrityError, read_json
from skin_model.labels import CLASSES

log = logging.getLogger(__name__)


@dataclass
class ModelMetadata:
    """Everything that travels with the weights; the model card is read from it."""

    version: str
    created: str
    classes: list[dict[str, Any]] = field(default_factory=lambda: [asdict(c) for c in CLASSES])
    input_size: int = 224
    preprocessing: dict[str, Any] = field(default_factory=dict)
    network_data_format: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
    unsure_threshold: float = 0.5
    #: Refer when the malignant roll-up (``labels.MALIGNANT_CODES``) reaches it; chosen on validation for high
    #: malignant sensitivity (``metrics.choose_referral_threshold``). None (older bundles): no referral cue.
    referral_threshold: float | None = None
    #: Serve the average over the 8 flips/rotations (``skin_model.serving.tta``): chosen on validation by train.py.
    test_time_augmentation: bool = False
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    backbone: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    model_file: str = MODEL_FILE
    model_sha256: str = ""
    #: sha256 of ``ood.npz`` (the out-of-distribution gate), written by ``python -m skin_model.cli.ood fit``.
    ood_sha256: str = ""
    intended_use: str = ("Education and research demonstration of dermoscopic lesion classification. "
                         "Not a medical device; not for diagnosis.")
    licence: str = "Model trained on HAM10000 (CC BY-NC-SA 4.0): non-commercial, share-alike."
    #: What the model is known not to do well, one sentence each (the model card lists them).
    known_limits: list[str] = field(default_factory=list)

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: Path) -> "ModelMetadata":
        return metadata_from_file(Path(path))


_FIELDS = {f.name for f in fields(ModelMetadata)}


def metadata_from_file(path: Path) -> ModelMetadata:
    """A ``metadata.json`` file; BundleFileError naming the problem (missing, not JSON, wrong fields)."""
    data = read_json(path, "train.py writes it next to the model")
    if not isinstance(data, dict):
        raise BundleFileError(path, f"its fields do not match the model metadata format (a {type(data).__name__})")
    try:
        return ModelMetadata(**data)
    except TypeError as exc:
        raise BundleFileError(path, f"its fields do not match the model metadata format ({exc})") from None


def read_metadata(weights_dir: Path) -> ModelMetadata:
    """The bundle's ``metadata.json`` (``ModelIntegrityError`` when it is missing or damaged)."""
    path = Path(weights_dir) / METADATA_FILE
    if not path.is_file():
        raise ModelIntegrityError(f"No {METADATA_FILE} in {weights_dir}: train a model with `python train.py`")
    try:
        return metadata_from_file(path)
    except BundleFileError as exc:
        raise ModelIntegrityError(f"{path} is damaged or not a model's metadata ({exc.problem})") from None


def write_metadata(weights_dir: Path, metadata: ModelMetadata) -> Path:
    """Write ``metadata.json`` into the bundle folder."""
    path = Path(weights_dir) / METADATA_FILE
    metadata.to_json(path)
    return path


def update_metadata(weights_dir: Path, **changes: Any) -> ModelMetadata:
    """Change some fields of the bundle's ``metadata.json``, keeping every other one."""
    unknown = set(changes) - _FIELDS
    if unknown:
        raise ValueError(f"Not metadata fields: {sorted(unknown)}")
    metadata = replace(read_metadata(weights_dir), **changes)
    write_metadata(weights_dir, metadata)
    log.info("Updated %s in %s", ", ".join(sorted(changes)), Path(weights_dir) / METADATA_FILE)
    return metadata
