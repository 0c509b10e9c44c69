"""Classify: upload a dermatoscopic photo, see the calibrated prediction and where the model looked."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from skin_model import config
from skin_model.serving.case_report import CaseReport, file_stem, render_pdf, render_png
from skin_model.serving.charts import attention_legend, probability_bar_chart
from skin_model.serving.explain import METHODS, colorize
from skin_model.data.imaging import FILE_SUFFIXES, MAX_FILE_BYTES, SUPPORTED_DESCRIPTION, InvalidImageError
from skin_model.serving.inference import Prediction, format_probability
from skin_model.labels import BENIGN_LABEL, CLASSES, CODES, MALIGNANT_LABEL, by_code
from skin_model.bundle import SPLIT_FILE, ModelIntegrityError
from skin_model.safe_text import escape_markdown
from skin_model.serving.samples import SampleReference, sample_references
from skin_model.serving.service import Analysis, ClassifierService, Explanation, outline_centre_square
from skin_model.serving.verdict import REFERRAL_TARGET_SENSITIVITY
from pages import ICONS, ensure_app_shell, ood_off_warning, served_service_or_error

ensure_app_shell()

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- constants
UPLOAD_TYPES = [suffix.lstrip(".") for suffix in FILE_SUFFIXES]
NO_SAMPLE = "— none —"
DEFAULT_OPACITY = 0.4
LEGEND_WIDTH, LEGEND_HEIGHT = 320, 14
#: Photos are sent to the browser as JPEG (explicitly: PNG encoding of a 600x450 photo costs ~100x more).
IMAGE_FORMAT = "JPEG"


# ---------------------------------------------------------------------------------------------- loaders
@st.cache_resource(show_spinner=False)  # shared, not copied per run: read only
def list_samples(folder: str) -> list[str]:
    path = Path(folder)
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES)


@st.cache_resource(show_spinner=False)  # 10,015 references: unpickling a copy every run cost ~30 ms; read only
def cached_sample_references(split_csv: str, metadata_csv: str) -> dict[str, SampleReference]:
    return sample_references(Path(split_csv), Path(metadata_csv))


def served_sample_references() -> dict[str, SampleReference]:
    """Reference diagnosis and split of each HAM10000 image, from the served bundle's split.csv."""
    return cached_sample_references(str(config.served_weights_dir() / SPLIT_FILE),
                                    str(config.DEFAULT_DATA_DIR / "HAM10000_metadata.csv"))


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
            st.session_state.pop("report_wanted", None)  # and make no case report until asked again
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


@dataclass(frozen=True)
class Selected:
    """The image to classify: an upload or a HAM10000 sample (with its reference, when known)."""

    name: str
    data: bytes
    source: str  # "upload" or "sample"
    reference: SampleReference | None = None


def clear_sample() -> None:
    """A new upload replaces the chosen sample (the upload is what gets classified)."""
    st.session_state["sample"] = NO_SAMPLE


def input_ui() -> Selected | None:
    """The upload or the chosen sample; says which one is classified."""
    st.markdown(
        "Upload a **dermatoscopic** photo of one skin lesion. The model classifies the centre square of "
        "the image (outlined on it below) into the 7 HAM10000 diagnostic categories."
    )
    uploaded = st.file_uploader(
        f"Dermatoscopic image ({SUPPORTED_DESCRIPTION}, up to {MAX_FILE_BYTES / 1e6:.0f} MB)",
        type=UPLOAD_TYPES, key="upload", on_change=clear_sample,
    )
    folder = config.samples_dir()
    samples = list_samples(str(folder))
    references = served_sample_references() if samples else {}
    choice = NO_SAMPLE
    if samples:
        def describe(name: str) -> str:
            reference = references.get(Path(name).stem)
            return name if reference is None or name == NO_SAMPLE else f"{name} ({reference.label})"

        choice = st.selectbox("…or try a sample image from HAM10000 (reference diagnosis, split)",
                              [NO_SAMPLE, *samples], key="sample", format_func=describe,
                              help="HAM10000 images with their reference diagnosis and the split of this model "
                                   "they belong to: a training image was learnt from.")
    if uploaded is not None:
        if choice != NO_SAMPLE:
            st.info(f"Classifying the uploaded file, not the sample {choice}: remove the upload (× next to "
                    "its name) to classify the sample.", icon=ICONS["info"])
        return Selected(uploaded.name, uploaded.getvalue(), "upload")
    if choice != NO_SAMPLE:
        return Selected(choice, (folder / choice).read_bytes(), "sample", references.get(Path(choice).stem))
    return None


