"""File names are data: escaped for Markdown, neutralised for spreadsheets."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import markdown_html, markdown_text
from skin_model.safe_text import escape_markdown, spreadsheet_safe, spreadsheet_safe_frame

HOSTILE_NAMES = [
    "![px](http://host/pixel.png) [site](http://host/).jpg",
    "<img src=x onerror=alert(1)>.png",
    "**bold** _it_ `code` ~~gone~~ $x^2$ :red[red] # head.jpg",
    "1. list\n- item\n> quote.jpg",
    "back\\slash [a]: http://host/ref.jpg",
    "lesion\u202egpj.exe",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_escaped_names_render_as_their_own_text(name):
    html = markdown_html(f"**{escape_markdown(name)}** cannot be used")
    for tag in ("<a ", "<img", "<em>", "<code>", "<del>", "<h1>", "<ol>", "<ul>", "<blockquote>", "<script"):
        assert tag not in html.replace("<strong>", ""), html
    shown = markdown_text(f"**{escape_markdown(name)}** cannot be used").strip()
    expected = "".join(" " if c in "\n\u202e" else c for c in name)
    assert shown == f"{expected} cannot be used"


def test_unescaped_names_would_have_been_markup():
    """The test above can fail: the same names without escaping render links and images."""
    assert "<img" in markdown_html(HOSTILE_NAMES[0]) and "<a " in markdown_html(HOSTILE_NAMES[0])


@pytest.mark.parametrize("cell, expected", [
    ("=HYPERLINK(\"http://host\",\"x\")", "'=HYPERLINK(\"http://host\",\"x\")"),
    ("+1+1.jpg", "'+1+1.jpg"), ("-2.jpg", "'-2.jpg"), ("@SUM(A1).png", "'@SUM(A1).png"),
    ("\tx.jpg", "'\tx.jpg"), ("lesion=1.jpg", "lesion=1.jpg"), (-0.5, -0.5), (None, None),
])
def test_spreadsheet_safe(cell, expected):
    assert spreadsheet_safe(cell) == expected


def test_frame_keeps_numbers_and_neutralises_text():
    frame = pd.DataFrame({"File": ["=cmd.jpg", "ok.jpg"], "Probability": [-1.0, 0.5], "#": [1, 2]})
    safe = spreadsheet_safe_frame(frame)
    assert safe["File"].tolist() == ["'=cmd.jpg", "ok.jpg"]
    assert safe["Probability"].tolist() == [-1.0, 0.5] and safe["#"].tolist() == [1, 2]
    assert frame["File"].iloc[0] == "=cmd.jpg", "the table shown on the page is not changed"
