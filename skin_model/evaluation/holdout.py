"""Leave-source-out protocol: judge a recipe on a source (clinic, camera, archive) it never saw.

Every image has a source (the metadata's ``dataset`` column): HAM10000's four (rosendahl, vidir_modern,
vidir_molemax, vienna_dias) and the ISIC Archive's two (isic2017, isic_archive). ``train.py --holdout-source
NAME`` trains and validates on the others and evaluates on every image of the held-out source(s), which is how
the model will be used on photos from another clinic. This module owns that protocol: dividing the catalogue
(``hold_out_sources``), naming and describing the held-out report (``held_out_dataset``, ``report_file``) and
reading the reports back for the report page and model card (``held_out_rows``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from skin_model.data.dataset import HAM10000, SOURCE_COLUMN, collections_named
from skin_model.labels import MELANOMA

log = logging.getLogger(__name__)

#: ``split`` value of held-out images in ``split.csv``, and the split method named in their report.
HELD_OUT = "heldout"
SPLIT_METHOD = "held-out source"
#: The protocol's yardstick: each recipe is judged with each of these held out in turn. isic2017 (ISIC 2017
#: challenge, mostly Memorial Sloan Kettering) is the closest thing here to a new clinic.
YARDSTICK_SOURCES = ("isic2017", "rosendahl", "vidir_modern")


#: What the protocol can and cannot tell (the report page and the model card show it with the figures).
PROTOCOL_NOTE = """\
Each row is a model trained, validated and calibrated **without** one source and then run, as the app serves
it, on every image of that source: a clinic, camera or archive it never saw. That is how the model meets
photos from another clinic, so it measures a **recipe's** robustness, including which sources it trains on
("trained on"). The shipped model itself is trained on every source, so no row is the shipped model; the rows
are the recipes it was chosen among, each trained the same way. For isic2017 the HAM10000-only row is a model
trained on all of HAM10000 (the served 1.0.0 model), since HAM10000 holds no isic2017 image.

"referral sens." and "referral spec." are the malignant referral cue (refer when melanoma + basal cell
carcinoma + actinic keratosis reaches the threshold the run chose on its own validation images), blank for a
report that does not record its threshold: how many malignant lesions from the unseen clinic the app's
"refer" would still catch.

What it can tell: whether a change to the recipe or the training data helps on unseen sources, with the
same seed, split and epochs on both sides. isic2017 (ISIC 2017 challenge: 400 melanomas, 1,439 naevi, 296
keratoses from Memorial Sloan Kettering and other ISIC partners) is the most different from HAM10000;
rosendahl (Queensland practice) holds most of the actinic keratoses, so holding it out also tests the rare
classes; vidir_modern (Vienna, modern dermatoscope) holds 61% of HAM10000's melanomas.