def unsure_ui(prediction: Prediction) -> None:
    st.subheader("Unsure - refer for assessment")
    st.warning(
        f"**The model is unsure.** Its top category has a probability of only "
        f"{format_probability(prediction.top_probability)} (below the {format_probability(prediction.unsure_threshold)} "
        "threshold set for this model). Do not rely on this result: the lesion should be assessed by a clinician.",
        icon=ICONS["warning"],
    )


def referral_ui(prediction: Prediction) -> None:
    """The malignant roll-up against the model's referral threshold (nothing when the model has none)."""
    sentence = prediction.referral_sentence
    if sentence is None:
        return
    why = (f"The referral threshold was chosen on validation images so that at least "
           f"{REFERRAL_TARGET_SENSITIVITY:.0%} of malignant lesions reach it; see the Evaluation report.")
    text = sentence[0].upper() + sentence[1:] + "."
    if prediction.refer:
        st.error(f"**Refer.** {text} {why}", icon=ICONS["refer"])
    else:
        st.info(f"{text} Below the threshold does not rule out a malignant lesion. {why}", icon=ICONS["info"])


def prediction_ui(analysis: Analysis, reference: SampleReference | None, unreliable: bool) -> None:
    p = analysis.prediction
    top = by_code(p.top_code)
    if unreliable:
        st.error("**Unreliable result.** This image does not look like a dermatoscopic image; the output below "
                 "is shown on request only and must not be relied on.", icon=ICONS["stop"])
    if p.unsure:
        unsure_ui(p)
        st.markdown(f"Model's top category (low confidence): **{top.name}** (`{top.code}`), "
                    f"{format_probability(p.top_probability)}" + (" · malignant category" if top.malignant else ""))
    else:
        st.subheader("Model's top category")
        st.markdown(f"### {top.name} (`{top.code}`)" + ("  \n:red[**malignant category**]" if top.malignant else ""))
        st.markdown(f"Calibrated probability: **{format_probability(p.top_probability)}**")
    malignant, benign = st.columns(2)
    malignant.metric(f"Malignant ({MALIGNANT_LABEL})", format_probability(p.malignant_probability))
    benign.metric(f"Benign ({BENIGN_LABEL})", format_probability(1.0 - p.malignant_probability))
    referral_ui(p)
    st.markdown("**Differential (top 3)**")
    st.markdown("\n".join(
        f"{i}. {by_code(code).name} (`{code}`) — {format_probability(prob)}"
        + (" · malignant" if by_code(code).malignant else "")
        for i, (code, prob) in enumerate(p.top_k(3), start=1)
    ))
    if reference is not None:
        st.caption(reference.sentence())


def how_to_read_ui() -> None:
    with st.expander("How to read this", icon=ICONS["help"]):
        st.markdown(
            "- **Calibrated probability.** The percentages are temperature-calibrated on validation images: among "
            "dermoscopic images like the training data given 70% for a category, about 70% belong to it. They "
            "describe this model on images like its training data, not your patient's risk, and they are not a diagnosis.\n"
            "- **Unsure.** Below the model's unsure threshold the top category is too uncertain to lean on: refer.\n"
            "- **Malignant roll-up and referral cue.** The malignant probability is the sum of melanoma, basal cell "
            "carcinoma and actinic keratosis / Bowen's. At or above the referral threshold the app says *refer*, "
            "even when a benign category is on top.\n"
            "- **Grad-CAM** colours the regions that most raised the score of the chosen category. It is not a "
            "lesion outline or a measure of extent, it is coarse (a 7 × 7 grid upscaled), and it can point at "
            "hair, rulers, ink marks, bubbles or dark vignette corners: a heatmap on an artefact is a reason for "
            "doubt, not a finding.")


def ood_ui(service: ClassifierService, analysis: Analysis) -> bool:
    """Warn before any result when the image does not look dermatoscopic; True if the result may be shown."""
    if not service.ood_enabled:
        ood_off_warning(service)
        return True
    if not analysis.verdict.result_withheld:
        st.caption("Dermatoscopic-image check: passed (the image resembles the model's training images).")
        return True
    shown = bool(st.session_state.get("ood_show"))
    outcome = ("You asked to see it anyway: it is shown below, marked unreliable." if shown
               else "so no result is shown.")
    st.warning(
        "**This does not look like a dermatoscopic image.** The model was trained only on dermatoscopic "
        "photos of single skin lesions. For everyday photos, screenshots, documents, clinical photos taken "
        "without a dermatoscope, or blank images its output is meaningless"
        + (", " if not shown else ". ") + outcome +
        f" (Out-of-distribution score {analysis.ood.distance:.2f}, threshold {analysis.ood.threshold:.2f}.)",
        icon=ICONS["stop"],
    )
    return st.checkbox("Show the model's output anyway (not reliable for this image)", key="ood_show")


