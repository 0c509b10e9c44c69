"""One-page case report of a classification, as PDF (fpdf2) and PNG (Pillow) bytes built in memory.

The report shows what the model saw, the Grad-CAM overlay, the calibrated probabilities, the malignant
roll-up with its referral cue, the unsure and out-of-distribution flags, the model version, the date and the disclaimer.
Nothing is written to disk.

Text is set in DejaVu Sans (a Unicode TrueType font shipped with matplotlib, or the system's copy), so file
names in Greek, Cyrillic, accented Latin and so on print as given; a character the font lacks (e.g. CJK)
prints as "?". A file name too long for one line is shortened in the middle ("start...end.jpg") so that
the date and the model version always stay on the page. Without any DejaVu file it falls back to the core
Helvetica font (Latin-1 only).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from skin_model.serving.inference import Prediction, format_probability
from skin_model.labels import MALIGNANT_CODES, by_code

DISCLAIMER = ("Demo for education and research only. Not a medical device. It must not be used to diagnose, "
              "treat or rule out any condition; every lesion of concern needs assessment by a clinician.")
TITLE = "Skin lesion classifier (demo) - case report"
PNG_SIZE = (1240, 900)
PNG_IMAGE_SIDE = 400
PNG_MARGIN = 30
PDF_MARGIN_MM = 15
PDF_TEXT_WIDTH_MM = 210 - 2 * PDF_MARGIN_MM
ELLIPSIS = "..."
#: DejaVu Sans files by style: "" regular, "B" bold, "I" oblique.
FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf", "I": "DejaVuSans-Oblique.ttf"}
SYSTEM_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


@dataclass(frozen=True)
class CaseReport:
    """Everything one report shows; ``view`` and ``overlay`` are uint8 RGB arrays (the model's square)."""

    file_name: str
    view: np.ndarray
    overlay: np.ndarray
    explained_class: str
    method_name: str
    prediction: Prediction
    model_version: str
    created: datetime
    ood_note: str  # e.g. "passed", "FLAGGED: ...", "off (no gate fitted)"
    tta: bool = False
    disclaimer: str = DISCLAIMER

    @property
    def date_text(self) -> str:
        return self.created.strftime("%Y-%m-%d %H:%M %Z").strip()

    def summary_lines(self) -> list[str]:
        """The prediction in plain sentences, shared by both formats."""
        p = self.prediction
        top = by_code(p.top_code)
        lines = []
        if p.unsure:
            lines.append(f"UNSURE - refer for assessment: top probability {format_probability(p.top_probability)} "
                         f"is below the model's {format_probability(p.unsure_threshold)} threshold.")
        lines += [f"Model's top category: {top.name} ({top.code}) - {format_probability(p.top_probability)}"
                  + (" - malignant category" if top.malignant else ""),
                  f"Malignant ({' + '.join(MALIGNANT_CODES)}): {format_probability(p.malignant_probability)}; "
                  f"benign: {format_probability(1.0 - p.malignant_probability)}"]
        if p.referral_sentence:
            lines.append(f"Referral cue: {p.referral_sentence}.")
        lines.append(f"Dermatoscopic-image check: {self.ood_note}")
        lines.append("Test-time augmentation: " + ("on (8 flips/rotations averaged)" if self.tta else "off"))
        lines.append(f"Heatmap: {self.method_name} for {self.explained_class}")
        return lines

    def header_lines(self, measure: Callable[[str], float], width: float) -> list[str]:
        """Two header lines, each fitting ``width`` as ``measure`` sizes text: the file name (shortened
        in the middle when too long), then the date and the model version."""
        return [fit_width(f"File: {self.file_name}", measure, width),
                fit_width(f"Date: {self.date_text}   |   Model version: {self.model_version}", measure, width)]


def short_name(code: str) -> str:
    return by_code(code).name.split(" (")[0]


def fit_width(text: str, measure: Callable[[str], float], width: float) -> str:
    """``text`` if it fits ``width``, else its start and end around "..." (the end keeps the file
    extension), as long as fits."""
    if measure(text) <= width:
        return text
    low, high = 0, len(text)  # characters kept: the largest count that fits
    while low < high:
        keep = (low + high + 1) // 2
        if measure(_middle_cut(text, keep)) <= width:
            low = keep
        else:
            high = keep - 1
    return _middle_cut(text, low)


def _middle_cut(text: str, keep: int) -> str:
    head = (keep + 1) // 2
    return text[:head] + ELLIPSIS + (text[len(text) - (keep - head):] if keep - head else "")


@functools.lru_cache(maxsize=None)
def font_file(style: str = "") -> Path | None:
    """The DejaVu Sans file of ``style`` ("", "B", "I"): matplotlib's copy (found without importing
    matplotlib), else the system's, else None."""
    spec = importlib.util.find_spec("matplotlib")
    folders = [Path(p) / "mpl-data" / "fonts" / "ttf" for p in (spec.submodule_search_locations or [])] if spec else []
    for folder in [*folders, SYSTEM_FONT_DIR]:
        if (folder / FONT_FILES[style]).is_file():
            return folder / FONT_FILES[style]
    return None


@functools.lru_cache(maxsize=None)
def _covered(path: Path | None) -> frozenset[int]:
    """Code points the font has glyphs for (Latin-1 without a font file)."""
    if path is None:
        return frozenset(range(256))
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True) as font:
        return frozenset(font.getBestCmap())


