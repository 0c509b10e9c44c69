"""Batch: classify several dermatoscopic photos at once; one row per file, sortable and downloadable as CSV."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import pandas as pd
from PIL import Image
import streamlit as st

from skin_model.serving.explain import METHODS
from skin_model.data.imaging import FILE_SUFFIXES, MAX_FILE_BYTES, SUPPORTED_DESCRIPTION, InvalidImageError
from skin_model.serving.inference import format_probability
from skin_model.labels import MALIGNANT_SHORT, by_code
from skin_model.bundle import ModelMetadata
from skin_model.safe_text import escape_markdown, spreadsheet_safe_frame
from skin_model.serving.service import Analysis, ClassifierService, thumbnail_data_uri
from pages import ICONS, ensure_app_shell, ood_off_warning, served_service_or_error

ensure_app_shell()

log = logging.getLogger(__name__)

UPLOAD_TYPES = [suffix.lstrip(".") for suffix in FILE_SUFFIXES]
#: Most files analysed per batch (each keeps its decoded image in the session's memory).
MAX_FILES = 50
CSV_NAME = "skin_lesion_batch.csv"
OVERLAY_ALPHA = 0.4
MALIGNANT_COLUMN = f"Malignant ({MALIGNANT_SHORT})"


@dataclass(frozen=True)
class BatchItem:
    """One uploaded file: its analysis, or the reason it could not be used."""

    number: int
    name: str
    analysis: Analysis | None
    error: str | None

    @property
    def label(self) -> str:
        return f"{self.number}. {self.name}"


def analyse_one(service: ClassifierService, number: int, name: str, data: bytes, tta: bool,
                cache: dict) -> BatchItem:
    """Analyse one file, reusing this session's earlier result for the same bytes (memory only)."""
    key = (name, hashlib.sha256(data).hexdigest(), tta)
    if key not in cache:
        try:
            cache[key] = (service.analyse(data, name=name, tta=tta).without_image(), None)  # not shown here
        except InvalidImageError as exc:
            cache[key] = (None, exc.reason)
        except Exception as exc:  # one bad file must not stop the batch
            log.exception("Analysis of %s failed", name)
            cache[key] = (None, f"internal error ({type(exc).__name__})")
    analysis, error = cache[key]
    return BatchItem(number, name, analysis, error)


def analyse_all(service: ClassifierService, uploads: list, tta: bool) -> list[BatchItem]:
    previous: dict = st.session_state.get("batch_cache", {})
    current: dict = {}
    items = []
    progress = st.progress(0.0, text="Analysing…")
    for number, upload in enumerate(uploads, start=1):
        data = upload.getvalue()
        key = (upload.name, hashlib.sha256(data).hexdigest(), tta)
        if key in previous:
            current[key] = previous[key]
        items.append(analyse_one(service, number, upload.name, data, tta, current))
        progress.progress(number / len(uploads), text=f"Analysed {number} of {len(uploads)}")
    progress.empty()
    st.session_state["batch_cache"] = current  # only this batch stays in memory
    return items


def note(item: BatchItem, show_withheld: bool = False) -> str:
    """The verdict's note; for a withheld result, whether it is hidden or shown on request."""
    if item.analysis is None:
        return "cannot be used"
    verdict = item.analysis.verdict
    if verdict.result_withheld:
        return f"{verdict.note} ({'shown on request' if show_withheld else 'result withheld'})"
    return verdict.note


#: Column order: what matters for each file first, descriptive columns after.
COLUMNS = ("#", "Image", "File", "Top class", "Probability", MALIGNANT_COLUMN, "Refer", "Not dermatoscopic",
           "Unsure", "Note", "Top category", "Status")
#: Columns of the downloaded CSV (no thumbnails; the model and the TTA setting that produced the rows).
CSV_COLUMNS = ("Model version", "TTA", *(c for c in COLUMNS if c != "Image"))


def results_table(items: list[BatchItem], ood_enabled: bool, show_withheld: bool = False) -> pd.DataFrame:
    """One row per file (bad files included, with their error and blank result cells). A withheld result
    (not a dermatoscopic image) has blank result cells too unless ``show_withheld``."""
    rows = []
    for item in items:
        a = item.analysis
        shown = a is not None and (show_withheld or not a.verdict.result_withheld)
        p = a.prediction if shown else None
        rows.append({
            "#": item.number,
            "Image": thumbnail_data_uri(Image.fromarray(a.view)) if a is not None else None,  # what the model saw
            "File": item.name,
            "Top class": p.top_code if p else "",
            "Probability": p.top_probability if p else None,
            MALIGNANT_COLUMN: p.malignant_probability if p else None,
            "Refer": p.refer if p else None,
            "Not dermatoscopic": (a.verdict.not_dermoscopic if ood_enabled else None) if a is not None else None,
            "Unsure": p.unsure if p else None,
            "Note": note(item, show_withheld),
            "Top category": by_code(p.top_code).name.split(" (")[0] if p else "",
            "Status": "ok" if a is not None else f"error: {item.error}",
        })
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table[["Probability", MALIGNANT_COLUMN]] = table[["Probability", MALIGNANT_COLUMN]].astype("Float64")
    table[["Refer", "Not dermatoscopic", "Unsure"]] = table[["Refer", "Not dermatoscopic", "Unsure"]].astype("boolean")
    table["Image"] = table["Image"].astype("string")  # missing values are nulls (blank cells), not "None"
    return table


