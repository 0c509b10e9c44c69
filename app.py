"""Dermoscopy decision-support demo: `streamlit run app.py`.

Navigation and the sidebar only; each page lives in ``pages/``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from PIL import Image, ImageDraw

from pages import ICONS, page_css
from skin_model import config

APP_TITLE = "Skin lesion classifier (demo)"
PAGES_DIR = Path(__file__).resolve().parent / "pages"
PAGES = (  # (file, title, icon, default)
    ("classify.py", "Classify", ":material/biotech:", True),
    ("batch.py", "Batch", ":material/table_view:", False),
    ("report.py", "Evaluation report", ":material/analytics:", False),
    ("model_card.py", "About / model card", ":material/info:", False),
)
DISCLAIMER = (
    "**Demo for education and research only. Not a medical device.** It must not be used to diagnose, "
    "treat or rule out any condition; every lesion of concern needs assessment by a clinician."
)


def model_version() -> str:
    """The served model's version from its metadata.json (without loading the model)."""
    from skin_model.bundle import ModelIntegrityError, read_metadata

    try:
        meta = read_metadata(config.served_weights_dir())
    except ModelIntegrityError:
        return "no model found"
    return f"{meta.version} ({meta.input_size} px, created {meta.created[:10]})"


def page_icon() -> Image.Image:
    """The browser-tab icon, drawn here: a Material icon as page icon would be fetched from an outside font
    host, and nothing this app shows may leave the machine."""
    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.ellipse((2, 2, 62, 62), fill=(46, 134, 193, 255))
    draw.ellipse((18, 20, 46, 44), fill=(120, 72, 40, 255))
    draw.ellipse((27, 28, 35, 35), fill=(70, 40, 20, 255))
    return icon


def sidebar_ui() -> None:
    with st.sidebar:
        st.markdown(f"**Model version:** {model_version()}")
        st.warning(DISCLAIMER, icon=ICONS["warning"])


def disclaimer_ui() -> None:
    """The disclaimer in the main column too: on a phone the sidebar (and its copy) is collapsed."""
    st.caption(f":material/warning: {DISCLAIMER}")


def main() -> None:
    st.set_page_config(page_title=APP_TITLE, page_icon=page_icon(), layout="wide")
    pages = [st.Page(str(PAGES_DIR / file), title=title, icon=icon, default=default)
             for file, title, icon, default in PAGES if (PAGES_DIR / file).is_file()]
    navigation = st.navigation(pages)
    page_css()
    sidebar_ui()
    disclaimer_ui()
    navigation.run()


main()
