"""Classify: upload a dermatoscopic photo, see the calibrated prediction and where the model looked."""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from skin_model import config
from skin_model.case_report import CaseReport, file_stem, render_pdf, render_png
from skin_model.charts import probability_bar_chart
from skin_model.explain import METHODS, colorize
from skin_model.imaging import FILE_SUFFIXES, MAX_FILE_BYTES, SUPPORTED_DESCRIPTION, InvalidImageError
from skin_model.labels import CLASSES, CODES, MALIGNANT_CODES, by_code
from skin_model.model import ModelIntegrityError
from skin_model.safe_text import escape_markdown
from skin_model.service import Analysis, ClassifierService, Explanation
from pages import ensure_app_shell, ood_off_warning, served_service_or_error

ensure_app_shell()

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- constants
UPLOAD_TYPES = [suffix.lstrip(".") for suffix in FILE_SUFFIXES]
NO_SAMPLE = "— none —"
DEFAULT_OPACITY = 0.4
LEGEND_WIDTH, LEGEND_HEIGHT = 320, 14
#: Photos are sent to the browser as JPEG (explicitly: PNG encoding of a 600x450 photo costs ~100x more).
IMAGE_FORMAT = "JPEG"
MALIGNANT_LABEL = " + ".join(MALIGNANT_CODES)


def samples_dir() -> Path:
    """Folder of sample images: SKIN_SAMPLES_DIR read at run time, else the default."""
    return Path(os.environ.get("SKIN_SAMPLES_DIR") or config.DEFAULT_SAMPLES_DIR)


# ---------------------------------------------------------------------------------------------- loaders
@st.cache_data(show_spinner=False)
def list_samples(folder: str) -> list[str]:
    path = Path(folder)
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES)


@st.cache_data(show_spinner=False)
def sample_references(metadata_csv: str) -> dict[str, tuple[str, str]]:
    """image_id -> (dx, dx_type) from HAM10000_metadata.csv, to show the reference diagnosis of samples."""
    path = Path(metadata_csv)
    if not path.is_file():
        return {}
    table = pd.read_csv(path, usecols=["image_id", "dx", "dx_type"])
    return {row.image_id: (row.dx, row.dx_type) for row in table.itertuples()}


@st.cache_data(show_spinner=False)
def legend_bar() -> np.ndarray:
    return colorize(np.tile(np.linspace(0.0, 1.0, LEGEND_WIDTH, dtype=np.float32), (LEGEND_HEIGHT, 1)))


# ---------------------------------------------------------------------------------------------- compute
def analyse_cached(service: ClassifierService, name: str, data: bytes, tta: bool = False) -> Analysis:
    """Analyse an upload once per session; slider moves and reruns reuse the result (memory only)."""
    digest = hashlib.sha256(data).hexdigest()
    cached: Analysis | None = st.session_state.get("analysis")
    if cached is None or cached.digest != digest or cached.name != name or cached.tta != tta:
        new_image = cached is None or cached.digest != digest or cached.name != name
        cached = service.analyse(data, name=name, tta=tta)
        st.session_state["analysis"] = cached
        if new_image:
            st.session_state["explanations"] = {}
            st.session_state.pop("cam_class", None)  # a new image: explain its top class again by default
            st.session_state.pop("ood_show", None)  # and hide a flagged result again
    return cached


def explain_cached(service: ClassifierService, analysis: Analysis, code: str, method: str) -> Explanation:
    store: dict = st.session_state.setdefault("explanations", {})
    key = (analysis.digest, code, method)
    if key not in store:
        store[key] = service.explain(analysis, code, method)
    return store[key]


# ---------------------------------------------------------------------------------------------- UI
def tta_ui(default: bool) -> bool:
    return st.toggle("Test-time augmentation (average 8 flips/rotations)", key="tta", value=default,
                     help="Averages the calibrated prediction over the image's 4 rotations and their mirror "
                          "images (on by default when it helped on validation data; see the model card). "
                          "About 8x the prediction time; Grad-CAM still explains the original view.")


def input_ui() -> tuple[str, bytes, str | None] | None:
    """The upload (or chosen sample): (name, bytes, sample image_id or None)."""
    st.markdown(
        "Upload a **dermatoscopic** photo of one skin lesion. The model classifies the centre square of "
        "the image into the 7 HAM10000 diagnostic categories."
    )
    uploaded = st.file_uploader(
        f"Dermatoscopic image ({SUPPORTED_DESCRIPTION}, up to {MAX_FILE_BYTES / 1e6:.0f} MB)",
        type=UPLOAD_TYPES, key="upload",
    )
    folder = samples_dir()
    samples = list_samples(str(folder))
    choice = NO_SAMPLE
    if samples:
        choice = st.selectbox("…or try a sample image from HAM10000", [NO_SAMPLE, *samples], key="sample",
                              help=f"Images from {folder}")
    if uploaded is not None:
        return uploaded.name, uploaded.getvalue(), None
    if choice != NO_SAMPLE:
        return choice, (folder / choice).read_bytes(), Path(choice).stem
    return None


