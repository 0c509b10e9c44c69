"""Evaluation report: plots the evaluation JSON written by train.py and `python -m skin_model.cli.evaluate`
(including the refer-or-abstain curve and the out-of-distribution gate's rates), the test-time augmentation
benchmark, the training curves and the data-split audit. Nothing is retrained or re-predicted here."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from skin_model import config
from skin_model.bundle import (HISTORY_FILE, METADATA_FILE, SPLIT_FILE, TRAINING_REPORTS, BundleFileError,
                               localisation_file, read_localisation, read_ood_figures)
from skin_model.config import display_path, reports_dir, safety_results_path
from skin_model.labels import MALIGNANT_LABEL
from skin_model.evaluation.holdout import ServedRecipe
from skin_model.evaluation.metrics import EvaluationReport
from skin_model.evaluation.published import IMAGE_SPLIT_NOTE, REFERENCES
from skin_model.report.evaluation_files import file_description, list_evaluation_files, load_report, served_file_index
from skin_model.report.evaluation_tables import (PROJECT_TARGETS, comparison_frame, confusion_frames, coverage_frame,
                                                 dataset_description, headlines, operating_point, per_class_frame,
                                                 referral_frame, referral_rule, target_lines, unsure_rule)
from skin_model.report.ood_figures import MEASURE_COMMAND, FIT_COMMAND, NON_DERMOSCOPIC_SET, ood_category_frame
from skin_model.report.safety_results import SAFETY_COMMAND, tta_frame, tta_summary
from skin_model.report.served_model import served_metadata, unsure_threshold
from skin_model.report.split_audit import split_audit
from skin_model.report.training_curves import CURVE_METRICS, training_curves
from skin_model.report.charts import (confusion_heatmap, coverage_chart, pr_chart, reliability_chart, roc_chart,
                                      training_curve_chart)
from pages import ICONS, ensure_app_shell, other_clinics_ui

ensure_app_shell()

RATE = st.column_config.NumberColumn(format="%.3f")
PERCENT = st.column_config.NumberColumn(format="percent")
LOCALISATION_COMMAND = "python -m skin_model.cli.localisation --split test"


def modified_time(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


# ---------------------------------------------------------------------------------------------- cached loaders
LOADERS = {"report": load_report, "split_audit": split_audit, "unsure_threshold": unsure_threshold,
           "tta_summary": tta_summary, "training_curves": training_curves, "metadata": served_metadata}


@st.cache_data(show_spinner=False, max_entries=64)
def _cached(kind: str, path: str, mtime: float):
    """``LOADERS[kind](path)``; ``mtime`` is part of the cache key so a rewritten file is read again."""
    return LOADERS[kind](Path(path))


def cached(kind: str, path: Path):
    """The loaded and checked content of ``path`` (BundleFileError naming the problem otherwise)."""
    return _cached(kind, str(path), modified_time(path))


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
    targets_ui(report)


def targets_ui(report: EvaluationReport) -> None:
    """Which of the project's own targets (set for the test split) this evaluation meets, in plain words."""
    lines = target_lines({t.key: getattr(report, t.key) for t in PROJECT_TARGETS})
    met = sum(1 for _, ok in lines if ok)
    scope = "" if report.dataset.get("split") == "test" else " (the targets are set for the test split)"
    st.markdown(f"**Project targets on this evaluation{scope}: {met} of {len(lines)} met.**  \n"
                + "  \n".join(text for text, _ in lines))


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


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def refer_ui(report: EvaluationReport, path: Path, weights: Path) -> None:
    st.subheader("Refer or abstain")
    st.caption("When the model's top probability is below its \"unsure\" threshold, the app shows the case as "
               "unsure and asks for a clinician's assessment. Referring more cases leaves the model the cases it "
               "is surer of: the curve shows how well it does on the cases it keeps as the threshold rises.")
    try:
        frame = coverage_frame(report, path)
    except BundleFileError as exc:
        st.error(f"**The coverage curve cannot be shown.** {exc}", icon=ICONS["error"])
        return
    metadata = weights / METADATA_FILE
    try:
        threshold = cached("unsure_threshold", metadata)
    except BundleFileError as exc:
        st.warning(f"**The app's unsure threshold cannot be marked.** {exc}", icon=ICONS["warning"])
        st.plotly_chart(coverage_chart(frame, None), key="coverage_chart")
        return
    try:
        point = operating_point(report, threshold.value, path)
        missing = "this evaluation file stores no per-image probabilities"
    except BundleFileError as exc:
        point, missing = None, str(exc)
    st.plotly_chart(coverage_chart(frame, point), key="coverage_chart")
    columns = st.columns(4)
    columns[0].metric("Unsure threshold", f"{threshold.value:.1%}",
                      help=f"ModelMetadata.unsure_threshold in `{threshold.source.name}`")
    if point is not None:
        columns[1].metric("Referred as unsure", percent(point.referred))
        columns[2].metric("Kept cases: balanced accuracy", percent(point.balanced_accuracy))
        columns[3].metric("Kept cases: accuracy", percent(point.accuracy))
    else:
        columns[1].caption(f"The threshold's point on this data cannot be computed ({missing}); the curve "
                           "shows only the thresholds stored in the report.")
    st.markdown(f"The app's threshold ({threshold.value:.1%}, model {threshold.model_version}) was chosen on "
                f"the validation split by `choose_unsure_threshold`: {unsure_rule()}.")
    if report.dataset.get("split") == "val":
        st.caption("This report is the validation split the threshold was chosen on, so its figures at the "
                   "threshold are optimistic.")
    version = report.model.get("version")
    if version and version != threshold.model_version:
        st.warning(f"The threshold belongs to the served model {threshold.model_version}; this report is for "
                   f"model {version}.", icon=ICONS["warning"])


