"""Evaluation report: plots the evaluation JSON written by train.py and `python -m skin_model.evaluate`,
the training curves and the data-split audit. Nothing is retrained or re-predicted here."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from skin_model import config
from skin_model.metrics import EvaluationReport
from skin_model.published import IMAGE_SPLIT_NOTE, REFERENCES
from skin_model.report_charts import (confusion_heatmap, pr_chart, reliability_chart, roc_chart,
                                      training_curve_chart)
from skin_model.report_data import (CURVE_METRICS, HISTORY_FILE, SPLIT_FILE, TRAINING_REPORTS, ReportError,
                                    SplitAudit, comparison_frame, confusion_frames, dataset_description, headlines,
                                    list_evaluation_files, load_report, localisation_summary, per_class_frame,
                                    reports_dir, split_audit, training_curves)

RATE = st.column_config.NumberColumn(format="%.3f")
LOCALISATION_COMMAND = "python -m skin_model.localisation --split test"


def weights_dir() -> Path:
    """SKIN_WEIGHTS_DIR read at run time (tests repoint it), else the default bundle folder."""
    return Path(os.environ.get("SKIN_WEIGHTS_DIR") or config.DEFAULT_WEIGHTS_DIR)


def modified_time(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


# ---------------------------------------------------------------------------------------------- cached loaders
@st.cache_data(show_spinner=False, max_entries=32)
def cached_report(path: str, mtime: float) -> EvaluationReport:
    """The report at ``path``; ``mtime`` is part of the cache key so a rewritten file is read again."""
    return load_report(Path(path))


@st.cache_data(show_spinner=False, max_entries=8)
def cached_split_audit(path: str, mtime: float) -> SplitAudit:
    return split_audit(Path(path))


@st.cache_data(show_spinner=False, max_entries=8)
def cached_training_curves(path: str, mtime: float) -> pd.DataFrame:
    return training_curves(Path(path))


# ---------------------------------------------------------------------------------------------- sections
def headline_ui(report: EvaluationReport) -> None:
    st.markdown(f"Evaluated on: {dataset_description(report)}")
    figures = headlines(report)
    for row in (figures[:3], figures[3:]):
        for column, figure in zip(st.columns(3), row):
            column.metric(figure.label, figure.text, help=figure.meaning)
            column.caption(figure.meaning)
    if report.ece_uncalibrated is not None:
        temperature = report.model.get("temperature")
        fitted = (f"temperature {temperature:.3f}" if isinstance(temperature, (int, float))
                  else "temperature not recorded")
        st.caption(f"Calibration error before temperature scaling: {report.ece_uncalibrated:.3f} ({fitted}).")


def per_class_ui(report: EvaluationReport) -> None:
    st.subheader("Per class")
    st.dataframe(per_class_frame(report), hide_index=True, key="per_class_table",
                 column_config={"Precision": RATE, "Recall": RATE, "F1": RATE, "AUC": RATE,
                                "Average precision": RATE})
    st.caption("Recall is the class's sensitivity; support is the number of images of the class in this set. "
               "AUC is empty for a class absent from the set.")


def confusion_ui(report: EvaluationReport) -> None:
    st.subheader("Confusion matrix")
    counts, shares = confusion_frames(report)
    left, right = st.columns(2)
    left.plotly_chart(confusion_heatmap(counts, normalised=False), key="confusion_counts")
    right.plotly_chart(confusion_heatmap(shares, normalised=True), key="confusion_normalised")


def curves_ui(report: EvaluationReport) -> None:
    st.subheader("ROC and precision-recall curves")
    left, right = st.columns(2)
    left.plotly_chart(roc_chart(report), key="roc_chart")
    right.plotly_chart(pr_chart(report), key="pr_chart")
    st.caption("With 7 imbalanced classes, precision-recall curves show the rare classes' difficulty more "
               "honestly than ROC curves: a curve's chance level is the class's prevalence.")


def reliability_ui(report: EvaluationReport) -> None:
    st.subheader("Calibration")
    st.plotly_chart(reliability_chart(report), key="reliability_chart")
    st.caption("Each point is a confidence bin: a calibrated model's points lie on the diagonal (when it says "
               "70%, it is right 70% of the time). The temperature is fitted on the validation split.")


def localisation_ui(report: EvaluationReport, path: Path) -> None:
    st.subheader("Does Grad-CAM look at the lesion?")
    summary = localisation_summary(report, path)
    if summary is None:
        st.info(f"No Grad-CAM localisation stored in {path.name}. Compute it once (not at page load) with "
                f"`{LOCALISATION_COMMAND}`; it is written into the evaluation JSON.")
        return
    def share(target: str) -> str:
        value = summary.share_inside.get(target)
        return "n/a" if value is None else f"{value:.1%}"

    columns = st.columns(3)
    columns[0].metric("Peak inside the box (predicted class)", share("predicted"))
    columns[1].metric("Peak inside the box (true class)", share("true"))
    columns[2].metric("Chance rate", f"{summary.chance_rate:.1%}",
                      help="Mean share of the model's crop covered by the box: how often a random point "
                           "would fall inside it.")
    st.markdown(
        f"Share of **{summary.n_images:,}** {summary.split} images whose Grad-CAM peak falls inside the lesion "
        f"box. Method: {summary.method}.  \n"
        f"**Boxes:** {summary.box_source}. {summary.box_limits} "
        "The chance rate is what a peak placed at random in the model's crop would score; only the margin "
        "above it is evidence that the heatmaps follow the lesion.")


def comparison_ui(report: EvaluationReport) -> None:
    st.subheader("Comparison with published results")
    st.dataframe(comparison_frame(report), hide_index=True, key="comparison_table",
                 column_config={"Accuracy": RATE, "Balanced accuracy": RATE, "Macro AUC": RATE})
    st.warning(f"**Compare like with like.** {IMAGE_SPLIT_NOTE}", icon="⚖️")
    st.caption("\"verified\": the figure was found in a public source (the publication or a copy of its table) "
               "while building this page; \"reported\": as published, not re-checked offline. References: "
               + " ".join(REFERENCES))


def training_ui(weights: Path) -> None:
    st.header("Training curves")
    path = weights / HISTORY_FILE
    try:
        curves = cached_training_curves(str(path), modified_time(path))
    except ReportError as exc:
        st.error(f"**Training curves unavailable.** {exc}", icon="🚫")
        return
    stages = ", ".join(curves["stage"].unique())
    st.caption(f"From `{path}` (stages: {stages}). Training metrics are measured on augmented images with "
               "dropout active, validation metrics on the untouched validation split.")
    for column, metric in zip(st.columns(len(CURVE_METRICS)), CURVE_METRICS):
        column.plotly_chart(training_curve_chart(curves, metric), key=f"training_{metric}")


def split_ui(weights: Path) -> None:
    st.header("Data-split audit")
    path = weights / SPLIT_FILE
    try:
        audit = cached_split_audit(str(path), modified_time(path))
    except ReportError as exc:
        st.error(f"**Split audit unavailable.** {exc}", icon="🚫")
        return
    if audit.passed:
        st.success(f"**Pass:** none of the {audit.n_lesions:,} lesions has images in more than one split "
                   f"(checked from `{path.name}`, {audit.n_images:,} images).", icon="✅")
    else:
        shown = ", ".join(audit.crossing_lesions[:10]) + (" …" if len(audit.crossing_lesions) > 10 else "")
        st.error(f"**Fail:** {len(audit.crossing_lesions)} lesion(s) have images in more than one split: "
                 f"{shown}. Test figures are optimistic.", icon="🚫")
    images, lesions = st.columns(2)
    images.markdown("**Images per class and split**")
    images.dataframe(audit.images, key="split_images")
    lesions.markdown("**Lesions per class and split**")
    lesions.dataframe(audit.lesions, key="split_lesions")


# ---------------------------------------------------------------------------------------------- page
def evaluation_ui(weights: Path) -> None:
    files = list_evaluation_files(weights)
    if not files:
        st.error(f"**No evaluation file found.** Expected {' or '.join(TRAINING_REPORTS)} in `{weights}` "
                 f"(written by `python train.py`) or JSON files in `{reports_dir(weights)}` (written by "
                 "`python -m skin_model.evaluate ... --out FILE`).", icon="🚫")
        return
    chosen = st.selectbox("Evaluation file", files, format_func=lambda f: f.label, key="report_file",
                          help=f"From `{weights}` and `{reports_dir(weights)}` (env SKIN_REPORTS_DIR).")
    try:
        report = cached_report(str(chosen.path), modified_time(chosen.path))
    except ReportError as exc:
        st.error(f"**This evaluation file cannot be shown.** {exc}", icon="🚫")
        return
    st.download_button("Download this evaluation (JSON)", chosen.path.read_bytes(), file_name=chosen.path.name,
                       mime="application/json", key="download_report")
    headline_ui(report)
    per_class_ui(report)
    confusion_ui(report)
    curves_ui(report)
    reliability_ui(report)
    try:
        localisation_ui(report, chosen.path)
    except ReportError as exc:
        st.error(f"**Grad-CAM localisation cannot be shown.** {exc}", icon="🚫")
    comparison_ui(report)


def report_page() -> None:
    st.title("Evaluation report")
    st.caption("Everything on this page is read from files written by training and evaluation; "
               "no model is run here.")
    weights = weights_dir()
    evaluation_ui(weights)
    training_ui(weights)
    split_ui(weights)


report_page()
