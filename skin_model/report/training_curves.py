"""train.py's ``history.json`` as curves: per-epoch loss, accuracy and balanced accuracy of both stages
(and the held-out source's balanced accuracy for a run with ``--track-heldout``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from skin_model.bundle import BundleFileError, read_json

STAGES = ("head", "finetune")
CURVE_METRICS = ("loss", "accuracy", "balanced_accuracy")


def training_curves(history_json: Path) -> pd.DataFrame:
    """train.py's ``history.json`` as a long frame: stage, epoch (running over both stages), stage_epoch,
    metric (loss / accuracy / balanced_accuracy), subset (train / validation / held-out source), value."""
    history_json = Path(history_json)
    history = read_json(history_json, "train.py writes it after training")
    if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
        raise BundleFileError(history_json, "expected an object of stage name -> list of per-epoch records")
    rows = []
    epoch = 0
    for stage in [s for s in STAGES if s in history] + [s for s in history if s not in STAGES]:
        for stage_epoch, record in enumerate(history[stage], start=1):
            if not isinstance(record, dict):
                raise BundleFileError(history_json, f"stage {stage!r} epoch {stage_epoch} is not an object")
            epoch += 1
            for metric in CURVE_METRICS:
                for subset, key in (("train", metric), ("validation", f"val_{metric}"),
                                    ("held-out source", f"heldout_{metric}")):
                    if isinstance(record.get(key), (int, float)):
                        rows.append({"stage": stage, "epoch": epoch, "stage_epoch": stage_epoch,
                                     "metric": metric, "subset": subset, "value": float(record[key])})
    if not rows:
        raise BundleFileError(history_json, f"no per-epoch {', '.join(CURVE_METRICS)} values found")
    return pd.DataFrame(rows)