def referral_ui(files: list, weights: Path) -> None:
    """The malignant referral cue's sensitivity and specificity on every evaluation offered."""
    st.subheader("Malignant referral cue")
    try:
        metadata = cached("metadata", weights / METADATA_FILE)
    except BundleFileError as exc:
        st.warning(f"**The referral threshold cannot be read.** {exc}", icon=ICONS["warning"])
        return
    if metadata.referral_threshold is None:
        st.info("The served model has no referral threshold (`referral_threshold` in metadata.json), so the app "
                "shows no referral cue.", icon=ICONS["info"])
        return
    served = metadata.referral_threshold
    entries = []
    for file in files:
        try:
            report = cached("report", file.path)
        except BundleFileError:
            continue
        entries.append((file_description(file, report), report))
    st.markdown(f"The app says **refer** when the malignant roll-up ({MALIGNANT_LABEL}) reaches "
                f"**{served:.1%}**, even when a benign category is on top. The threshold was chosen by "
                f"`choose_referral_threshold` as {referral_rule()}. On each evaluation offered above, at the "
                "threshold of the model that made it (a held-out-source run chose its own):")
    st.dataframe(referral_frame(entries, served), hide_index=True, key="referral_table",
                 column_config={"Threshold": PERCENT, "Malignant sensitivity": PERCENT, "Specificity": PERCENT,
                                "Referred": PERCENT})
    st.caption(f"Sensitivity: share of malignant images ({MALIGNANT_LABEL}) referred. Specificity: share of benign "
               "images not referred. The validation figures are the ones the threshold was chosen on "
               "(optimistic); test and any other sources are held out.")


def ood_ui(weights: Path) -> None:
    st.subheader("Out-of-distribution gate")
    st.caption("Before showing a diagnosis, the app checks that an upload resembles the dermatoscopic training "
               "images (the distance of its features to theirs); a flagged image gets a warning and its output "
               "is hidden unless asked for. The gate should pass dermoscopic images and flag everything else.")
    summary = read_ood_figures(weights)
    if summary is None:
        st.info(f"No out-of-distribution figures in `{display_path(weights)}`. Compute them once (not at page "
                f"load): `{FIT_COMMAND}` fits the gate on the training split, then `{MEASURE_COMMAND}` writes "
                "the pass and reject rates to ood_figures.json.")
        return
    try:
        served = cached("metadata", weights / METADATA_FILE).model_sha256
    except BundleFileError:
        served = None
    if served and summary.model_sha256 != served:
        st.warning("These figures were measured for another model than the one served: re-run "
                   f"`{MEASURE_COMMAND}`.", icon=ICONS["warning"])

    def goal(target: float, met: bool) -> str:
        return f"Goal ≥ {target:.0%}: **{'met' if met else 'not met'}**"

    columns = st.columns(3)
    columns[0].metric("Dermoscopic images passed", percent(summary.dermoscopic_pass_rate),
                      help=f"Share of {summary.n_dermoscopic:,} HAM10000 {summary.dermoscopic_split} images "
                           "the gate lets through.")
    columns[0].caption(goal(summary.pass_goal, summary.meets_pass_goal)
                       + f" · {summary.n_dermoscopic:,} {summary.dermoscopic_split} images")
    columns[1].metric("Non-dermoscopic images rejected", percent(summary.non_dermoscopic_reject_rate),
                      help="Share of the non-dermoscopic set the gate flags.")
    columns[1].caption(goal(summary.reject_goal, summary.meets_reject_goal)
                       + f" · {summary.n_non_dermoscopic:,} images")
    columns[2].metric("Gate threshold", f"{summary.threshold:.3f}",
                      help="Images whose distance score is above it are flagged.")
    gate = summary.gate
    if gate.get("components") is not None:
        columns[2].caption(f"{gate['components']} PCA components, {gate.get('feature_layer', 'pooled')} features"
                           + (f", {gate['val_pass_rate']:.1%} of validation images pass"
                              if isinstance(gate.get("val_pass_rate"), (int, float)) else ""))
    if summary.categories:
        st.dataframe(ood_category_frame(summary), hide_index=True, key="ood_categories",
                     column_config={"Reject rate": PERCENT})
    st.markdown(f"**Non-dermoscopic set** ({summary.n_non_dermoscopic:,} images): {NON_DERMOSCOPIC_SET}.")
    passed = ", ".join(summary.passed_names) if summary.passed_names else "none"
    st.caption(f"Measured {summary.measured}. Non-dermoscopic images the gate let through: {passed}.")


