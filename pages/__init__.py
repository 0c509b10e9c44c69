"""The app's pages (run by ``st.navigation`` in app.py); this module only holds their shared entry guard."""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def ensure_app_shell() -> None:
    """Run the page through app.py (navigation, model version, disclaimer), never on its own.

    Until app.py has called ``st.navigation`` once in a server process, Streamlit treats ``pages/`` as a
    legacy multipage folder: a deep link such as ``/report`` opened first on a fresh server runs the page
    file directly, without the sidebar disclaimer. This switches that mode off and reruns through app.py.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