def unsure_ui(analysis: Analysis) -> None:
    p = analysis.prediction
    st.warning(
        f"**The model is unsure.** Its most likely class has a probability of only {p.top_probability:.0%} "
        f"(below the {p.unsure_threshold:.0%} threshold set for this model). Do not rely on this result: "
        "the lesion should be assessed by a clinician.",
        icon="⚠️",
    )


def prediction_ui(analysis: Analysis, reference: tuple[str, str] | None) -> None:
    p = analysis.prediction
    top = by_code(p.top_code)
    st.subheader("Most likely diagnosis")
    st.markdown(f"### {top.name} (`{top.code}`)" + ("  \n:red[**malignant category**]" if top.malignant else ""))
    st.markdown(f"Calibrated probability: **{p.top_probability:.1%}**")
    if p.unsure:
        unsure_ui(analysis)
    st.markdown("**Differential (top 3)**")
    st.markdown("\n".join(
        f"{i}. {by_code(code).name} (`{code}`) — {prob:.1%}" + (" · malignant" if by_code(code).malignant else "")
        for i, (code, prob) in enumerate(p.top_k(3), start=1)
    ))
    malignant, benign = st.columns(2)
    malignant.metric(f"Malignant ({MALIGNANT_LABEL})", f"{p.malignant_probability:.1%}")
    benign.metric("Benign (bkl, df, nv, vasc)", f"{1.0 - p.malignant_probability:.1%}")
    if reference is not None:
        dx, dx_type = reference
        st.caption(f"Reference diagnosis of this HAM10000 sample: **{by_code(dx).name}** (`{dx}`, "
                   f"confirmed by {dx_type}).")


def ood_ui(service: ClassifierService, analysis: Analysis) -> bool:
    """Warn before any diagnosis when the image does not look dermatoscopic; True if the result may be shown."""
    if not service.ood_enabled:
        ood_off_warning(service)
        return True
    if not analysis.flagged_ood:
        st.caption("Dermatoscopic-image check: passed (the image resembles the model's training images).")
        return True
    st.warning(
        "**This does not look like a dermatoscopic image.** The model was trained only on dermatoscopic "
        "photos of single skin lesions. For everyday photos, screenshots, documents, clinical photos taken "
        "without a dermatoscope, or blank images its output is meaningless, so no diagnosis is shown. "
        f"(Out-of-distribution score {analysis.ood.distance:.2f}, threshold {analysis.ood.threshold:.2f}.)",
        icon="🛑",
    )
    return st.checkbox("Show the model's output anyway (not reliable for this image)", key="ood_show")


def ood_note(service: ClassifierService, analysis: Analysis) -> str:
    """The check's outcome in one line, for the case report."""
    if analysis.ood is None:
        return f"off ({service.ood_status})"
    score = f"score {analysis.ood.distance:.2f}, threshold {analysis.ood.threshold:.2f}"
    if analysis.flagged_ood:
        return f"FLAGGED: does not look like a dermatoscopic image ({score}); output shown on request"
    return f"passed ({score})"


def probabilities_ui(analysis: Analysis) -> None:
    p = analysis.prediction
    st.plotly_chart(probability_bar_chart(p.probabilities, p.unsure_threshold), key="probabilities_chart")
    table = pd.DataFrame({
        "Code": list(CODES),
        "Diagnosis": [c.name for c in CLASSES],
        "Malignant": [c.malignant for c in CLASSES],
        "Probability": list(p.probabilities),
    }).sort_values("Probability", ascending=False)
    with st.expander("All probabilities as a table"):
        st.dataframe(table, hide_index=True, key="probabilities_table",
                     column_config={"Probability": st.column_config.NumberColumn(format="percent")})