What it cannot tell: HAM10000's four sources are two practices curated the same way (lesion centred, same
resizing and labelling), with mostly fair-skinned patients; isic2017 holds three diagnoses only, its copies
were squashed to squares, and its labels come from one challenge's curation; a held-out source is one draw:
differences of a few points on a class of tens of images are noise. Only the external sets held back from the
project can confirm a gain.
"""


class HoldoutError(ValueError):
    """The held-out sources cannot be set aside (unknown name, no source column, nothing left)."""


@dataclass(frozen=True)
class SourceHoldout:
    """The catalogue divided by source: ``kept`` (split and trained on) and ``held_out`` (every image of the
    held-out sources); ``dropped`` counts images of kept sources whose lesion is also in a held-out one."""

    kept: pd.DataFrame
    held_out: pd.DataFrame
    sources: tuple[str, ...]
    kept_sources: tuple[str, ...]
    dropped: int


def hold_out_sources(frame: pd.DataFrame, sources: list[str] | tuple[str, ...]) -> SourceHoldout:
    """Set aside every image of ``sources``. A lesion photographed in a held-out source is removed from the
    kept sources too (9 lesions of HAM10000 span two sources), so no lesion is both trained on and held out."""
    if SOURCE_COLUMN not in frame.columns:
        raise HoldoutError(f"The metadata has no {SOURCE_COLUMN!r} column: cannot hold out a source")
    known = sorted(frame[SOURCE_COLUMN].dropna().unique())
    unknown = sorted(set(sources) - set(known))
    if unknown:
        raise HoldoutError(f"Unknown source(s) {', '.join(unknown)}; the metadata has {', '.join(known)}")
    if set(sources) >= set(known):
        raise HoldoutError("Holding out every source leaves nothing to train on")
    out = frame[SOURCE_COLUMN].isin(sources)
    shared = frame["lesion_id"].isin(frame.loc[out, "lesion_id"]) & ~out
    if shared.any():
        log.info("Leaving out %d image(s) of kept sources whose lesion is also held out", int(shared.sum()))
    held_out = frame[out].copy()
    held_out["split"] = HELD_OUT
    kept = frame[~out & ~shared].reset_index(drop=True)
    return SourceHoldout(kept=kept, held_out=held_out.reset_index(drop=True), sources=tuple(sorted(sources)),
                         kept_sources=tuple(sorted(kept[SOURCE_COLUMN].unique())), dropped=int(shared.sum()))


def trained_sources(metadata) -> tuple[str, ...]:
    """The sources a bundle's model was trained on (``ModelMetadata``): those with training images in
    ``data.folders``; a bundle that predates the record (HAM10000 only) was trained on HAM10000's four, less
    any held-out source it records."""
    folders = (metadata.data or {}).get("folders")
    if folders:
        return tuple(sorted(s["source"] for f in folders for s in f["sources"] if s["counts"].get("train")))
    held_out = set((metadata.data or {}).get("held_out_sources", []))
    return tuple(s for s in HAM10000.sources if s not in held_out)


def report_file(sources: tuple[str, ...]) -> str:
    """File name of the held-out report in a bundle's ``evaluations/`` folder."""
    return f"heldout_{'+'.join(sources)}.json"


def held_out_dataset(holdout: SourceHoldout, recipe: str, tta: bool) -> dict[str, Any]:
    """The ``dataset`` dict of a held-out report: which source, how the model was trained, what it means."""
    names = ", ".join(holdout.sources)
    return {"name": f"held-out source {names}", "split": HELD_OUT, "split_method": SPLIT_METHOD,
            "sources": list(holdout.sources), "trained_on": list(holdout.kept_sources), "recipe": recipe,
            "tta": tta, "n_lesions": int(holdout.held_out["lesion_id"].nunique()),
            "description": (f"every image of {names}; the model was trained, validated and calibrated on "
                            f"{', '.join(holdout.kept_sources)} only ({'8-view TTA' if tta else 'single view'})")}


def recipe_flags(args: dict[str, Any], defaults: dict[str, Any],
                 ignore: tuple[str, ...] = ("data_dir", "extra_data", "backbone_weights", "output_dir", "resume",
                                            "holdout_source", "track_heldout", "distribute", "cpu_replicas",
                                            "input", "memory_budget", "cache")) -> str:
    """The training flags that differ from ``train.py``'s defaults, as a command-line fragment
    ("today's recipe" when none does): how a held-out report names the recipe it measures. Where and how
    it ran (paths, devices, input pipeline, what it logged) is not the recipe."""
    changed = [f"--{k.replace('_', '-')} {_flag_value(v)}".strip() for k, v in args.items()
               if k not in ignore and k in defaults and v != defaults[k]]
    return " ".join(changed) or "today's recipe"


