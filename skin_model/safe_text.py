"""User-supplied text (file names, decoder messages) shown as data, never as markup or formulas.

``escape_markdown`` makes a string literal in Streamlit's Markdown (``st.error``, ``st.warning``, captions):
a file named ``![px](http://host/pixel.png).jpg`` must not make the browser fetch an image or render a
link. ``spreadsheet_safe`` stops a CSV cell from being run as a formula when the file is opened in a
spreadsheet (a cell starting with ``=``, ``+``, ``-`` or ``@``: "CSV injection").
"""

from __future__ import annotations

import string
import unicodedata

import pandas as pd

#: CommonMark lets any ASCII punctuation character be backslash-escaped, and renders it as itself.
MARKDOWN_PUNCTUATION = frozenset(string.punctuation)
#: First characters that make a spreadsheet treat a cell as a formula (tab and CR: OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_markdown(text: object) -> str:
    """``text`` as literal Markdown: ASCII punctuation backslash-escaped; line breaks, other control and
    format characters (e.g. right-to-left overrides) shown as spaces."""
    out = []
    for char in str(text):
        if char in MARKDOWN_PUNCTUATION:
            out.append("\\" + char)
        elif unicodedata.category(char).startswith("C"):
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def spreadsheet_safe(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula, prefixed with an apostrophe (shown as text);
    anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def spreadsheet_safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells (and column names) are ``spreadsheet_safe``."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object:
            safe[column] = safe[column].map(spreadsheet_safe)
    safe.columns = [spreadsheet_safe(str(c)) for c in safe.columns]
    return safe