def explanation_ui(service: ClassifierService, analysis: Analysis) -> tuple[Explanation, float]:
    st.subheader("Where the model looked")
    ranked = [code for code, _ in analysis.prediction.ranked]
    probs = dict(analysis.prediction.ranked)
    method_col, class_col, alpha_col = st.columns(3)
    # Sent to the browser with every run: after a new upload the browser can re-create the radio at its
    # default (Grad-CAM) while the session still holds Grad-CAM++; setting the state before the widget
    # makes Streamlit send the value, so the radio always shows the method in use.
    st.session_state["cam_method"] = st.session_state.get("cam_method", next(iter(METHODS)))
    method = method_col.radio("Method", list(METHODS), format_func=METHODS.get, horizontal=True, key="cam_method")
    code = class_col.selectbox("Explain the class", ranked, key="cam_class",
                               format_func=lambda c: f"{by_code(c).name.split(' (')[0]} ({c}, {probs[c]:.0%})")
    alpha = alpha_col.slider("Heatmap opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key="cam_alpha")
    loading = "" if service.explainer_ready else " (first use since the server started: loading TensorFlow)"
    with st.spinner(f"Computing {METHODS[method]}{loading}…"):
        explanation = explain_cached(service, analysis, code, method)
    original, heat, blended = st.columns(3)
    shown = dict(width="stretch", output_format=IMAGE_FORMAT)
    original.image(explanation.view, caption="What the model saw (centre square)", **shown)
    heat.image(explanation.heatmap_rgb, caption=f"{METHODS[method]} heatmap for {code}", **shown)
    blended.image(explanation.overlay(alpha), caption=f"Overlay (opacity {alpha:.2f})", **shown)
    st.image(legend_bar(), width=LEGEND_WIDTH)
    st.caption("Colour scale: **blue = low attention**, **red = high attention**. The heatmap shows which "
               "regions most raised the score of the selected class. It is not a lesion outline, and it can "
               "point at artefacts such as hair, rulers, ink or vignetting.")
    return explanation, alpha


def case_report_files(service: ClassifierService, analysis: Analysis, explanation: Explanation,
                      alpha: float) -> tuple[CaseReport, bytes, bytes]:
    """The report on what is shown and its PDF and PNG bytes, made once per image, method, class and
    opacity and kept (only the latest) in the session: reruns offer the same bytes at the same URL, so a
    click during a rerun still downloads (a file generated on click was gone: "Deferred file not found")."""
    key = (analysis.digest, analysis.name, analysis.tta, explanation.method, explanation.class_code, round(alpha, 3))
    cached = st.session_state.get("case_report")
    if cached is None or cached[0] != key:
        report = CaseReport(
            file_name=analysis.name, view=explanation.view, overlay=explanation.overlay(alpha),
            explained_class=explanation.class_code, method_name=METHODS[explanation.method],
            prediction=analysis.prediction, model_version=service.metadata.version,
            created=datetime.now(timezone.utc), ood_note=ood_note(service, analysis), tta=analysis.tta)
        cached = (key, report, render_pdf(report), render_png(report))
        st.session_state["case_report"] = cached
    return cached[1], cached[2], cached[3]


def case_report_ui(service: ClassifierService, analysis: Analysis, explanation: Explanation, alpha: float) -> None:
    """PDF and PNG downloads of a one-page case report, generated in memory."""
    report, pdf, png = case_report_files(service, analysis, explanation, alpha)
    st.subheader("Case report")
    pdf_col, png_col = st.columns(2)
    pdf_col.download_button("Download case report (PDF)", pdf,
                            file_name=f"{file_stem(report)}.pdf", mime="application/pdf",
                            key="report_pdf", on_click="ignore", icon=":material/picture_as_pdf:")
    png_col.download_button("Download case report (PNG)", png,
                            file_name=f"{file_stem(report)}.png", mime="image/png",
                            key="report_png", on_click="ignore", icon=":material/image:")
    st.caption("One page with the image, the heatmap shown above, the probabilities, the model version, "
               "the date and the disclaimer. Generated in memory; nothing is stored on the server.")


def classify_page() -> None:
    st.title("Classify a skin lesion")
    service = served_service_or_error()
    if service is None:
        return

    selected = input_ui()
    tta = tta_ui(service.metadata.test_time_augmentation)
    if selected is None:
        st.info("Upload an image to start.")
        return
    name, data, sample_id = selected
    try:
        analysis = analyse_cached(service, name, data, tta)
    except InvalidImageError as exc:
        st.session_state.pop("analysis", None)
        st.error(f"**{escape_markdown(name)}** cannot be used: {escape_markdown(exc.reason)}", icon="🚫")
        return
    except Exception:
        log.exception("Analysis of %s failed", name)
        st.error(f"**{escape_markdown(name)}** could not be analysed because of an internal error. "
                 "Please try another image.")
        return

    show_result = ood_ui(service, analysis)
    image_col, result_col = st.columns([2, 3])
    with image_col:
        width, height = analysis.original_size
        st.image(analysis.image, caption=f"{escape_markdown(name)} ({width}×{height} px, as uploaded)",
                 width="stretch", output_format=IMAGE_FORMAT)
    if not show_result:
        return
    with result_col:
        references = sample_references(str(config.DEFAULT_DATA_DIR / "HAM10000_metadata.csv")) if sample_id else {}
        prediction_ui(analysis, references.get(sample_id))
    probabilities_ui(analysis)
    try:
        explanation, alpha = explanation_ui(service, analysis)
    except ModelIntegrityError as exc:
        st.error(f"**Grad-CAM is unavailable:** {exc}. The prediction above is unaffected.", icon="🚫")
        return
    except Exception:
        log.exception("Grad-CAM failed for %s", name)
        st.error("The heatmap could not be computed for this image; the prediction above is unaffected.")
        return
    case_report_ui(service, analysis, explanation, alpha)


classify_page()