def _flag_value(value: Any) -> str:
    if value is True:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class HeldOutRow:
    """The protocol's figures for one recipe on one held-out source."""

    source: str
    recipe: str
    #: the sources the recipe was trained on (empty when the report does not record them)
    trained_on: tuple[str, ...]
    model_version: str
    n_images: int
    classes_present: int
    balanced_accuracy: float
    melanoma_auc: float | None
    melanoma_sensitivity: float | None
    macro_auc: float | None
    ece: float
    file: str
    #: the malignant referral cue at the run's own validation-chosen threshold (None when not recorded)
    referral_sensitivity: float | None = None
    referral_specificity: float | None = None


def is_held_out(report) -> bool:
    """True for an EvaluationReport written by the leave-source-out protocol."""
    return report.dataset.get("split_method") == SPLIT_METHOD


def held_out_row(report, file_name: str) -> HeldOutRow:
    """One table row from a held-out EvaluationReport."""
    present = sum(1 for row in report.per_class.values() if row["support"])
    referral = report.referral()
    return HeldOutRow(source=", ".join(report.dataset.get("sources", [])), recipe=report.dataset.get("recipe", "?"),
                      trained_on=tuple(report.dataset.get("trained_on", [])),
                      model_version=str(report.model.get("version", "?")), n_images=report.n_images,
                      classes_present=present, balanced_accuracy=report.balanced_accuracy,
                      melanoma_auc=report.per_class[MELANOMA]["auc"],
                      melanoma_sensitivity=report.melanoma_sensitivity, macro_auc=report.macro_auc,
                      ece=report.ece, file=file_name,
                      referral_sensitivity=referral.sensitivity if referral else None,
                      referral_specificity=referral.specificity if referral else None)


def held_out_rows(paths: list[Path]) -> tuple[list[HeldOutRow], list[str]]:
    """Rows for every held-out report among ``paths``, by source then recipe, and a message for each
    ``heldout_*.json`` that cannot be read. Other files are skipped (their own page section reports them)."""
    from skin_model.evaluation.metrics import EvaluationReport

    rows, problems = [], []
    for path in map(Path, paths):
        try:
            report = EvaluationReport.from_json(path)
            if is_held_out(report):
                rows.append(held_out_row(report, path.name))
        except (OSError, ValueError, TypeError, KeyError) as exc:  # not JSON, missing fields, ...
            if path.name.startswith("heldout_"):
                problems.append(f"{path.name}: {type(exc).__name__}: {exc}")
    return sorted(rows, key=lambda r: (r.source, collections_named(r.trained_on), r.recipe)), problems



@dataclass(frozen=True)
class ServedRecipe:
    """What a held-out row shares with the served model when it measures the served model's recipe: the
    training flags (``training.recipe`` in its metadata) and the collections trained on (a row trains on them
    less its held-out source)."""

    recipe: str
    collections: str

    @classmethod
    def of(cls, metadata) -> ServedRecipe | None:
        """The served model's (``ModelMetadata``); None when its metadata predates ``training.recipe``."""
        recipe = (metadata.training or {}).get("recipe")
        return None if recipe is None else cls(recipe, collections_named(trained_sources(metadata)))

    def measured_by(self, row: HeldOutRow) -> bool:
        return row.recipe == self.recipe and collections_named(row.trained_on) == self.collections


def rows_frame(rows: list[HeldOutRow], served: ServedRecipe | None = None) -> pd.DataFrame:
    """The rows as a table for a page: one line per source and recipe; "served" marks the rows measuring the
    served model's recipe and data (``served``)."""
    return pd.DataFrame([{"served": served is not None and served.measured_by(r),
                          "held-out source": r.source, "trained on": collections_named(r.trained_on),
                          "recipe": r.recipe, "images": r.n_images,
                          "classes": r.classes_present, "balanced acc.": r.balanced_accuracy,
                          "melanoma AUC": r.melanoma_auc, "melanoma sens.": r.melanoma_sensitivity,
                          "macro AUC": r.macro_auc, "ECE": r.ece, "referral sens.": r.referral_sensitivity,
                          "referral spec.": r.referral_specificity} for r in rows])