def tta_ui(report: EvaluationReport) -> None:
    st.subheader("Test-time augmentation")
    st.caption("Test-time augmentation (TTA, a toggle on the Classify page, on by default when it raised the "
               "validation balanced accuracy: see the model card) averages the prediction over the 8 flips and "
               "90° rotations of the image, since a dermoscopic image has no natural orientation; it runs the "
               "model 8 times per image. This report's predictions: "
               f"{'8-view TTA' if report.model.get('tta') else 'single view'}.")
    path = safety_results_path()
    try:
        summary = cached("tta_summary", path)
    except BundleFileError as exc:
        if not path.exists():
            st.info(f"No test-time augmentation benchmark found (`{display_path(path)}`). Produce it with `{SAFETY_COMMAND}` "
                    "(several minutes on 2 cores; `--val-limit N` for a quick check).")
        else:
            st.warning(f"**The TTA benchmark cannot be shown.** {exc}. Re-create it with `{SAFETY_COMMAND}`.",
                       icon=ICONS["warning"])
        return
    st.dataframe(tta_frame(summary), hide_index=True, key="tta_table")
    st.caption(f"From `{path.name}`, measured {summary.measured} on {summary.n_val:,} images of the "
               f"{summary.split} split (not this report's images), model {summary.model_version or 'not recorded'}"
               f"; latency is the median time for one image on {summary.machine}.")
    version = report.model.get("version")
    if summary.model_version and version and summary.model_version != version:
        st.warning(f"The benchmark was measured for model {summary.model_version}; this report is for model "
                   f"{version}.", icon=ICONS["warning"])


def localisation_ui(weights: Path, split: str = "test") -> None:
    st.subheader("Does Grad-CAM look at the lesion?")
    summary = read_localisation(weights, split)
    if summary is None:
        st.info(f"No Grad-CAM localisation stored ({localisation_file(split)} in `{display_path(weights)}`). "
                f"Compute it once (not at page load) with `{LOCALISATION_COMMAND}`.")
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
    frame = comparison_frame(report)
    shown = frame.drop(columns="Source").assign(Ref=[""] + [f"[{i}]" for i in range(1, len(frame))])
    for column in ("Accuracy", "Balanced accuracy", "Macro AUC"):
        shown[column] = [("n/a" if v is None or v != v else f"{v:.3f}") for v in shown[column]]
    st.table(shown.set_index("Model"))  # a static table wraps its text, so it fits the page at any width
    st.markdown("\n".join(f"{i}. {source}" for i, source in enumerate(frame["Source"].iloc[1:], start=1)))
    st.warning(f"**Compare like with like.** {IMAGE_SPLIT_NOTE}", icon=ICONS["balance"])
    st.caption("\"verified\": the figure was found in a public source (the publication or a copy of its table) "
               "while building this page; \"reported\": as published, not re-checked offline. References: "
               + " ".join(REFERENCES))


