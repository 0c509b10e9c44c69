"""The test-time augmentation benchmark (``benchmarks/results/safety.json`` or ``SKIN_SAFETY_RESULTS``,
written by ``benchmarks/safety_benchmark.py``): single view against 8-view TTA on validation, with latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from skin_model.bundle import BundleFileError, is_rate, read_json


SAFETY_COMMAND = "python benchmarks/safety_benchmark.py"
_VIEWS = {"single_view": "Single view", "tta_8_views": "8-view TTA"}


@dataclass(frozen=True)
class ViewFigures:
    """Validation figures and per-image latency of one way of predicting (single view or TTA)."""

    balanced_accuracy: float
    accuracy: float
    macro_auc: float | None  # None when a class is absent from the (limited) validation sample
    ece: float
    latency_p50_ms: float
    latency_p95_ms: float | None


@dataclass(frozen=True)
class TtaSummary:
    """The ``tta`` block of ``safety.json`` (``benchmarks/safety_benchmark.py``)."""

    single_view: ViewFigures
    tta: ViewFigures
    n_val: int
    split: str
    measured: str
    model_version: str | None
    machine: str


def tta_summary(safety_json: Path) -> TtaSummary:
    """Read the ``tta`` block of the safety benchmark's JSON; BundleFileError naming the file and the problem
    (missing, not JSON, no ``tta`` block, missing or out-of-range values)."""
    path = Path(safety_json)
    results = read_json(path)
    if not isinstance(results, dict) or not isinstance(results.get("tta"), dict):
        raise BundleFileError(path, "no 'tta' block (expected the output of benchmarks/safety_benchmark.py)")
    tta = results["tta"]
    try:
        views = {key: _view_figures(tta[key], tta["latency_ms"][key], key) for key in _VIEWS}
        n_val = int(tta["n_val"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleFileError(path, f"the 'tta' block is incomplete or malformed ({type(exc).__name__}: {exc})") from None
    if n_val < 1:
        raise BundleFileError(path, f"'tta.n_val' must be a positive count, found {n_val}")
    model = results.get("model") if isinstance(results.get("model"), dict) else {}
    machine = results.get("machine") if isinstance(results.get("machine"), dict) else {}
    machine_text = ", ".join(str(v) for v in (machine.get("platform"),
                                              f"{machine['cpus']} CPUs" if machine.get("cpus") else None) if v)
    return TtaSummary(single_view=views["single_view"], tta=views["tta_8_views"], n_val=n_val,
                      split=str(tta.get("split", "val")), measured=str(results.get("measured", "date not recorded")),
                      model_version=model.get("version"), machine=machine_text or "machine not recorded")


def _view_figures(figures: dict[str, Any], latency: dict[str, Any], key: str) -> ViewFigures:
    """One view's figures; ValueError naming the value that is missing or out of range."""
    for name in ("balanced_accuracy", "accuracy", "ece"):
        if not is_rate(figures[name]):
            raise ValueError(f"tta.{key}.{name} must be a number between 0 and 1, found {figures[name]!r}")
    if figures.get("macro_auc") is not None and not is_rate(figures["macro_auc"]):
        raise ValueError(f"tta.{key}.macro_auc must be a number between 0 and 1 or null")
    p50, p95 = latency["p50"], latency.get("p95")
    if not isinstance(p50, (int, float)) or isinstance(p50, bool) or not math.isfinite(p50) or p50 <= 0:
        raise ValueError(f"tta.latency_ms.{key}.p50 must be a positive number of milliseconds, found {p50!r}")
    return ViewFigures(balanced_accuracy=float(figures["balanced_accuracy"]), accuracy=float(figures["accuracy"]),
                       macro_auc=None if figures.get("macro_auc") is None else float(figures["macro_auc"]),
                       ece=float(figures["ece"]), latency_p50_ms=float(p50),
                       latency_p95_ms=float(p95) if isinstance(p95, (int, float)) else None)


def tta_frame(summary: TtaSummary) -> pd.DataFrame:
    """Single view vs 8-view TTA, formatted: balanced accuracy, accuracy, macro AUC, ECE, latency p50."""
    def percent(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    def decimal(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    def points(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or b is None else f"{100 * (b - a):+.1f} points"

    def delta(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or b is None else f"{b - a:+.3f}"

    one, eight = summary.single_view, summary.tta
    rows = [("Balanced accuracy", percent, points, "balanced_accuracy"), ("Accuracy", percent, points, "accuracy"),
            ("Macro AUC", decimal, delta, "macro_auc"), ("Calibration error (ECE)", decimal, delta, "ece")]
    table = [{"Measure": label, "Single view": show(getattr(one, key)), "8-view TTA": show(getattr(eight, key)),
              "Change": change(getattr(one, key), getattr(eight, key))} for label, show, change, key in rows]
    table.append({"Measure": "Latency per image (median)", "Single view": f"{one.latency_p50_ms:.0f} ms",
                  "8-view TTA": f"{eight.latency_p50_ms:.0f} ms",
                  "Change": f"×{eight.latency_p50_ms / one.latency_p50_ms:.1f}"})
    return pd.DataFrame(table)
