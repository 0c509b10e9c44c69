"""The app's pages (run by ``st.navigation`` in app.py); this module holds what several pages share."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from skin_model import config
from skin_model.bundle import ModelIntegrityError
from skin_model.config import display_path
from skin_model.safe_text import escape_markdown
from skin_model.serving.service import ClassifierService

if TYPE_CHECKING:  # imported where used (other_clinics_ui), as below
    from skin_model.evaluation.holdout import ServedRecipe

log = logging.getLogger(__name__)

#: Material icons (from Streamlit's own bundled font: they render without an emoji font or a network).
ICONS = {"warning": ":material/warning:", "stop": ":material/block:", "error": ":material/error:",
         "info": ":material/info:", "refer": ":material/assignment_late:", "help": ":material/help:",
         "ok": ":material/check_circle:", "balance": ":material/balance:"}

#: Layout rules for narrow (phone) screens, where Streamlit stacks columns below 640 px.
PAGE_CSS = """
<style>
@media (max-width: 640px) { .st-key-chart_wide { display: none; } }
@media (min-width: 641px) { .st-key-chart_narrow { display: none; } }
@media (max-width: 640px) {
  .st-key-cam_panels [data-testid="stHorizontalBlock"] { flex-wrap: wrap; flex-direction: row; gap: 0.5rem; }
  .st-key-cam_panels [data-testid="stColumn"] { flex: 0 0 calc(50% - 0.25rem) !important;
                                                width: calc(50% - 0.25rem) !important;
                                                min-width: calc(50% - 0.25rem) !important; }
}
</style>
"""


def page_css() -> None:
    """Apply ``PAGE_CSS`` (once per script run, from app.py)."""
    st.html(PAGE_CSS)


def ensure_app_shell() -> None:
    """Run the page through app.py (navigation, model version, disclaimer), never on its own.

    Until app.py has called ``st.navigation`` once in a server process, Streamlit treats ``pages/`` as a
    legacy multipage folder: a deep link such as ``/report`` opened first on a fresh server runs the page
    file directly, without the sidebar disclaimer. This switches that mode off and reruns through app.py.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


@st.cache_resource(show_spinner="Loading the model (once per server)…")
def load_service(weights: str) -> ClassifierService:
    """The served model, its head for Grad-CAM and its OOD gate, loaded and warmed up once per server process
    and shared by every session and page (Classify and Batch)."""
    service = ClassifierService.from_dir(Path(weights))
    service.warm_up()
    return service


def served_service_or_error() -> ClassifierService | None:
    """The shared service for the served weights, or None after showing why the model cannot be loaded."""
    weights = config.served_weights_dir()
    try:
        return load_service(str(weights))
    except ModelIntegrityError as exc:
        st.error(f"**The model cannot be loaded.** {exc}\n\nThe model bundle must be in `{display_path(weights)}` "
                 "(set `SKIN_WEIGHTS_DIR` to use another folder). Classification is unavailable until it is "
                 "restored.", icon=ICONS["error"])
    except Exception as exc:  # a damaged model file, wrong format, ...
        log.exception("Model loading failed")
        st.error(f"**The model cannot be loaded** from `{display_path(weights)}`: {type(exc).__name__}: {exc}",
                 icon=ICONS["error"])
    return None


def other_clinics_ui(weights: Path, key: str, served_recipe: ServedRecipe | None) -> None:
    """The "Other clinics" section: held-out-source figures of every recipe with a report in the bundle's
    evaluations folder (the rows of the served model's recipe and data, ``served_recipe``, marked, and the
    baseline beside it), and what the protocol can and cannot tell."""
    # Imported here: the evaluation code loads scikit-learn, which the Classify and Batch pages do not need.
    from skin_model.evaluation.holdout import PROTOCOL_NOTE, YARDSTICK_SOURCES, held_out_rows, rows_frame
    from skin_model.report.evaluation_files import list_evaluation_files

    st.header("Other clinics (held-out sources)")
    rows, problems = held_out_rows([f.path for f in list_evaluation_files(weights) if f.origin != "training run"])
    for problem in problems:
        st.error(f"**A held-out-source report cannot be read.** {escape_markdown(problem)}", icon=ICONS["error"])
    if rows:
        number = st.column_config.NumberColumn(format="%.3f")
        columns = {c: number for c in ("balanced acc.", "melanoma AUC", "melanoma sens.", "macro AUC", "ECE",
                                       "referral sens.", "referral spec.")}
        columns["served"] = st.column_config.CheckboxColumn(
            help="a held-out run of the recipe and data the served model was trained with")
        st.dataframe(rows_frame(rows, served_recipe), hide_index=True, key=f"{key}_other_clinics",
                     column_config=columns)
        if served_recipe is None:
            st.caption("The served model's metadata does not record its recipe (`training.recipe`, written by "
                       "train.py since 2026-12-03), so no row is marked as the served recipe.")
    else:
        st.info("No held-out-source report in this bundle yet. Measure a recipe with "
                f"`python train.py --holdout-source {YARDSTICK_SOURCES[0]}` (and "
                f"{', '.join(f'`{s}`' for s in YARDSTICK_SOURCES[1:])}) and put "
                "the `evaluations/heldout_*.json` it writes in this bundle's `evaluations/` folder.")
    st.markdown(PROTOCOL_NOTE)


def ood_off_warning(service: ClassifierService) -> None:
    """The one visible state of a gate that is off (not fitted, damaged, stale), with the reason."""
    st.warning(f"**The dermatoscopic-image check is off:** {service.ood_status}. Results are shown without "
               "it: only use dermatoscopic photos of single skin lesions.", icon=ICONS["warning"])