def training_ui(weights: Path) -> None:
    st.header("Training curves")
    path = weights / HISTORY_FILE
    try:
        curves = cached("training_curves", path)
    except BundleFileError as exc:
        st.error(f"**Training curves unavailable.** {exc}", icon=ICONS["error"])
        return
    stages = ", ".join(curves["stage"].unique())
    st.caption(f"From `{path.name}` (stages: {stages}). Training metrics are measured on augmented images with "
               "dropout active, validation metrics on the untouched validation split.")
    for column, metric in zip(st.columns(len(CURVE_METRICS)), CURVE_METRICS):
        column.plotly_chart(training_curve_chart(curves, metric), key=f"training_{metric}")


def split_ui(weights: Path) -> None:
    st.header("Data-split audit")
    path = weights / SPLIT_FILE
    try:
        audit = cached("split_audit", path)
    except BundleFileError as exc:
        st.error(f"**Split audit unavailable.** {exc}", icon=ICONS["error"])
        return
    if audit.passed:
        st.success(f"**Pass:** none of the {audit.n_lesions:,} lesions has images in more than one split "
                   f"(checked from `{path.name}`, {audit.n_images:,} images).", icon=ICONS["ok"])
    else:
        shown = ", ".join(audit.crossing_lesions[:10]) + (" …" if len(audit.crossing_lesions) > 10 else "")
        st.error(f"**Fail:** {len(audit.crossing_lesions)} lesion(s) have images in more than one split: "
                 f"{shown}. Test figures are optimistic.", icon=ICONS["error"])
    images, lesions = st.columns(2)
    images.markdown("**Images per class and split**")
    images.dataframe(audit.images, key="split_images")
    lesions.markdown("**Lesions per class and split**")
    lesions.dataframe(audit.lesions, key="split_lesions")


# ---------------------------------------------------------------------------------------------- page
def evaluation_ui(weights: Path) -> None:
    files = list_evaluation_files(weights)
    if not files:
        st.error(f"**No evaluation file found.** Expected {' or '.join(TRAINING_REPORTS)} in "
                 f"`{display_path(weights)}` (written by `python train.py`) or JSON files in "
                 f"`{display_path(reports_dir(weights))}` (written by `python -m skin_model.cli.evaluate ... --out FILE`).",
                 icon=ICONS["error"])
        return
    reports = []
    for file in files:
        try:
            reports.append(cached("report", file.path))
        except BundleFileError:
            reports.append(None)
    try:
        served_tta = cached("metadata", weights / METADATA_FILE).test_time_augmentation
    except BundleFileError:
        served_tta = False
    labels = {file.path: file_description(file, report) for file, report in zip(files, reports)}
    chosen = st.selectbox("Evaluation file", files, format_func=lambda f: labels[f.path], key="report_file",
                          index=served_file_index(reports, served_tta),
                          help="Opens on the test split predicted as the app serves it "
                               f"({'8-view TTA' if served_tta else 'single view'}). From the model folder and its "
                               "evaluations folder (env SKIN_REPORTS_DIR).")
    try:
        report = cached("report", chosen.path)
    except BundleFileError as exc:
        st.error(f"**This evaluation file cannot be shown.** {exc}", icon=ICONS["error"])
        return
    st.download_button("Download this evaluation (JSON)", chosen.path.read_bytes(), file_name=chosen.path.name,
                       mime="application/json", key="download_report")
    headline_ui(report)
    per_class_ui(report)
    confusion_ui(report)
    curves_ui(report)
    reliability_ui(report)
    refer_ui(report, chosen.path, weights)
    referral_ui(files, weights)
    try:
        ood_ui(weights)
    except BundleFileError as exc:
        st.error(f"**The out-of-distribution figures cannot be shown.** {exc}", icon=ICONS["error"])
    tta_ui(report)
    try:
        localisation_ui(weights)
    except BundleFileError as exc:
        st.error(f"**Grad-CAM localisation cannot be shown.** {exc}", icon=ICONS["error"])
    comparison_ui(report)


def served_recipe(weights: Path) -> ServedRecipe | None:
    """The served model's recipe and data (``holdout.ServedRecipe``); None when unreadable or not recorded
    (the metadata's own problems are reported where the page uses it)."""
    try:
        return ServedRecipe.of(cached("metadata", weights / METADATA_FILE))
    except BundleFileError:
        return None


def report_page() -> None:
    st.title("Evaluation report")
    st.caption("Everything on this page is read from files written by training and evaluation; "
               "no model is run here.")
    weights = config.served_weights_dir()
    evaluation_ui(weights)
    other_clinics_ui(weights, key="report", served_recipe=served_recipe(weights))
    training_ui(weights)
    split_ui(weights)


report_page()
