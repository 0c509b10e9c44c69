"""About / model card: what the served model is for, what it was trained on and how, and its limits.

Every model-specific fact is read from the bundle's metadata.json (SKIN_WEIGHTS_DIR at run time)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from skin_model import config
from skin_model.labels import MALIGNANT_LABEL
from skin_model.config import display_path
from skin_model.evaluation.holdout import ServedRecipe
from skin_model.evaluation.metrics import REFERRAL_TARGET_SENSITIVITY
from skin_model.bundle import METADATA_FILE, BundleFileError, ModelMetadata, sha256_of
from skin_model.report.evaluation_tables import target_lines
from pages import ICONS, ensure_app_shell, other_clinics_ui

ensure_app_shell()

NOT_RECORDED = "not recorded in metadata.json"
TRAINING_KEYS = (  # (metadata.training key, label), in reading order
    ("image_size", "Input size (px)"), ("head_epochs", "Head epochs (frozen backbone)"),
    ("recipe", "Recipe (train.py flags that differ from the defaults)"),
    ("finetune_epochs", "Maximum fine-tuning epochs"), ("epochs_run", "Epochs actually run"),
    ("fine_tune_from", "Fine-tuned from layer"), ("head_lr", "Head learning rate"),
    ("finetune_lr", "Peak fine-tuning learning rate"), ("patience", "Early-stopping patience"),
    ("label_smoothing", "Label smoothing"), ("ema_momentum", "Weight moving-average momentum (0 = off)"),
    ("logit_adjustment", "Logit-adjusted loss, tau (0 = class weights instead)"), ("mixup", "MixUp alpha (0 = off)"),
    ("colour_constancy", "Colour constancy (network's first layer)"),
    ("augment", "Augmentation added to flips/rotations/crops/jitter"),
    ("extra_data", "Further labelled folders pooled with HAM10000"),
    ("holdout_source", "Held-out sources (leave-source-out run)"),
    ("distill_from", "Distilled from (teacher model folders)"),
    ("distill_weight", "Teachers' share of the targets (when distilled)"),
    ("batch_size", "Batch size"), ("seed", "Seed"), ("device", "Device"), ("max_images", "Image limit (0 = all)"),
)
#: Training settings that hold machine paths: the card shows only the folder names.
PATH_KEYS = ("distill_from", "extra_data")
#: metadata.metrics rows in reading order with their labels (how each split was predicted).
METRIC_ROWS = {"test_tta": "test, 8-view TTA", "test": "test, single view", "val_tta": "validation, 8-view TTA",
               "val": "validation, single view"}
METRIC_LABELS = {"balanced_accuracy": "Balanced accuracy", "accuracy": "Accuracy", "macro_auc": "Macro AUC",
                 "ece": "ECE", "melanoma_sensitivity": "Melanoma sensitivity",
                 "melanoma_specificity": "Melanoma specificity"}


@st.cache_data(show_spinner=False)
def cached_metadata(path: str, mtime: float) -> ModelMetadata:
    return ModelMetadata.from_json(Path(path))


@st.cache_data(show_spinner="Checking the weights file…")
def cached_sha256(path: str, mtime: float) -> str:
    return sha256_of(Path(path))


def load_metadata(path: Path) -> ModelMetadata | None:
    """The metadata, or None after showing an error that names the file and the problem."""
    if not path.is_file():
        st.error(f"**No model card available:** `{display_path(path)}` does not exist. Train a model with `python train.py` "
                 "or set SKIN_WEIGHTS_DIR to a model bundle folder.", icon=ICONS["error"])
        return None
    try:
        return cached_metadata(str(path), path.stat().st_mtime)
    except BundleFileError as exc:  # not JSON, not the metadata's fields, unreadable: named by the reader
        st.error(f"**The model card cannot be shown:** {exc}.", icon=ICONS["error"])
    return None


def copy_sides(folder: str, entry: int | dict) -> tuple[int, dict[int | None, int]]:
    """Images and images per short side (the centre square's side, None when unknown) of one ``image_copies``
    entry: recorded from the files' headers, or, in older bundles, a count and a folder named like
    images_200x150 or images_crop224."""
    if isinstance(entry, dict):
        sides = {int(side) if side.isdigit() else None: int(n) for side, n in entry.get("short_sides", {}).items()}
        return int(entry.get("images", sum(sides.values()))), sides
    side = None
    if match := re.search(r"(\d+)x(\d+)", folder):
        side = min(int(match.group(1)), int(match.group(2)))
    elif match := re.search(r"crop(\d+)", folder):
        side = int(match.group(1))
    return int(entry), {side: int(entry)}


def copy_detail(sides: dict[int | None, int], input_size: int) -> str:
    """'centre square 150 px, upsampled to the input size' or, for mixed sizes, each side with its count."""
    def one(side: int | None) -> str:
        if side is None:
            return "resolution unknown"
        return f"{side} px" + (", upsampled to the input size" if side < input_size else "")
    if len(sides) == 1:
        (side,) = sides
        return one(side) if side is None else f"centre square {one(side)}"
    ordered = sorted(sides.items(), key=lambda item: -item[1])
    return "centre squares " + "; ".join(f"{n:,} of {one(side)}" for side, n in ordered)


def folder_names(value: Any) -> Any:
    """Paths reduced to their last part (no machine paths on the card); other values unchanged."""
    if isinstance(value, list):
        return [Path(str(v)).name for v in value]
    return Path(str(value)).name if isinstance(value, str) and "/" in value else value


def format_value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------------------------------------- sections
def identity_ui(meta: ModelMetadata, weights: Path) -> None:
    st.markdown(f"**Version:** `{meta.version}` · **created:** {meta.created} · **input:** "
                f"{meta.input_size}×{meta.input_size} px")
    model_path = weights / meta.model_file
    st.markdown(f"**Weights sha256** (`{meta.model_file}`): `{meta.model_sha256 or NOT_RECORDED}`")
    if model_path.is_file() and meta.model_sha256:
        actual = cached_sha256(str(model_path), model_path.stat().st_mtime)
        if actual == meta.model_sha256:
            st.caption(f"The file in `{display_path(weights)}` matches this sha256. Predictions and Grad-CAM are "
                       "served by a LiteRT copy (`model.tflite`, with the head's weights in `head.npz`) built from "
                       "it and checked against it.")
        else:
            st.error(f"`{display_path(model_path)}` has sha256 `{actual}`, not the one recorded: the weights were "
                     "changed.", icon=ICONS["error"])


def intended_use_ui(meta: ModelMetadata) -> None:
    st.header("Intended use")
    st.markdown(meta.intended_use)
    st.warning("For education and research only. It is **not a medical device** and must not be used to "
               "diagnose, treat or rule out any condition.", icon=ICONS["warning"])


def data_ui(meta: ModelMetadata) -> None:
    st.header("Training data and licence")
    st.markdown(f"**Data:** {meta.data.get('source', NOT_RECORDED)}  \n**Licence:** {meta.licence}")
    counts = meta.data.get("counts")
    if counts:
        table = pd.DataFrame(counts)
        table.loc["total"] = table.sum()
        lesions = meta.data.get("lesions", {})
        if lesions:
            table.loc["lesions"] = pd.Series(lesions)
        st.markdown(f"Images per class and split (split by lesion, seed {meta.data.get('split_seed', '?')}):")
        st.dataframe(table, key="card_counts")
    folders = meta.data.get("folders")
    if folders:
        st.markdown("Sources (clinics and archives; each folder split on its own, by lesion):")
        st.dataframe(sources_table(folders), key="card_sources", hide_index=True)


def sources_table(folders: list[dict]) -> pd.DataFrame:
    """One row per source of metadata.json's ``data.folders``: collection, credit, licence, images per split."""
    rows = []
    for folder in folders:
        for source in folder["sources"]:
            row = {"source": source["source"], "collection": source["collection"], "folder": folder["folder"]}
            row.update({split: sum(counts.values()) for split, counts in source["counts"].items()})
            row.update(classes=", ".join(sorted({c for counts in source["counts"].values() for c in counts})),
                       licence=source["licence"], credit=source["credit"])
            rows.append(row)
    return pd.DataFrame(rows)


def classes_ui(meta: ModelMetadata) -> None:
    st.header("Classes")
    table = pd.DataFrame(meta.classes).rename(columns={"code": "Code", "name": "Diagnosis", "malignant": "Malignant"})
    st.dataframe(table, hide_index=True, key="card_classes")


def preprocessing_ui(meta: ModelMetadata) -> None:
    st.header("Preprocessing")
    if not meta.preprocessing:
        st.info(f"Preprocessing {NOT_RECORDED}.")
        return
    st.markdown("\n".join(f"- **{step}:** {how}" for step, how in meta.preprocessing.items()))


def training_ui(meta: ModelMetadata) -> None:
    st.header("Training recipe")
    training = meta.training
    if not training:
        st.info(f"Training recipe {NOT_RECORDED}.")
    else:
        rows = [(label, format_value(training[key] if key not in PATH_KEYS else folder_names(training[key])))
                for key, label in TRAINING_KEYS if key in training]
        if training.get("class_weights"):
            rows.append(("Class weights (balanced)", format_value(
                {k: round(v, 2) for k, v in training["class_weights"].items()})))
        st.dataframe(pd.DataFrame(rows, columns=["Setting", "Value"]), hide_index=True, key="card_training")
    backbone = meta.backbone
    st.markdown(f"**Backbone:** {backbone.get('architecture', NOT_RECORDED)}, ImageNet weights "
                f"`{backbone.get('source', '?')}` (sha256 `{backbone.get('sha256') or '?'}`).  \n"
                f"**Calibration:** softmax temperature {meta.temperature:.3f} (fitted on validation). "
                f"**\"Unsure\" threshold:** top probability below {meta.unsure_threshold:.1%}.  \n"
                + (f"**Referral threshold:** refer when the malignant roll-up ({MALIGNANT_LABEL}) reaches "
                   f"{meta.referral_threshold:.1%} (chosen on validation as served for at least "
                   f"{REFERRAL_TARGET_SENSITIVITY:.0%} malignant sensitivity).  \n" if meta.referral_threshold is not None else
                   "**Referral threshold:** none recorded (no referral cue).  \n") +
                f"**Test-time augmentation** (average of the 8 flips/rotations): "
                f"{'on' if meta.test_time_augmentation else 'off'} by default in the app and the evaluate CLI "
                "(on only when it raised validation balanced accuracy; `val_tta` in the metrics below).")


def served_row(meta: ModelMetadata) -> str:
    """The metrics row of the test split predicted as the app serves it."""
    return "test_tta" if meta.test_time_augmentation and "test_tta" in meta.metrics else "test"


def metrics_ui(meta: ModelMetadata) -> None:
    st.header("Metrics")
    if not meta.metrics:
        st.info(f"Metrics {NOT_RECORDED}. See the Evaluation report page.")
        return
    order = [key for key in METRIC_ROWS if key in meta.metrics] + [k for k in meta.metrics if k not in METRIC_ROWS]
    served = served_row(meta)
    table = pd.DataFrame({key: meta.metrics[key] for key in order}).T.rename(columns=METRIC_LABELS)
    table.index = [METRIC_ROWS.get(key, key) + (" (as served)" if key == served else "") for key in order]
    table.index.name = "split"
    st.dataframe(table, key="card_metrics", column_config={c: st.column_config.NumberColumn(format="%.3f")
                                                            for c in table.columns})
    st.caption("Test = held-out lesions never used for any choice; validation = used for checkpoint selection "
               "and calibration, so optimistic. Details on the Evaluation report page.")
    if served in meta.metrics:
        lines = target_lines(meta.metrics[served])
        met = sum(1 for _, ok in lines if ok)
        st.markdown(f"**Project targets, {METRIC_ROWS[served]} ({met} of {len(lines)} met):**\n"
                    + "\n".join(f"- {text}" for text, _ in lines))


def limits_ui(meta: ModelMetadata) -> None:
    st.header("Known limits")
    copies = meta.data.get("image_copies") or {}
    if copies:
        parts = []
        for folder, entry in copies.items():
            count, sides = copy_sides(folder, entry)
            parts.append(f"{count:,} from `{folder}` ({copy_detail(sides, meta.input_size)})")
        resolution = (f"Most training images are reduced public copies rather than the 600×450 originals: "
                      f"{'; '.join(parts)}. Detail finer than these copies was never seen in training.")
    else:
        resolution = f"Resolution of the training copies {NOT_RECORDED}."
    if not meta.known_limits:
        st.info(f"Known limits {NOT_RECORDED} (`known_limits`).")
    st.markdown("\n".join([f"- {limit}" for limit in meta.known_limits] + [f"- **Image resolution.** {resolution}"]))


def model_card_page() -> None:
    st.title("About this model")
    weights = config.served_weights_dir()
    meta = load_metadata(weights / METADATA_FILE)
    if meta is None:
        return
    identity_ui(meta, weights)
    intended_use_ui(meta)
    data_ui(meta)
    classes_ui(meta)
    preprocessing_ui(meta)
    training_ui(meta)
    metrics_ui(meta)
    other_clinics_ui(weights, key="card", served_recipe=ServedRecipe.of(meta))
    limits_ui(meta)


model_card_page()