def csv_bytes(table: pd.DataFrame, model_version: str, tta: bool) -> bytes:
    """The table as CSV with the model version and the TTA setting on every row; blank cells stay blank, and
    names are data, not formulas (``spreadsheet_safe_frame``)."""
    rows = table.assign(**{"Model version": model_version, "TTA": "on" if tta else "off"})
    return spreadsheet_safe_frame(rows[list(CSV_COLUMNS)]).to_csv(index=False).encode("utf-8")


def table_ui(table: pd.DataFrame, metadata: ModelMetadata, tta: bool) -> None:
    percent = st.column_config.NumberColumn(format="percent")
    threshold = metadata.referral_threshold
    refer_help = ("Malignant roll-up at or above the model's referral threshold "
                  f"({format_probability(threshold)}, chosen on validation for high malignant sensitivity)"
                  if threshold is not None else "This model has no referral threshold")
    st.dataframe(table, hide_index=True, key="batch_table", column_config={
        "Image": st.column_config.ImageColumn("Image", help="The uploaded image (thumbnail)", width="small"),
        "Probability": st.column_config.NumberColumn(format="percent", help="Calibrated probability of the top class"),
        MALIGNANT_COLUMN: percent,
        "Refer": st.column_config.CheckboxColumn(help=refer_help),
        "Not dermatoscopic": st.column_config.CheckboxColumn(help="Flagged by the out-of-distribution check"),
        "Unsure": st.column_config.CheckboxColumn(help="Top probability below the model's unsure threshold"),
        "Status": st.column_config.TextColumn(width="medium"),
    })
    st.download_button("Download the table (CSV)", csv_bytes(table, metadata.version, tta), file_name=CSV_NAME,
                       mime="text/csv", key="batch_csv", on_click="ignore", icon=":material/download:")
    st.caption("Click a column header to sort. Probabilities are calibrated; 'Malignant' is the sum of the "
               "melanoma, basal cell carcinoma and actinic keratosis / Bowen's probabilities. Rows of files that "
               "could not be used are blank. The CSV records the model version and the TTA setting.")


def gradcam_ui(service: ClassifierService, items: list[BatchItem]) -> None:
    usable = {item.label: item for item in items if item.analysis is not None}
    if not usable:
        return
    st.subheader("Where the model looked")
    choice = st.selectbox("Show the Grad-CAM overlay of", list(usable), key="batch_cam_file")
    analysis = usable[choice].analysis
    code = analysis.prediction.top_code
    if analysis.verdict.not_dermoscopic:
        st.warning("This image does not look like a dermatoscopic image; its heatmap is not meaningful.",
                   icon=ICONS["warning"])
    explanation = service.explain(analysis, code, "gradcam")
    view_col, overlay_col = st.columns(2)
    view_col.image(explanation.view, caption=f"{escape_markdown(analysis.name)}: what the model saw", width="stretch",
                   output_format="JPEG", alt=f"The centre square of {analysis.name} that the model classified")
    overlay_col.image(explanation.overlay(OVERLAY_ALPHA), width="stretch", output_format="JPEG",
                      caption=f"{METHODS['gradcam']} overlay for {code} "
                              f"({format_probability(analysis.prediction.top_probability)})",
                      alt=f"Grad-CAM heatmap for {code} blended over the model's view of {analysis.name}")
    st.caption("Blue = low attention, red = high attention. Use the Classify page for other classes, "
               "Grad-CAM++ and the case report.")


def batch_page() -> None:
    st.title("Classify several images")
    service = served_service_or_error()
    if service is None:
        return
    uploads = st.file_uploader(
        f"Dermatoscopic images ({SUPPORTED_DESCRIPTION}, up to {MAX_FILE_BYTES / 1e6:.0f} MB each, "
        f"at most {MAX_FILES} files)", type=UPLOAD_TYPES, accept_multiple_files=True, key="batch_upload")
    tta = st.toggle("Test-time augmentation (average 8 flips/rotations; ~8x slower)", key="batch_tta",
                    value=service.metadata.test_time_augmentation)
    if not service.ood_enabled:
        ood_off_warning(service)
    if not uploads:
        st.info("Upload one or more images to start.", icon=ICONS["info"])
        return
    if len(uploads) > MAX_FILES:
        st.warning(f"{len(uploads)} files were uploaded; only the first {MAX_FILES} are analysed.")
        uploads = uploads[:MAX_FILES]
    items = analyse_all(service, uploads, tta)
    failed = [item for item in items if item.analysis is None]
    if failed:
        st.error(f"**{len(failed)} of {len(items)} file(s) could not be used:**\n\n"
                 + "\n".join(f"- **{escape_markdown(item.name)}**: {escape_markdown(item.error)}" for item in failed),
                 icon=ICONS["error"])
    flagged = [item.name for item in items if item.analysis is not None and item.analysis.verdict.result_withheld]
    show_withheld = False
    if flagged:
        st.warning(f"**{len(flagged)} image(s) do not look like dermatoscopic images**, so their results are "
                   f"withheld: {', '.join(map(escape_markdown, flagged))}", icon=ICONS["stop"])
        show_withheld = st.checkbox("Show the withheld results anyway (not reliable for these images)",
                                    key="batch_show_withheld")
    table_ui(results_table(items, service.ood_enabled, show_withheld), service.metadata, tta)
    try:
        gradcam_ui(service, items)
    except Exception:
        log.exception("Grad-CAM failed in the batch page")
        st.error("The heatmap could not be computed for this image; the table above is unaffected.")


batch_page()
