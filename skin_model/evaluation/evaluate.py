"""Evaluate the model bundle on any labelled image folder (command line: ``skin_model.cli.evaluate``).

The labels CSV is either ``image_id,dx`` (HAM10000_metadata.csv works as it is; other columns are ignored)
or the ISIC challenge one-hot format ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``. Each image is found by its id
(any supported extension, anywhere under DIR). Images listed but missing, and files that cannot be read,
are reported by name and left out; images in the folder but not in the CSV are ignored. Predictions go
through what the app serves: ``service.ClassifierService`` (the bundle's LiteRT model, the serving
preprocessing, calibrated), averaged over the 8 flips/rotations when the model's metadata says
``test_time_augmentation`` (override with ``tta``); metrics through ``metrics.evaluate_probabilities``. The
app's verdict on each image (``verdict.Verdict``) is counted in the report's extras: images the gate flags as
not dermatoscopic, unsure, referred.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from skin_model.config import DEFAULT_WEIGHTS_DIR, display_path
from skin_model.data.dataset import SOURCE_COLUMN, find_image_files, source_aspects
from skin_model.evaluation.holdout import HELD_OUT, SPLIT_METHOD, trained_sources
from skin_model.data.imaging import FILE_SUFFIXES
from skin_model.labels import CLASSES, CODES, class_index
from skin_model.evaluation.metrics import EvaluationReport, evaluate_probabilities
from skin_model.serving.verdict import Verdict

log = logging.getLogger(__name__)

#: File name endings searched for images (the formats ``imaging.load_image`` accepts).
DX_COLUMNS = ("image_id", "dx")
ONE_HOT_ID = "image"
EXPECTED_HEADERS = ("`image_id,dx` (HAM10000 metadata; extra columns ignored) or "
                    "`image,MEL,NV,BCC,AKIEC,BKL,DF,VASC` (ISIC one-hot)")


class EvaluationError(ValueError):
    """The labels file or image folder cannot be evaluated; the message names the problem."""


# ---------------------------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class LabelTable:
    """One row per labelled image, and the ids the file listed more than once (with the same diagnosis)."""

    frame: pd.DataFrame
    duplicates: list[str] = field(default_factory=list)


def read_label_table(labels_csv: Path, split: str | None = None) -> pd.DataFrame:
    """The labels CSV as a frame with ``image_id`` and ``dx`` (and ``lesion_id`` when the file has it)."""
    return load_label_table(labels_csv, split).frame


def load_label_table(labels_csv: Path, split: str | None = None, source: str | None = None) -> LabelTable:
    """The labels CSV, one row per image, and the repeated ids (logged: they are counted once).

    The format is detected from the header; raises EvaluationError for anything else, naming the rows
    (CSV line numbers) of empty or unknown diagnoses. With ``split``, only the rows whose ``split`` column
    equals it are kept (e.g. the test split of ``weights/split.csv``); with ``source``, only those whose
    ``dataset`` column (the source: clinic or archive) equals it.
    """
    labels_csv = Path(labels_csv)
    if not labels_csv.is_file():
        raise EvaluationError(f"Labels file {labels_csv} does not exist")
    try:
        raw = pd.read_csv(labels_csv, dtype=str, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{labels_csv.name} is not a readable CSV file ({exc})") from None
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    if split is not None:
        if "split" not in raw.columns:
            raise EvaluationError(f"{labels_csv.name} has no 'split' column to select {split!r} from")
        raw = raw[raw["split"].str.strip() == split]
        if raw.empty:
            raise EvaluationError(f"{labels_csv.name} has no row in split {split!r}")
    if source is not None:
        if SOURCE_COLUMN not in raw.columns:
            raise EvaluationError(f"{labels_csv.name} has no {SOURCE_COLUMN!r} column to select source {source!r} from")
        known = sorted(raw[SOURCE_COLUMN].dropna().str.strip().unique())
        raw = raw[raw[SOURCE_COLUMN].str.strip() == source]
        if raw.empty:
            raise EvaluationError(f"{labels_csv.name} has no row of source {source!r}; it has {', '.join(known)}")
    if set(DX_COLUMNS) <= set(raw.columns):
        table = raw[[c for c in ("image_id", "dx", "lesion_id", SOURCE_COLUMN) if c in raw.columns]].copy()
        table["dx"] = table["dx"].str.strip().str.lower()
        bad = ~table["dx"].isin(CODES)
        if bad.any():
            unknown = sorted(set(table.loc[bad, "dx"].dropna()))
            rows = ", ".join(f"line {i + 2} ({table.at[i, 'image_id']})" for i in table.index[bad][:10])
            raise EvaluationError(f"{labels_csv.name} has unknown or empty diagnosis codes {unknown} on {rows}; "
                                  f"expected one of {', '.join(CODES)}")
    elif ONE_HOT_ID in raw.columns and set(CODES) <= set(raw.columns):
        table = _from_one_hot(raw, labels_csv.name)
    else:
        raise EvaluationError(f"{labels_csv.name} has columns {list(raw.columns)[:12]}; expected {EXPECTED_HEADERS}")
    table["image_id"] = table["image_id"].str.strip()
    return _drop_duplicates(table, labels_csv.name)


def _from_one_hot(raw: pd.DataFrame, file_name: str) -> pd.DataFrame:
    """ISIC one-hot rows to dx codes; every row must hold exactly one 1 among the seven class columns."""
    try:
        values = raw[list(CODES)].astype(float).to_numpy()
    except ValueError as exc:
        raise EvaluationError(f"{file_name}: class columns must hold 0 or 1 ({exc})") from None
    valid = np.isin(values, (0.0, 1.0)).all(axis=1) & (values.sum(axis=1) == 1.0)
    if not valid.all():
        bad = raw.loc[~valid, ONE_HOT_ID].astype(str).tolist()
        raise EvaluationError(f"{file_name}: {len(bad)} row(s) do not have exactly one class set to 1: "
                              f"{', '.join(bad[:10])}")
    return pd.DataFrame({"image_id": raw[ONE_HOT_ID], "dx": [CODES[i] for i in values.argmax(axis=1)]})


def _drop_duplicates(table: pd.DataFrame, file_name: str) -> LabelTable:
    """One row per image_id; an image listed twice with different diagnoses is an error, with the same
    diagnosis a warning (it is counted once)."""
    conflicting = table.groupby("image_id")["dx"].nunique()
    conflicting = conflicting[conflicting > 1].index.tolist()
    if conflicting:
        raise EvaluationError(f"{file_name} gives different diagnoses for {', '.join(conflicting[:10])}")
    if table["image_id"].isna().any() or (table["image_id"] == "").any():
        lines = ", ".join(str(i + 2) for i in table.index[table["image_id"].isna() | (table["image_id"] == "")][:10])
        raise EvaluationError(f"{file_name} has rows without an image id (line {lines})")
    duplicates = sorted(table.loc[table["image_id"].duplicated(), "image_id"].unique())
    if duplicates:
        log.warning("%s lists %d image id(s) more than once (same diagnosis; counted once): %s", file_name,
                    len(duplicates), ", ".join(duplicates[:20]))
    return LabelTable(table.drop_duplicates("image_id").reset_index(drop=True), duplicates)


# ---------------------------------------------------------------------------------------------- images
def find_images(images_dir: Path) -> dict[str, Path]:
    """image_id (file stem) -> file anywhere under ``images_dir``, any uploadable format; most pixels wins."""
    return find_image_files(images_dir, FILE_SUFFIXES)


@dataclass
class Matched:
    """Labelled images found in the folder, and what could not be used."""

    paths: dict[str, Path]
    missing: list[str] = field(default_factory=list)
    ignored: int = 0


def match_images(images_dir: Path, image_ids: list[str]) -> Matched:
    """Files for the labelled ids; ids without a file are ``missing``, unlabelled files are counted."""
    files = find_images(images_dir)
    paths = {i: files[i] for i in image_ids if i in files}
    return Matched(paths=paths, missing=[i for i in image_ids if i not in files],
                   ignored=len(set(files) - set(image_ids)))


def predict_files(service, paths: dict[str, Path], batch_size: int, tta: bool = False,
                  aspects: dict[str, float | None] | None = None) -> tuple[list[str], list[Verdict], list[str]]:
    """The app's verdict on each readable file, batch by batch: (image ids, verdicts, one message per
    unreadable file naming it). ``tta`` averages the 8 flips/rotations; ``aspects`` stretches the images of
    squashed sources back first (``imaging.unsquash``)."""
    from skin_model.data.imaging import InvalidImageError, load_image, unsquash

    ids: list[str] = []
    verdicts: list[Verdict] = []
    unreadable: list[str] = []
    items = list(paths.items())
    for start in range(0, len(items), batch_size):
        batch_ids, batch_images = [], []
        for image_id, path in items[start:start + batch_size]:
            try:
                batch_images.append(unsquash(load_image(path), (aspects or {}).get(image_id)))
                batch_ids.append(image_id)
            except InvalidImageError as exc:
                unreadable.append(str(exc))
            except OSError as exc:
                unreadable.append(f"{path.name}: cannot read the file ({exc.strerror or exc})")
        if batch_images:
            verdicts += service.verdicts(service.predictor.model_input(batch_images), tta)
            ids.extend(batch_ids)
        log.info("Evaluated %d of %d images", min(start + batch_size, len(items)), len(items))
    for message in unreadable:
        log.warning("Skipped unreadable image %s", message)
    return ids, verdicts, unreadable


def verdict_counts(ids: list[str], verdicts: list[Verdict], ood_status: str) -> dict[str, object]:
    """How many images the app would flag as not dermatoscopic, call unsure, and refer (with their ids)."""
    not_dermoscopic = [i for i, v in zip(ids, verdicts) if v.not_dermoscopic]
    return {"ood_check": ood_status, "n_not_dermoscopic": len(not_dermoscopic) if ood_status == "on" else None,
            "not_dermoscopic": not_dermoscopic, "n_unsure": sum(v.unsure for v in verdicts),
            "n_referred": sum(bool(v.refer) for v in verdicts) if verdicts and verdicts[0].refer is not None
            else None}


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_folder(images_dir: Path, labels_csv: Path, weights_dir: Path = DEFAULT_WEIGHTS_DIR,
                    name: str | None = None, batch_size: int = 32, service=None,
                    tta: bool | None = None, split: str | None = None,
                    source: str | None = None, restore_aspect: bool | None = None) -> EvaluationReport:
    """EvaluationReport of the model bundle in ``weights_dir`` (or a loaded ``service``) on the images
    of ``images_dir`` labelled in ``labels_csv``, predicted as the app serves them: with the bundle's
    LiteRT model and, unless ``tta`` says otherwise, the model's ``test_time_augmentation`` setting.
    With ``source`` only that source's images are evaluated; when the model was not trained on it, the report
    is a held-out report of the leave-source-out protocol (``skin_model.evaluation.holdout``). With
    ``restore_aspect`` the images of sources published squashed (``dataset.SQUASHED_SOURCES``, by the labels'
    ``dataset`` column) are stretched back before prediction, as ``train.py --restore-aspect`` trains; by
    default (None) as the model's own training saw them (``training.restore_aspect`` in its metadata).

    Raises EvaluationError for a bad labels file or folder, a model that cannot be loaded, or when no
    labelled image can be evaluated.
    """
    images_dir, labels_csv = Path(images_dir), Path(labels_csv)
    if not images_dir.is_dir():
        raise EvaluationError(f"Image folder {images_dir} does not exist")
    label_table = load_label_table(labels_csv, split, source)
    table = label_table.frame
    matched = match_images(images_dir, table["image_id"].tolist())
    if matched.missing:
        log.warning("%d labelled image(s) have no file under %s: %s", len(matched.missing), images_dir,
                    ", ".join(matched.missing[:20]))
    if matched.ignored:
        log.info("Ignoring %d image(s) in %s that %s does not label", matched.ignored, images_dir, labels_csv.name)
    if not matched.paths:
        raise EvaluationError(f"None of the {len(table)} image(s) listed in {labels_csv.name} is in {images_dir}")

    from skin_model.bundle import ModelIntegrityError
    from skin_model.serving.service import ClassifierService

    if service is None:
        try:
            service = ClassifierService.from_dir(Path(weights_dir))
        except (ModelIntegrityError, OSError) as exc:
            raise EvaluationError(f"cannot load the model from {weights_dir}: {exc}") from exc
    if tta is None:
        tta = service.metadata.test_time_augmentation
    if restore_aspect is None:
        restore_aspect = bool((service.metadata.training or {}).get("restore_aspect"))

    aspects = None
    if restore_aspect:
        if SOURCE_COLUMN not in table.columns:
            raise EvaluationError(f"{labels_csv.name} has no {SOURCE_COLUMN!r} column: cannot tell which images "
                                  "were squashed")
        aspects = dict(zip(table["image_id"], source_aspects(table[SOURCE_COLUMN])))
    ids, verdicts, unreadable = predict_files(service, matched.paths, batch_size, tta, aspects)
    if not ids:
        raise EvaluationError(f"No labelled image in {images_dir} could be evaluated "
                              f"({len(matched.missing)} missing, {len(unreadable)} unreadable)")

    evaluated = table.set_index("image_id").loc[ids]
    dataset = {"name": name or images_dir.resolve().name, "images_dir": display_path(images_dir),
               "labels_file": display_path(labels_csv), "split_method": "as provided by the labels file"}
    if split is not None:
        dataset.update(split=split, split_method=f"rows of {labels_csv.name} whose split is {split!r}")
    if restore_aspect:
        dataset["restore_aspect"] = True
    if "lesion_id" in evaluated.columns:
        dataset["n_lesions"] = int(evaluated["lesion_id"].nunique())
    metadata = service.metadata
    if source is not None:
        dataset["sources"] = [source]
        seen = trained_sources(metadata)
        if source not in seen:  # a source the model never saw: a row of the leave-source-out protocol
            dataset.update(split=HELD_OUT, split_method=SPLIT_METHOD, trained_on=list(seen), tta=tta,
                           recipe=((metadata.training or {}).get("recipe") or "today's recipe")
                           + (", evaluated on images stretched back to their aspect" if restore_aspect else ""),
                           description=f"every image of {source}; the model was trained, validated and "
                                       f"calibrated on {', '.join(seen)} only "
                                       f"({'8-view TTA' if tta else 'single view'})")
    probs = np.array([v.prediction.probabilities for v in verdicts], dtype=np.float64)
    model = {"version": metadata.version, "temperature": metadata.temperature, "input_size": metadata.input_size,
             "referral_threshold": metadata.referral_threshold, "model_sha256": metadata.model_sha256,
             "weights_dir": display_path(weights_dir), "tta": tta}
    labels = evaluated["dx"].map(class_index).to_numpy()
    report = evaluate_probabilities(labels, probs, ids, dataset=dataset, model=model,
                                    temperature=metadata.temperature)
    report.extras.update({"n_labelled": int(len(table)), "n_missing": len(matched.missing),
                          "missing": matched.missing, "n_unreadable": len(unreadable), "unreadable": unreadable,
                          "n_duplicate_ids": len(label_table.duplicates), "duplicate_ids": label_table.duplicates,
                          "n_unlabelled_ignored": matched.ignored,
                          "verdicts": verdict_counts(ids, verdicts, service.ood_status)})
    return report


# ---------------------------------------------------------------------------------------------- summary
def _fmt(value: float | None, percent: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if percent else f"{value:.3f}"


def format_summary(report: EvaluationReport) -> str:
    """Readable text: headline figures, per-class table, confusion matrix, and skipped files."""
    lines = [f"Evaluation of model {report.model.get('version')} on {report.dataset['name']} "
             f"({report.n_images} images)",
             f"  balanced accuracy     {_fmt(report.balanced_accuracy)}",
             f"  accuracy              {_fmt(report.accuracy)}",
             f"  macro AUC             {_fmt(report.macro_auc, percent=False)}",
             f"  melanoma sensitivity  {_fmt(report.melanoma_sensitivity)}",
             f"  melanoma specificity  {_fmt(report.melanoma_specificity)}",
             f"  ECE (calibrated)      {_fmt(report.ece, percent=False)}"
             + (f"   (uncalibrated {_fmt(report.ece_uncalibrated, percent=False)})"
                if report.ece_uncalibrated is not None else ""),
             "",
             f"  {'class':6s} {'support':>7s} {'precision':>9s} {'recall':>7s} {'f1':>6s} {'AUC':>6s}  name"]
    for c in CLASSES:
        row = report.per_class[c.code]
        lines.append(f"  {c.code:6s} {row['support']:7d} {row['precision']:9.3f} {row['recall']:7.3f} "
                     f"{row['f1']:6.3f} {_fmt(row['auc'], percent=False):>6s}  {c.name}")
    lines += ["", "  confusion matrix (rows: true, columns: predicted)",
              "  " + " " * 6 + "".join(f"{code:>7s}" for code in CODES)]
    for code, counts in zip(CODES, report.confusion_matrix):
        lines.append(f"  {code:6s}" + "".join(f"{n:7d}" for n in counts))
    extras = report.extras
    if extras.get("n_missing"):
        lines += ["", f"  {extras['n_missing']} labelled image(s) missing from the folder: "
                  + ", ".join(extras["missing"][:20]) + (" ..." if extras["n_missing"] > 20 else "")]
    if extras.get("n_unreadable"):
        lines += ["", f"  {extras['n_unreadable']} unreadable image(s) skipped:"]
        lines += [f"    {message}" for message in extras["unreadable"][:20]]
    if extras.get("n_duplicate_ids"):
        lines += ["", f"  {extras['n_duplicate_ids']} image id(s) listed more than once in the labels (same "
                  "diagnosis, counted once): " + ", ".join(extras["duplicate_ids"][:20])
                  + (" ..." if extras["n_duplicate_ids"] > 20 else "")]
    if extras.get("n_unlabelled_ignored"):
        lines += ["", f"  {extras['n_unlabelled_ignored']} image(s) in the folder without a label were ignored"]
    return "\n".join(lines)