def probabilities_ui(analysis: Analysis) -> None:
    p = analysis.prediction
    # Full labels on wide screens, codes on phones: the page's CSS (pages.PAGE_CSS) shows one of the two.
    for layout, short in (("wide", False), ("narrow", True)):
        with st.container(key=f"chart_{layout}"):
            st.plotly_chart(probability_bar_chart(p.probabilities, p.unsure_threshold, short_labels=short),
                            key=f"probabilities_chart_{layout}")
    st.caption("Red hatched bars (marked * on narrow screens) are malignant categories.")
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
                               format_func=lambda c: f"{by_code(c).name.split(' (')[0]} ({c}, "
                                                     f"{format_probability(probs[c])})")
    alpha = alpha_col.slider("Heatmap opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key="cam_alpha")
    explanation = explain_cached(service, analysis, code, method)  # milliseconds: no spinner
    # The model's view and the overlay side by side, also on a phone (pages.PAGE_CSS keeps this row paired).
    with st.container(key="cam_panels"):
        original, blended, heat = st.columns(3)
    shown = dict(width="stretch", output_format=IMAGE_FORMAT)
    original.image(explanation.view, caption="What the model saw (centre square)",
                   alt=f"The centre square of {analysis.name} that the model classified", **shown)
    blended.image(explanation.overlay(alpha), caption=f"Overlay (opacity {alpha:.2f})",
                  alt=f"{METHODS[method]} heatmap for {code} blended over the model's view", **shown)
    heat.image(explanation.heatmap_rgb, caption=f"{METHODS[method]} heatmap for {code}",
               alt=f"{METHODS[method]} heatmap for {code}: red where the score of {code} rose most", **shown)
    st.plotly_chart(attention_legend(legend_bar()), key="attention_legend", config={"staticPlot": True})
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
            created=datetime.now(timezone.utc), ood_note=analysis.verdict.ood_note, tta=analysis.tta)
        cached = (key, report, render_pdf(report), render_png(report))
        st.session_state["case_report"] = cached
    return cached[1], cached[2], cached[3]


def case_report_ui(service: ClassifierService, analysis: Analysis, explanation: Explanation, alpha: float) -> None:
    """PDF and PNG downloads of a one-page case report of what is shown, generated in memory once asked for
    (rendering both costs more server time than the prediction and heatmap together), then kept up to date
    for this image; a new image starts with the switch off (``analyse_cached``)."""
    st.subheader("Case report")
    if st.toggle("Make a case report of this result (PDF and PNG)", key="report_wanted"):
        report, pdf, png = case_report_files(service, analysis, explanation, alpha)
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
        st.info("Upload an image to start.", icon=ICONS["info"])
        return
    name = selected.name
    try:
        analysis = analyse_cached(service, name, selected.data, tta)
    except InvalidImageError as exc:
        st.session_state.pop("analysis", None)
        st.error(f"**{escape_markdown(name)}** cannot be used: {escape_markdown(exc.reason)}", icon=ICONS["error"])
        return
    except Exception:
        log.exception("Analysis of %s failed", name)
        st.error(f"**{escape_markdown(name)}** could not be analysed because of an internal error. "
                 "Please try another image.", icon=ICONS["error"])
        return

    st.caption(f"Classifying the {'uploaded file' if selected.source == 'upload' else 'HAM10000 sample'} "
               f"**{name}**.")
    show_result = ood_ui(service, analysis)
    image_col, result_col = st.columns([2, 3])
    with image_col:
        width, height = analysis.original_size
        st.image(outline_centre_square(analysis.image), width="stretch", output_format=IMAGE_FORMAT,
                 caption=f"{escape_markdown(name)} ({width}×{height} px, as uploaded); the yellow box is the centre "
                         "square the model classifies",
                 alt=f"The image {name} with the centre square the model classifies outlined in yellow")
    if not show_result:
        return
    with result_col:
        prediction_ui(analysis, selected.reference, unreliable=analysis.verdict.result_withheld)
        how_to_read_ui()
    probabilities_ui(analysis)
    try:
        explanation, alpha = explanation_ui(service, analysis)
    except ModelIntegrityError as exc:
        st.error(f"**Grad-CAM is unavailable:** {exc}. The prediction above is unaffected.", icon=ICONS["error"])
        return
    except Exception:
        log.exception("Grad-CAM failed for %s", name)
        st.error("The heatmap could not be computed for this image; the prediction above is unaffected.",
                 icon=ICONS["error"])
        return
    case_report_ui(service, analysis, explanation, alpha)


classify_page()