def _latin1_text(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` with every character the report's font cannot draw replaced by '?'."""
    covered = _covered(font_file(""))
    return "".join(c if ord(c) in covered or c in "\n" else "?" for c in text)


# ---------------------------------------------------------------------------------------------- PDF
def render_pdf(report: CaseReport) -> bytes:
    """An A4 one-page PDF."""
    from fpdf import FPDF

    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_margins(PDF_MARGIN_MM, PDF_MARGIN_MM, PDF_MARGIN_MM)
    pdf.set_creation_date(report.created)  # the same report gives the same bytes
    family = _pdf_fonts(pdf, [report.file_name, report.model_version, report.ood_note, report.method_name])
    pdf.add_page()
    pdf.set_title(TITLE)
    pdf.set_font(family, "B", 15)
    pdf.cell(0, 9, TITLE, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 9.5)
    for line in report.header_lines(lambda t: pdf.get_string_width(printable(t)), PDF_TEXT_WIDTH_MM):
        pdf.cell(0, 5, printable(line), new_x="LMARGIN", new_y="NEXT")
    top = pdf.get_y() + 3
    side = 82
    pdf.image(Image.fromarray(report.view), x=15, y=top, w=side, h=side)
    pdf.image(Image.fromarray(report.overlay), x=15 + side + 6, y=top, w=side, h=side)
    pdf.set_xy(15, top + side + 1)
    pdf.set_font(family, "I", 8.5)
    pdf.cell(side + 6, 5, "What the model saw (centre square)")
    pdf.cell(side, 5, printable(f"{report.method_name} overlay for {report.explained_class} (red = high attention)"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font(family, "", 10.5)
    for line in report.summary_lines():
        pdf.multi_cell(0, 5.5, printable(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    _pdf_probability_table(pdf, report.prediction, family)
    pdf.set_xy(15, 297 - 15 - 20)
    pdf.set_font(family, "B", 9)
    pdf.set_fill_color(255, 243, 205)
    pdf.multi_cell(0, 5, printable(report.disclaimer), border=1, fill=True, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _pdf_fonts(pdf, texts: list[str]) -> str:
    """The font family for a report with these variable ``texts``: the core Helvetica when they are all
    Latin-1 (fast: nothing to embed), else DejaVu Sans (regular, bold, oblique), registered with ``pdf``
    (embedding it costs ~0.3 s), or Helvetica with '?' for other characters when no DejaVu file exists."""
    files = {style: font_file(style) for style in FONT_FILES}
    if all(_latin1_text(t) for t in texts) or any(path is None for path in files.values()):
        return "Helvetica"
    for style, path in files.items():
        pdf.add_font("DejaVu", style, str(path))
    return "DejaVu"


def _pdf_probability_table(pdf, prediction: Prediction, family: str) -> None:
    pdf.set_font(family, "B", 10)
    widths = (16, 92, 22, 50)
    for text, width in zip(("Code", "Diagnosis", "Malignant", "Calibrated probability"), widths):
        pdf.cell(width, 6.5, text, border="B")
    pdf.ln()
    pdf.set_font(family, "", 10)
    for code, prob in prediction.ranked:
        lesion = by_code(code)
        pdf.cell(widths[0], 6.5, code)
        pdf.cell(widths[1], 6.5, printable(short_name(code)))
        pdf.cell(widths[2], 6.5, "yes" if lesion.malignant else "no")
        x, y = pdf.get_x(), pdf.get_y()
        pdf.set_fill_color(200, 40, 40) if lesion.malignant else pdf.set_fill_color(40, 100, 200)
        pdf.rect(x, y + 1.5, max(0.2, 30 * prob), 3.5, style="F")
        pdf.set_x(x + 32)
        pdf.cell(widths[3] - 32, 6.5, format_probability(prob), new_x="LMARGIN", new_y="NEXT")


# ---------------------------------------------------------------------------------------------- PNG
@functools.lru_cache(maxsize=32)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (``font_file``) at ``size``, else Pillow's built-in font."""
    path = font_file("B" if bold else "")
    return ImageFont.truetype(str(path), size) if path is not None else ImageFont.load_default(size)


def render_png(report: CaseReport) -> bytes:
    """A PNG page (``PNG_SIZE``) with the same content as the PDF."""
    page = Image.new("RGB", PNG_SIZE, "white")
    draw = ImageDraw.Draw(page)
    margin = PNG_MARGIN
    draw.text((margin, 20), TITLE, fill="black", font=_font(30, bold=True))
    header = _font(18)
    for i, line in enumerate(report.header_lines(lambda t: header.getlength(printable(t)), PNG_SIZE[0] - 2 * margin)):
        draw.text((margin, 60 + 24 * i), printable(line), fill=(60, 60, 60), font=header)
    top, side = 116, PNG_IMAGE_SIDE
    for i, array in enumerate((report.view, report.overlay)):
        page.paste(Image.fromarray(array).resize((side, side), Image.Resampling.BICUBIC), (margin + i * (side + 20), top))
    small = _font(16)
    draw.text((margin, top + side + 6), "What the model saw (centre square)", fill=(80, 80, 80), font=small)
    caption = printable(f"{report.method_name} overlay for {report.explained_class}")
    draw.text((margin + side + 20, top + side + 6), caption, fill=(80, 80, 80), font=small)
    _png_probabilities(draw, report.prediction, x=margin + 2 * (side + 20) + 10, y=top)
    y = top + side + 44
    body = _font(20)
    for line in report.summary_lines():
        for wrapped in textwrap.wrap(printable(line), 100):
            draw.text((margin, y), wrapped, fill="black", font=body)
            y += 28
    box_top = PNG_SIZE[1] - 110
    draw.rectangle((margin, box_top, PNG_SIZE[0] - margin, PNG_SIZE[1] - margin), fill=(255, 243, 205),
                   outline=(180, 140, 40))
    for i, wrapped in enumerate(textwrap.wrap(report.disclaimer, 105)):
        draw.text((margin + 12, box_top + 12 + 26 * i), wrapped, fill="black", font=_font(18, bold=True))
    buffer = io.BytesIO()
    page.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _png_probabilities(draw: ImageDraw.ImageDraw, prediction: Prediction, x: int, y: int) -> None:
    draw.text((x, y), "Calibrated probabilities", fill="black", font=_font(20, bold=True))
    font = _font(17)
    bar_width = PNG_SIZE[0] - x - 110
    for i, (code, prob) in enumerate(prediction.ranked):
        row = y + 40 + i * 52
        lesion = by_code(code)
        draw.text((x, row), textwrap.shorten(f"{code}  {short_name(code)}", 34, placeholder="..."), fill="black",
                  font=font)
        colour = (200, 40, 40) if lesion.malignant else (40, 100, 200)
        draw.rectangle((x, row + 24, x + max(1, int(bar_width * prob)), row + 40), fill=colour)
        draw.text((x + bar_width + 8, row + 22), format_probability(prob), fill="black", font=font)


def file_stem(report: CaseReport) -> str:
    """A download name: case-report_<file stem>_<date>."""
    stem = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_"
                   for c in report.file_name.rsplit(".", 1)[0])[:60]
    return f"case-report_{stem}_{report.created.strftime('%Y%m%d-%H%M')}"

