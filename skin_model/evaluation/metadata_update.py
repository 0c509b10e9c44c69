"""Fill metadata.json fields that stored evaluations determine, without retraining (command line:
``python -m skin_model.cli.metadata_update [--weights DIR] [--val-report FILE] [--test-report FILE]``).

- ``referral_threshold``: ``metrics.choose_referral_threshold`` on the validation probabilities as the
  model is served (the per-image predictions of ``--val-report``, e.g. ``evaluations/val_tta.json``
  for a model served with 8-view TTA), as train.py does for new models;
- ``metrics["test_tta"]``: the headline of ``--test-report`` (test split with TTA) for the model card;
- ``known_limits``: ``model.known_limits`` of the sources the model was trained on (``holdout.trained_sources``),
  so a bundle states today's wording of its limits.

Each report must be for this model (its ``model_sha256`` or version) and predicted the way the model is
served (its ``tta`` flag); ``model.keras`` and its sha256 are not touched.
"""

from __future__ import annotations

import logging
from pathlib import Path

from skin_model.evaluation.holdout import trained_sources
from skin_model.evaluation.metrics import EvaluationReport, choose_referral_threshold
from skin_model.bundle import ModelMetadata
from skin_model.model import known_limits

log = logging.getLogger(__name__)


def check_report_matches(report: EvaluationReport, metadata: ModelMetadata, split: str, path: Path) -> None:
    """Raise ValueError unless ``report`` is ``split`` of this model, predicted as it is served."""
    model = report.model
    same_model = model.get("model_sha256") == metadata.model_sha256 if model.get("model_sha256") \
        else model.get("version") == metadata.version
    problems = [f"it is for another model ({model.get('version')})"] if not same_model else []
    if report.dataset.get("split") != split:
        problems.append(f"it is the {report.dataset.get('split')!r} split, not {split!r}")
    if bool(model.get("tta")) != metadata.test_time_augmentation:
        problems.append(f"its TTA setting ({bool(model.get('tta'))}) is not the served one "
                        f"({metadata.test_time_augmentation})")
    if not report.predictions:
        problems.append("it stores no per-image predictions")
    if problems:
        raise ValueError(f"{path.name}: " + "; ".join(problems))


def update_metadata(metadata: ModelMetadata, val: EvaluationReport, test: EvaluationReport | None) -> ModelMetadata:
    """``metadata`` with the referral threshold (from ``val``), the test-TTA headline (from ``test``, when
    the model is served with TTA) and the known limits filled in."""
    metadata.referral_threshold = choose_referral_threshold(*val.labels_and_probs())
    if test is not None and metadata.test_time_augmentation:
        metadata.metrics = {**metadata.metrics, "test_tta": test.headline()}
    metadata.known_limits = list(known_limits(trained_sources(metadata)))
    return metadata
